"""The systems `quartz bench` measures, behind one interface (the peers' adapters in peers.py
follow it too): in-process hnswlib (the limit), one QuartzDB node, a QuartzDB cluster over gRPC
(the SDK) and the same cluster over its HTTP/JSON gateway.

Every system: start(workdir, dim, metric, m, ef_construction); ingest(ids, vectors, payloads,
batch); wait_searchable(n) -> seconds; set_ef(ef); search(queries, k, where) -> ids per query;
client_spec() / open_client(spec) for closed-loop clients in other processes; memory_bytes();
stop(). `where` is a QuartzDB filter ({"must": [{"key": ..., "match": ...}]})."""

from __future__ import annotations

import http.client
import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

COLLECTION = "bench"
SEARCHABLE_POLL_S = 0.05
CLIENT_TIMEOUT_S = 120.0


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes (VmRSS from /proc; 0 for a pid that is gone)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            continue
    return total


class System:
    name = "system"
    clients_are_processes = True  # False: closed-loop clients are threads of this process
    replicas = 1  # copies of every vector the system keeps (memory per vector per replica)
    notes = ""

    @classmethod
    def unavailable(cls) -> str | None:
        return None

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        raise NotImplementedError

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        raise NotImplementedError

    def wait_searchable(self, n: int, timeout_s: float = 600.0) -> float:
        return 0.0

    def set_ef(self, ef: int) -> None:
        self.ef = ef

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        raise NotImplementedError

    def client_spec(self) -> tuple:
        raise NotImplementedError

    @staticmethod
    def open_client(spec: tuple) -> tuple[Callable[[np.ndarray], list[str]], Callable[[], None]]:
        raise NotImplementedError

    def memory_bytes(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        pass


class Hnswlib(System):
    """hnswlib in this process: no network, no storage, no payloads. Filters use hnswlib's
    filter callback over a mask (a Python call per candidate, single-threaded)."""

    name = "hnswlib"
    clients_are_processes = False
    notes = "in-process; closed-loop clients are threads (knn_query releases the GIL)"
    threads = 2

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        import hnswlib

        self.dim, self.metric, self.m, self.efc = dim, metric, m, ef_construction
        self.index: hnswlib.Index | None = None
        self.ids: list[str] = []
        self.payloads: list[dict] = []
        self._masks: dict[str, np.ndarray] = {}
        self.ef = 64

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        import hnswlib

        if self.index is None:
            self.index = hnswlib.Index(space=self.metric, dim=self.dim)
            self.index.init_index(max_elements=len(ids), M=self.m, ef_construction=self.efc)
        elif self.index.get_current_count() + len(ids) > self.index.get_max_elements():
            self.index.resize_index(self.index.get_current_count() + len(ids))
        for start in range(0, len(ids), batch):
            labels = np.arange(len(self.ids) + start, len(self.ids) + min(start + batch, len(ids)))
            self.index.add_items(vectors[start : start + batch], labels, num_threads=self.threads)
        self.ids += ids
        self.payloads += payloads
        self._masks.clear()

    def set_ef(self, ef: int) -> None:
        self.ef = ef
        self.index.set_ef(ef)

    def _mask(self, where: dict) -> np.ndarray:
        """Which labels match; computed once per filter (a Python pass over every payload, which
        is not hnswlib's cost and would otherwise be timed with every query)."""
        key = repr(where)
        if key not in self._masks:
            conds = where["must"]
            self._masks[key] = np.array(
                [all(p.get(c["key"]) == c["match"] for c in conds) for p in self.payloads], dtype=bool
            )
        return self._masks[key]

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        if where is None:
            labels, _ = self.index.knn_query(queries, k=k, num_threads=self.threads)
            return [[self.ids[i] for i in row] for row in labels]
        mask = self._mask(where)
        k = min(k, int(mask.sum()))
        if k == 0:
            return [[] for _ in queries]
        labels, _ = self.index.knn_query(queries, k=k, num_threads=1, filter=lambda label: bool(mask[label]))
        return [[self.ids[i] for i in row] for row in labels]

    def search_one(self, q: np.ndarray, k: int) -> list[str]:
        labels, _ = self.index.knn_query(q[None, :], k=k, num_threads=1)
        return [self.ids[i] for i in labels[0]]

    def memory_bytes(self) -> int:
        return rss_bytes([os.getpid()])

    def stop(self) -> None:
        self.index = None


class QuartzNode(System):
    """One QuartzDB node process over gRPC (a single shard), standalone (no etcd)."""

    name = "quartz-node"
    threads = 2

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        from quartz_cluster.node.client import NodeClient
        from quartz_cluster.procs import NodeProcess

        self.workdir = workdir
        self.node = NodeProcess(
            "bench", workdir / "node", workdir / "node.log", ["--threads", str(self.threads)]
        )
        self.node.start()
        self.client = NodeClient(self.node.address, timeout_s=CLIENT_TIMEOUT_S)
        self.client.create_shard(COLLECTION, 0, dim, metric, m=m, ef_construction=ef_construction)
        self.ef = 64

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        for start in range(0, len(ids), batch):
            end = start + batch
            self.client.upsert(COLLECTION, 0, ids[start:end], vectors[start:end], payloads[start:end])

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        resp = self.client.search_raw(COLLECTION, 0, queries, k=k, ef=self.ef, filter=where)
        return [list(r.ids) for r in resp.results]

    def client_spec(self) -> tuple:
        return (self.node.address, self.ef)

    @staticmethod
    def open_client(spec: tuple, k: int = 10):
        from quartz_cluster.node.client import NodeClient

        address, ef = spec
        client = NodeClient(address, timeout_s=CLIENT_TIMEOUT_S)
        return (
            lambda q: list(client.search_raw(COLLECTION, 0, q, k=k, ef=ef).results[0].ids),
            client.close,
        )

    def memory_bytes(self) -> int:
        return rss_bytes([self.node.pid])

    def server_pids(self) -> list[int]:
        return [self.node.pid]

    def restart_to_ready_s(self, kill: bool = False) -> float:
        """Stop (gracefully, or SIGKILL) and start again; seconds until it serves."""
        if kill:
            self.node.kill()
        else:
            self.node.stop()
        self.client.close()
        t0 = time.perf_counter()
        self.node.start()
        elapsed = time.perf_counter() - t0
        from quartz_cluster.node.client import NodeClient

        self.client = NodeClient(self.node.address, timeout_s=CLIENT_TIMEOUT_S)
        return elapsed

    def stop(self) -> None:
        self.client.close()
        try:
            self.node.stop()
        except BaseException:
            self.node.kill()
            raise


class QuartzCluster(System):
    """A QuartzDB cluster: etcd, a coordinator, 3 nodes and a router, all real processes here;
    the collection has 3 shards x replication factor 2; clients go through the router with the
    cluster's admin key, as a user's would (auth is on: every call is authenticated).

    QuartzCluster(auth=False) (`quartz bench --no-auth`, `loadtest/ab_cluster.py --b-no-auth`)
    starts it as `quartz up --no-auth` does: no API keys, no member tokens between router and
    nodes, no etcd auth, and its clients send no key. That is the other side of the A/B of what
    auth costs; the system keeps its name and says "auth off" in its notes."""

    name = "quartz-cluster"
    nodes, shards, replicas = 3, 3, 2
    takes_auth = True  # the harness passes BenchConfig.auth to the constructor

    def __init__(self, auth: bool = True) -> None:
        self.auth = auth
        if not auth:
            self.notes = "auth off (quartz up --no-auth: no API keys, member tokens or etcd auth)"

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        from quartz_cluster.cluster import LocalCluster

        self.cluster = LocalCluster(workdir / "cluster", nodes=self.nodes, auth=self.auth)
        self.cluster.start()
        try:
            self._connect()
            self._create_collection(dim, metric, m, ef_construction)
        except BaseException:
            self.cluster.kill()
            raise
        self.ef = 64

    def _connect(self) -> None:
        self.client = self.cluster.client(timeout=CLIENT_TIMEOUT_S)

    def _create_collection(self, dim: int, metric: str, m: int, ef_construction: int) -> None:
        self.client.create_collection(
            COLLECTION,
            dim=dim,
            metric=metric,
            shards=self.shards,
            replication_factor=self.replicas,
            m=m,
            ef_construction=ef_construction,
            wait=True,
        )

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        for start in range(0, len(ids), batch):
            end = start + batch
            self.client.upsert(COLLECTION, ids[start:end], vectors[start:end], payloads[start:end])

    def wait_searchable(self, n: int, timeout_s: float = 600.0) -> float:
        t0 = time.perf_counter()
        while self.client.count(COLLECTION) < n:  # acknowledged writes are visible: returns at once
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{self.name}: not {n} rows after {timeout_s} s")
            time.sleep(SEARCHABLE_POLL_S)
        return time.perf_counter() - t0

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        hits = self.client.search(COLLECTION, queries, k=k, ef=self.ef, filter=where, with_payload=False)
        return [[h.id for h in row] for row in hits]

    def client_spec(self) -> tuple:
        return (self.cluster.router_address, self.ef, self.cluster.admin_key)

    @staticmethod
    def open_client(spec: tuple, k: int = 10):
        from quartz_cluster import QuartzClient

        address, ef, api_key = spec
        client = QuartzClient(address, api_key=api_key, timeout=CLIENT_TIMEOUT_S)
        return (
            lambda q: [h.id for h in client.search(COLLECTION, q, k=k, ef=ef, with_payload=False)],
            client.close,
        )

    def memory_bytes(self) -> int:
        return rss_bytes([p.pid for p in self.cluster.nodes])

    def server_pids(self) -> list[int]:
        return [p.pid for p in (*self.cluster.routers, *self.cluster.nodes)]

    def stop(self) -> None:
        self.client.close()
        try:
            self.cluster.stop()
        except BaseException:
            self.cluster.kill()
            raise


QUERIES_PER_REQUEST = 1024  # limits.QUERIES_PER_REQUEST_MAX: a batched search goes in chunks of this


class HttpJson:
    """One persistent HTTP/1.1 connection to the gateway (http.client, keep-alive), JSON bodies
    encoded by orjson (numpy arrays as they are, no tolist()), the API key as a bearer token."""

    def __init__(self, address: str, api_key: str | None, timeout_s: float = CLIENT_TIMEOUT_S) -> None:
        host, _, port = address.rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=self.headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # the server closed the connection while it sat idle (its keep-alive timeout):
                # reconnect once, as HTTP clients' pools do (every call made here is idempotent)
                self.conn.close()
                if attempt == 2:
                    raise
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {resp.status}: {raw[:500].decode(errors='replace')}")
        return orjson.loads(raw)

    def close(self) -> None:
        self.conn.close()


def uvicorn_http() -> str:
    """The HTTP parser the gateway's uvicorn picks (http="auto": httptools when it is installed,
    else h11). The router runs on this interpreter, so it sees the same packages; the peers
    extra (chromadb) pulls httptools in, so a venv with the peers serves HTTP with httptools."""
    return "httptools" if importlib.util.find_spec("httptools") else "h11"


class QuartzHttp(QuartzCluster):
    """The same cluster as quartz-cluster (3 nodes, 3 shards x RF 2, auth on), every call over
    the router's HTTP/JSON gateway instead of gRPC: the collection is created, rows ingested
    (PUT .../points, batches of 1,000), counted and searched (POST .../search: one query as
    `vector`, a batch as `vectors`, a filter as the JSON `filter`, with_payload false) with JSON
    bodies and the admin key as a bearer token, over one persistent keep-alive http.client
    connection per client (the harness, and each closed-loop client process). Next to
    quartz-cluster it measures what the gateway costs (uvicorn, FastAPI and pydantic on the
    router's event loop, JSON both ways) against gRPC and protobuf, on the same servicer methods;
    next to chroma, one HTTP/JSON API against another."""

    name = "quartz-http"

    def __init__(self, auth: bool = True) -> None:
        super().__init__(auth)
        self.notes = f"HTTP/JSON gateway, uvicorn http={uvicorn_http()}" + ("; auth off" if not auth else "")

    def _connect(self) -> None:
        self.client = HttpJson(self.cluster.http_address, self.cluster.admin_key)

    def _create_collection(self, dim: int, metric: str, m: int, ef_construction: int) -> None:
        body = {"name": COLLECTION, "dim": dim, "metric": metric, "shards": self.shards}
        body |= {"replication_factor": self.replicas, "m": m, "ef_construction": ef_construction}
        self.client.call("POST", "/v1/collections", body)  # "wait": true by default: shards ready

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        path = f"/v1/collections/{COLLECTION}/points"
        for start in range(0, len(ids), batch):
            end = min(start + batch, len(ids))
            points = [{"id": ids[i], "vector": vectors[i], "payload": payloads[i]} for i in range(start, end)]
            body = self.client.call("PUT", path, {"points": points})
            if body["errors"]:
                raise RuntimeError(f"{len(body['errors'])} points not written: {body['errors'][0]}")

    def wait_searchable(self, n: int, timeout_s: float = 600.0) -> float:
        t0 = time.perf_counter()
        while self.client.call("GET", f"/v1/collections/{COLLECTION}/count")["count"] < n:
            if time.perf_counter() - t0 > timeout_s:
                raise TimeoutError(f"{self.name}: not {n} rows after {timeout_s} s")
            time.sleep(SEARCHABLE_POLL_S)
        return time.perf_counter() - t0

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        path = f"/v1/collections/{COLLECTION}/search"
        out: list[list[str]] = []
        for start in range(0, len(queries), QUERIES_PER_REQUEST):
            chunk = queries[start : start + QUERIES_PER_REQUEST]
            body: dict = {"k": k, "ef": self.ef, "with_payload": False}
            if len(chunk) == 1:
                body["vector"] = chunk[0]  # the single-query form, as a client searching one would
            else:
                body["vectors"] = chunk
            if where is not None:
                body["filter"] = where
            reply = self.client.call("POST", path, body)
            rows = [reply["hits"]] if len(chunk) == 1 else reply["results"]
            out.extend([h["id"] for h in row] for row in rows)
        return out

    def client_spec(self) -> tuple:
        return (self.cluster.http_address, self.ef, self.cluster.admin_key)

    @staticmethod
    def open_client(spec: tuple, k: int = 10):
        address, ef, api_key = spec
        client = HttpJson(address, api_key)
        path = f"/v1/collections/{COLLECTION}/search"

        def search_one(q: np.ndarray) -> list[str]:
            vector = np.ascontiguousarray(q, dtype=np.float32)
            body = {"vector": vector, "k": k, "ef": ef, "with_payload": False}
            return [h["id"] for h in client.call("POST", path, body)["hits"]]

        return search_one, client.close


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Hnswlib, QuartzNode, QuartzCluster, QuartzHttp)}
