"""The systems `quartz bench` measures, behind one interface (the peers' adapters in peers.py
follow it too): in-process hnswlib (the limit), one QuartzDB node, a QuartzDB cluster.

Every system: start(workdir, dim, metric, m, ef_construction); ingest(ids, vectors, payloads,
batch); wait_searchable(n) -> seconds; set_ef(ef); search(queries, k, where) -> ids per query;
client_spec() / open_client(spec) for closed-loop clients in other processes; memory_bytes();
stop(). `where` is a QuartzDB filter ({"must": [{"key": ..., "match": ...}]})."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

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
    cluster's admin key, as a user's would (auth is on: every call is authenticated)."""

    name = "quartz-cluster"
    nodes, shards, replicas = 3, 3, 2

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        from quartz_cluster.cluster import LocalCluster

        self.cluster = LocalCluster(workdir / "cluster", nodes=self.nodes)
        self.cluster.start()
        self.client = self.cluster.client(timeout=CLIENT_TIMEOUT_S)
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
        self.ef = 64

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


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (Hnswlib, QuartzNode, QuartzCluster)}
