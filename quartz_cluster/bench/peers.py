"""Peer vector databases (Chroma server mode, Milvus Lite) behind one small interface, so the load tests can
benchmark them side by side with QuartzDB.

The peers are NOT runtime dependencies but an optional extra (they pull in ~80 packages; installing
them changes none of QuartzDB's own pins)::

    .venv/bin/pip install -e '.[peers]'      # chromadb==1.5.9 pymilvus==3.0.2 milvus-lite==3.2.2

This module imports neither chromadb nor pymilvus at import time; `PeerSystem.unavailable()` says why a peer
cannot run here. Every server is started in its own session (process group) and `stop()` kills that group.

What each peer honours of the HNSW knobs (see the `HONOURS` attribute of each class):

* Chroma (1.5.x, Rust server): M -> ``max_neighbors``, ef_construction -> ``ef_construction`` (both fixed at
  collection creation), search ef -> ``ef_search``, collection-wide. ``collection.modify(configuration=
  {"hnsw": {"ef_search": ef}})`` is persisted but ignored by the running server's cached index, so
  `Chroma.set_ef` modifies and then restarts the server (same path and port).
* Milvus Lite (3.x, pure-Python engine over per-segment FAISS ``IndexHNSWFlat``): M -> ``M``,
  ef_construction -> ``efConstruction`` and search ef -> ``{"params": {"ef": ef}}`` per request. Rows still in
  the memtable (up to 128 MB) are searched brute force, so `wait_searchable` flushes and reloads the
  collection to make every row go through an HNSW index.

Run ``python -m quartz_cluster.bench.peers`` for a smoke test of every available peer.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
POLL_INTERVAL_S = 0.2
HTTP_PROBE_TIMEOUT_S = 2.0
RPC_TIMEOUT_S = 600.0
DEFAULT_EF = 64
DEFAULT_K = 10
SEARCH_CHUNK_QUERIES = 1000  # queries per batched request
PAGE_BYTES = 4096
METRICS = ("cosine", "l2", "ip")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SearchOne = Callable[[np.ndarray], list[str]]


# ---------------------------------------------------------------- filters


def filter_conditions(where: dict | None) -> list[tuple[str, list[Any]]]:
    """The supported subset of the QuartzDB filter format as [(key, allowed values)], ANDed.

    Supported: ``{"must": [cond, ...]}`` with cond ``{"key": K, "match": V}`` (also Qdrant's
    ``{"match": {"value": V}}``) or ``{"key": K, "match_any": [V, ...]}``; V a string, number or bool and K a
    plain identifier. Anything else (should, must_not, range, nesting, dotted keys) raises ValueError.
    """
    if not where:
        return []
    if not isinstance(where, dict) or set(where) - {"must"}:
        raise ValueError(f"unsupported filter for peers (only 'must' is translated): {where!r}")
    must = where.get("must", [])
    if isinstance(must, dict):
        must = [must]
    if not isinstance(must, list):
        raise ValueError(f"'must' must be a list of conditions: {where!r}")
    out: list[tuple[str, list[Any]]] = []
    for cond in must:
        if not isinstance(cond, dict) or "key" not in cond or len(cond) != 2:
            raise ValueError(f"unsupported condition for peers: {cond!r}")
        key = cond["key"]
        if not isinstance(key, str) or not _IDENT.match(key):
            raise ValueError(f"unsupported filter key for peers (plain identifiers only): {key!r}")
        if "match" in cond:
            value = cond["match"]
            if isinstance(value, dict) and set(value) == {"value"}:
                value = value["value"]
            values = [value]
        elif "match_any" in cond and isinstance(cond["match_any"], list) and cond["match_any"]:
            values = list(cond["match_any"])
        else:
            raise ValueError(f"unsupported condition for peers: {cond!r}")
        for v in values:
            if not isinstance(v, str | int | float | bool):
                raise ValueError(f"unsupported match value for peers: {v!r}")
        out.append((key, values))
    return out


def to_chroma_where(where: dict | None) -> dict | None:
    """QuartzDB filter -> Chroma ``where`` ({"kind": "class"}, {"$and": [...]}, {"k": {"$in": [...]}})."""
    parts: list[dict] = []
    for key, values in filter_conditions(where):
        parts.append({key: values[0]} if len(values) == 1 else {key: {"$in": values}})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _milvus_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # double quotes, backslash escapes
    return repr(value)


def to_milvus_expr(where: dict | None) -> str:
    """QuartzDB filter -> Milvus boolean expression (``kind == "class" and site == true``); "" for none."""
    parts: list[str] = []
    for key, values in filter_conditions(where):
        if len(values) == 1:
            parts.append(f"{key} == {_milvus_literal(values[0])}")
        else:
            parts.append(f"{key} in [{', '.join(_milvus_literal(v) for v in values)}]")
    return " and ".join(parts)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=HTTP_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    """Direct children of pid, by scanning /proc/*/stat (no psutil)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _vmrss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def tree_rss_bytes(pid: int) -> int:
    """VmRSS of pid plus all its descendants (shared pages are counted once per process)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _vmrss_bytes(p)
        todo.extend(_children(p))
    return total


class ServerProcess:
    """A child server in its own session; `kill()` terminates its whole process group."""

    _live: ClassVar[set[ServerProcess]] = set()

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in kill())
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        ServerProcess._live.add(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")

    def log_tail(self, nbytes: int = 2000) -> str:
        try:
            return self.log_path.read_bytes()[-nbytes:].decode(errors="replace")
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGTERM the process group, SIGKILL it after STOP_GRACE_S."""
        ServerProcess._live.discard(self)
        pgid = self.proc.pid  # start_new_session: pgid == pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_GRACE_S)
        with contextlib.suppress(ProcessLookupError):  # stragglers that outlived the leader
            os.killpg(pgid, signal.SIGKILL)
        self._log.close()


@atexit.register
def _kill_leftover_servers() -> None:
    for server in list(ServerProcess._live):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            server.kill()


def _wait_for(what: str, ready: Callable[[], bool], server: ServerProcess | None, timeout_s: float) -> float:
    t0 = time.monotonic()
    while True:
        if server is not None:
            server.check_alive()
        if ready():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            tail = server.log_tail() if server is not None else ""
            raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s\n{tail}")
        time.sleep(POLL_INTERVAL_S)


def _script(name: str) -> Path:
    """A console script installed next to the running interpreter."""
    return Path(sys.executable).parent / name


# ---------------------------------------------------------------- base


class PeerSystem:
    """One peer database: a server this object starts and owns, plus a client to it."""

    name: ClassVar[str] = ""
    HONOURS: ClassVar[dict[str, str]] = {}  # knob -> how (or "ignored")
    MULTIPROCESS_CLIENTS: ClassVar[bool] = True

    def __init__(self) -> None:
        self.dim = 0
        self.metric = "cosine"
        self.ef = DEFAULT_EF
        self.workdir: Path | None = None

    @classmethod
    def unavailable(cls) -> str | None:
        raise NotImplementedError

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        raise NotImplementedError

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        raise NotImplementedError

    def wait_searchable(self, n: int, timeout_s: float = 600) -> float:
        raise NotImplementedError

    def set_ef(self, ef: int) -> None:
        raise NotImplementedError

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        raise NotImplementedError

    def client_spec(self, k: int = DEFAULT_K, where: dict | None = None) -> tuple:
        raise NotImplementedError

    @staticmethod
    def open_client(spec: tuple) -> tuple[SearchOne, Callable[[], None]]:
        """Open a client from `client_spec()` (in any process); returns (search_one, close)."""
        kind = spec[0]
        if kind not in PEERS:
            raise ValueError(f"unknown peer spec {kind!r}")
        return PEERS[kind].open_client(spec)

    def memory_bytes(self) -> int:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def _check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")

    def __enter__(self) -> PeerSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- Chroma


def _chroma_scalar_metadata(payload: dict) -> dict | None:
    """Chroma metadata values must be str/int/float/bool: lists, dicts and None are dropped."""
    md = {k: v for k, v in payload.items() if isinstance(v, str | int | float | bool)}
    return md or None


class Chroma(PeerSystem):
    """Chroma in server mode: ``chroma run`` (the Rust server, one OS process) + ``chromadb.HttpClient``.

    Embeddings are always passed explicitly and the collection has no embedding function, so Chroma never
    downloads a model. ef is collection-wide (``ef_search`` in the collection configuration) and changing it
    restarts the server (see `set_ef`); it applies to every client at once, the ef in `client_spec` is
    informative. Single node: ``get_indexing_status`` is not implemented ("scout_logs"), and writes were
    searchable as soon as ``add`` returned in every trial (count with ReadLevel.INDEX_ONLY == n).
    """

    name = "chroma"
    HONOURS: ClassVar[dict[str, str]] = {
        "M": "max_neighbors (creation only)",
        "ef_construction": "ef_construction (creation only)",
        "ef": "ef_search, collection-wide; modify(configuration=...) only takes effect after a server "
        "restart, which set_ef does",
    }
    COLLECTION = "bench"

    def __init__(self) -> None:
        super().__init__()
        self._server: ServerProcess | None = None
        self._client: Any = None
        self._col: Any = None
        self.port = 0
        self.host = "127.0.0.1"
        self.max_batch = 1000
        self._indexing_status = True  # whether get_indexing_status() works on this server

    @classmethod
    def unavailable(cls) -> str | None:
        if importlib.util.find_spec("chromadb") is None:
            return "chromadb is not installed (pip install chromadb)"
        if not _script("chroma").exists():
            return f"no chroma console script next to {sys.executable}"
        return None

    def _heartbeat(self) -> bool:
        try:
            url = f"http://{self.host}:{self.port}/api/v2/heartbeat"
            with urllib.request.urlopen(url, timeout=HTTP_PROBE_TIMEOUT_S) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    @staticmethod
    def _connect(host: str, port: int) -> Any:
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(host=host, port=port, settings=Settings(anonymized_telemetry=False))

    def _launch(self) -> None:
        """Start `chroma run` on self.port and connect to it."""
        argv = [str(_script("chroma")), "run", "--path", str(self.workdir / "chroma")]
        argv += ["--host", self.host, "--port", str(self.port)]
        self._server = ServerProcess(
            argv, self.workdir / "chroma.log", env={"ANONYMIZED_TELEMETRY": "False", "NO_COLOR": "1"}
        )
        _wait_for("chroma heartbeat", self._heartbeat, self._server, START_TIMEOUT_S)
        self._client = self._connect(self.host, self.port)
        self.max_batch = int(self._client.get_max_batch_size())

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        self._check_metric(metric)
        self.workdir, self.dim, self.metric = Path(workdir), dim, metric
        self.port = free_port()
        try:
            self._launch()
            hnsw = {"space": metric, "max_neighbors": m, "ef_construction": ef_construction}
            hnsw["ef_search"] = self.ef
            self._col = self._client.create_collection(
                self.COLLECTION, configuration={"hnsw": hnsw}, embedding_function=None
            )
        except BaseException:
            self.stop()
            raise

    def restart(self) -> float:
        """Restart the server on the same path and port (and warm the index); returns seconds taken."""
        t0 = time.monotonic()
        self.stop()
        try:
            self._launch()
            self._col = self._client.get_collection(self.COLLECTION, embedding_function=None)
            self.search(np.ones((1, self.dim), dtype=np.float32), 1)  # loads the HNSW index
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        step = max(1, min(batch, self.max_batch))
        for i in range(0, len(ids), step):
            mds = [_chroma_scalar_metadata(p) for p in payloads[i : i + step]]
            self._col.add(
                ids=[str(x) for x in ids[i : i + step]],
                embeddings=vectors[i : i + step],
                metadatas=mds if any(md is not None for md in mds) else None,
            )

    def _indexed(self, n: int) -> bool:
        """count() == n, nothing left unindexed (where the server reports it) and a search answers."""
        from chromadb.errors import ChromaError

        if self._col.count() != n:
            return False
        if self._indexing_status:
            try:
                if self._col.get_indexing_status().num_unindexed_ops > 0:
                    return False
            except (AttributeError, ChromaError):  # the single-node server: "scout_logs is not implemented"
                self._indexing_status = False
        probe = np.ones((1, self.dim), dtype=np.float32)
        return len(self.search(probe, 1)[0]) > 0

    def wait_searchable(self, n: int, timeout_s: float = 600) -> float:
        return _wait_for("chroma index", lambda: self._indexed(n), self._server, timeout_s)

    def set_ef(self, ef: int) -> None:
        """Chroma 1.5 persists ``modify(configuration={"hnsw": {"ef_search": ef}})`` but a running server
        keeps searching its cached index with the old ef (measured: recall unchanged until restart), so a
        change of ef also restarts the server. Clients opened before are disconnected: set ef first."""
        if int(ef) == self.ef:
            return
        self._col.modify(configuration={"hnsw": {"ef_search": int(ef)}})
        self.ef = int(ef)
        self.restart()

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        cw = to_chroma_where(where)
        out: list[list[str]] = []
        for i in range(0, len(queries), SEARCH_CHUNK_QUERIES):
            res = self._col.query(
                query_embeddings=queries[i : i + SEARCH_CHUNK_QUERIES], n_results=k, where=cw, include=[]
            )
            out.extend([str(x) for x in row] for row in res["ids"])
        return out

    def client_spec(self, k: int = DEFAULT_K, where: dict | None = None) -> tuple:
        return ("chroma", self.host, self.port, self.COLLECTION, k, self.ef, to_chroma_where(where))

    @staticmethod
    def open_client(spec: tuple) -> tuple[SearchOne, Callable[[], None]]:
        _, host, port, collection, k, _ef, cw = spec
        client = Chroma._connect(host, port)
        col = client.get_collection(collection, embedding_function=None)

        def search_one(q: np.ndarray) -> list[str]:
            res = col.query(
                query_embeddings=[np.asarray(q, dtype=np.float32)], n_results=k, where=cw, include=[]
            )
            return [str(x) for x in res["ids"][0]]

        def close() -> None:
            with contextlib.suppress(AttributeError):
                client.close()

        return search_one, close

    def memory_bytes(self) -> int:
        return tree_rss_bytes(self._server.pid) if self._server else 0

    def stop(self) -> None:
        self._col = None
        if self._client is not None:
            with contextlib.suppress(AttributeError):
                self._client.close()
            self._client = None
        if self._server is not None:
            self._server.kill()
            self._server = None


# ---------------------------------------------------------------- Milvus Lite


class MilvusLite(PeerSystem):
    """Milvus Lite 3.x run as its own server process: ``milvus-lite server --data-dir <workdir>/milvus.db``.

    Why not ``MilvusClient("<workdir>/milvus.db")``: that starts the same gRPC server in a thread of the
    calling process and takes an exclusive ``flock`` on the data directory, so a second OS process cannot
    open the db (pymilvus raises "Open local milvus failed", DataDirLockedError underneath). Running the same
    engine as a separate process lets any number of processes connect over ``http://127.0.0.1:<port>``, keeps
    its memory apart from the harness's, and keeps its (pure Python) threads off the harness's GIL.
    `MilvusLiteEmbedded` is the in-process variant.

    Schema: VARCHAR primary key ``pk``, FLOAT_VECTOR ``embedding``, payload keys as dynamic fields (a payload
    key named ``pk`` or ``embedding`` is rejected).
    """

    name = "milvus-lite"
    HONOURS: ClassVar[dict[str, str]] = {
        "M": "M (FAISS IndexHNSWFlat, per segment)",
        "ef_construction": "efConstruction",
        "ef": "search_params {'params': {'ef': ef}}, per request (FAISS uses max(ef, k))",
    }
    COLLECTION = "bench"
    PK_FIELD = "pk"
    VECTOR_FIELD = "embedding"
    PK_MAX_LENGTH = 512
    METRIC_NAMES = {"cosine": "COSINE", "l2": "L2", "ip": "IP"}

    def __init__(self) -> None:
        super().__init__()
        self._server: ServerProcess | None = None
        self._client: Any = None
        self.port = 0
        self.host = "127.0.0.1"

    @classmethod
    def unavailable(cls) -> str | None:
        for mod in ("pymilvus", "milvus_lite", "faiss"):
            if importlib.util.find_spec(mod) is None:
                return f"{mod} is not installed (pip install pymilvus milvus-lite)"
        if not _script("milvus-lite").exists():
            return f"no milvus-lite console script next to {sys.executable}"
        return None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _launch(self) -> None:
        self.port = free_port()
        argv = [str(_script("milvus-lite")), "server", "--data-dir", str(self.workdir / "milvus.db")]
        argv += ["--host", self.host, "--port", str(self.port)]
        self._server = ServerProcess(argv, self.workdir / "milvus-lite.log")
        _wait_for("milvus-lite port", lambda: _tcp_open(self.host, self.port), self._server, START_TIMEOUT_S)
        from pymilvus import MilvusClient

        self._client = MilvusClient(uri=self.uri, timeout=START_TIMEOUT_S)

    def start(self, workdir: Path, dim: int, metric: str, m: int, ef_construction: int) -> None:
        self._check_metric(metric)
        self.workdir, self.dim, self.metric = Path(workdir), dim, metric
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._launch()
            from pymilvus import DataType, MilvusClient

            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
            schema.add_field(self.PK_FIELD, DataType.VARCHAR, is_primary=True, max_length=self.PK_MAX_LENGTH)
            schema.add_field(self.VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
            index_params = self._client.prepare_index_params()
            index_params.add_index(
                field_name=self.VECTOR_FIELD,
                index_type="HNSW",
                metric_type=self.METRIC_NAMES[metric],
                params={"M": m, "efConstruction": ef_construction},
            )
            self._client.create_collection(self.COLLECTION, schema=schema, index_params=index_params)
            self._client.load_collection(self.COLLECTION)
        except BaseException:
            self.stop()
            raise

    def ingest(self, ids: list[str], vectors: np.ndarray, payloads: list[dict], batch: int = 1000) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        for i in range(0, len(ids), max(1, batch)):
            rows = []
            for j in range(i, min(i + batch, len(ids))):
                payload = payloads[j] if payloads else {}
                if self.PK_FIELD in payload or self.VECTOR_FIELD in payload:
                    raise ValueError(f"payload keys {self.PK_FIELD!r}/{self.VECTOR_FIELD!r} are reserved")
                rows.append({**payload, self.PK_FIELD: str(ids[j]), self.VECTOR_FIELD: vectors[j]})
            self._client.insert(self.COLLECTION, rows, timeout=RPC_TIMEOUT_S)

    def _row_count(self) -> int:
        return int(self._client.get_collection_stats(self.COLLECTION)["row_count"])

    def wait_searchable(self, n: int, timeout_s: float = 600) -> float:
        """Flush the memtable into a segment, then release + load: load builds (or loads) the HNSW index of
        every segment synchronously, so afterwards no row is searched brute force."""
        t0 = time.monotonic()
        self._client.flush(self.COLLECTION, timeout=timeout_s)
        self._client.release_collection(self.COLLECTION, timeout=timeout_s)
        self._client.load_collection(self.COLLECTION, timeout=timeout_s)
        probe = np.ones((1, self.dim), dtype=np.float32)
        left = max(1.0, timeout_s - (time.monotonic() - t0))
        _wait_for(
            "milvus-lite rows",
            lambda: self._row_count() == n and len(self.search(probe, 1)[0]) > 0,
            self._server,
            left,
        )
        return time.monotonic() - t0

    def set_ef(self, ef: int) -> None:
        self.ef = int(ef)

    @staticmethod
    def _search(client: Any, queries: np.ndarray, k: int, ef: int, expr: str) -> list[list[str]]:
        res = client.search(
            MilvusLite.COLLECTION,
            data=list(queries),  # one 1-d array per query
            limit=k,
            filter=expr,
            output_fields=[],
            search_params={"params": {"ef": ef}},
            anns_field=MilvusLite.VECTOR_FIELD,
            timeout=RPC_TIMEOUT_S,
        )
        return [[str(hit.id) for hit in hits] for hits in res]

    def search(self, queries: np.ndarray, k: int, where: dict | None = None) -> list[list[str]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        expr = to_milvus_expr(where)
        out: list[list[str]] = []
        for i in range(0, len(queries), SEARCH_CHUNK_QUERIES):
            out.extend(self._search(self._client, queries[i : i + SEARCH_CHUNK_QUERIES], k, self.ef, expr))
        return out

    def client_spec(self, k: int = DEFAULT_K, where: dict | None = None) -> tuple:
        return ("milvus-lite", self.uri, k, self.ef, to_milvus_expr(where))

    @staticmethod
    def open_client(spec: tuple) -> tuple[SearchOne, Callable[[], None]]:
        from pymilvus import MilvusClient

        _, uri, k, ef, expr = spec
        client = MilvusClient(uri=uri, timeout=START_TIMEOUT_S)

        def search_one(q: np.ndarray) -> list[str]:
            return MilvusLite._search(client, np.asarray(q, dtype=np.float32)[None, :], k, ef, expr)[0]

        return search_one, client.close

    def memory_bytes(self) -> int:
        return tree_rss_bytes(self._server.pid) if self._server else 0

    def stop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # best effort: the server may already be gone
                self._client.close()
            self._client = None
        if self._server is not None:
            self._server.kill()
            self._server = None


class MilvusLiteEmbedded(MilvusLite):
    """Milvus Lite as documented: ``MilvusClient("<workdir>/milvus.db")``, the server running as threads of
    THIS process. Only one OS process can open the db (exclusive flock), so there is no `client_spec`: use
    threads of this process for concurrency, and read `memory_bytes` as this whole process's RSS."""

    name = "milvus-lite-embedded"
    MULTIPROCESS_CLIENTS = False

    def _launch(self) -> None:
        from pymilvus import MilvusClient

        self._client = MilvusClient(str(self.workdir / "milvus.db"))

    def client_spec(self, k: int = DEFAULT_K, where: dict | None = None) -> tuple:
        raise NotImplementedError(
            "Milvus Lite embedded holds an exclusive flock on its data dir: a second OS process cannot "
            "open it (pymilvus: 'Open local milvus failed'); use threads in this process, "
            "or the 'milvus-lite' peer"
        )

    def memory_bytes(self) -> int:
        return _vmrss_bytes(os.getpid())

    def stop(self) -> None:
        super().stop()
        if self.workdir is not None:
            from milvus_lite import server_manager_instance

            server_manager_instance.release_server(str(self.workdir / "milvus.db"))


PEERS: dict[str, type[PeerSystem]] = {"chroma": Chroma, "milvus-lite": MilvusLite}
EXTRA_PEERS: dict[str, type[PeerSystem]] = {"milvus-lite-embedded": MilvusLiteEmbedded}


# ---------------------------------------------------------------- smoke test

SMOKE_N = 5000
SMOKE_DIM = 384
SMOKE_CLUSTERS = 50
SMOKE_QUERIES = 100
SMOKE_K = 10
SMOKE_EFS = (16, 64, 128)
SMOKE_M = 16
SMOKE_EF_CONSTRUCTION = 200
SMOKE_KINDS = ("a", "b", "c", "d")
SMOKE_LOOP_PROCS = 2
SMOKE_LOOP_S = 3.0
SMOKE_SEED = 7


def _closed_loop_worker(spec: tuple, queries: np.ndarray, duration_s: float, out: Any) -> None:
    search_one, close = PeerSystem.open_client(spec)
    try:
        search_one(queries[0])  # warm the connection
        done, i, t_end = 0, 0, time.monotonic() + duration_s
        while time.monotonic() < t_end:
            search_one(queries[i % len(queries)])
            done, i = done + 1, i + 1
        out.put(done)
    finally:
        close()


def closed_loop_qps(spec: tuple, queries: np.ndarray, procs: int, duration_s: float) -> float:
    """Aggregate QPS of `procs` spawned processes each searching back to back for duration_s."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    workers = [
        ctx.Process(target=_closed_loop_worker, args=(spec, queries, duration_s, out)) for _ in range(procs)
    ]
    for w in workers:
        w.start()
    try:
        counts = [out.get(timeout=duration_s + START_TIMEOUT_S) for _ in workers]
    finally:
        for w in workers:
            w.join(timeout=STOP_GRACE_S)
            if w.is_alive():
                w.kill()
                w.join()
    return sum(counts) / duration_s


def _smoke_data() -> tuple[np.ndarray, np.ndarray, list[dict]]:
    rng = np.random.default_rng(SMOKE_SEED)
    centers = rng.standard_normal((SMOKE_CLUSTERS, SMOKE_DIM)).astype(np.float32)
    labels = rng.integers(0, SMOKE_CLUSTERS, SMOKE_N + SMOKE_QUERIES)
    x = centers[labels] + 0.5 * rng.standard_normal((len(labels), SMOKE_DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    payloads = [{"kind": SMOKE_KINDS[int(c)]} for c in rng.integers(0, len(SMOKE_KINDS), SMOKE_N)]
    return x[:SMOKE_N], x[SMOKE_N:], payloads


def _recall(got: list[list[str]], truth: np.ndarray) -> float:
    hits = sum(len({int(g) for g in row} & set(t.tolist())) for row, t in zip(got, truth, strict=True))
    return hits / truth.size


def smoke(peer_cls: type[PeerSystem], root: Path) -> dict[str, Any]:
    base, queries, payloads = _smoke_data()
    truth = np.argsort(-(queries @ base.T), axis=1)[:, :SMOKE_K]
    ids = [str(i) for i in range(SMOKE_N)]
    row: dict[str, Any] = {"peer": peer_cls.name}
    with peer_cls() as peer:
        peer.start(root / peer_cls.name, SMOKE_DIM, "cosine", SMOKE_M, SMOKE_EF_CONSTRUCTION)
        t0 = time.monotonic()
        peer.ingest(ids, base, payloads)
        row["ingest_s"] = time.monotonic() - t0
        row["searchable_wait_s"] = peer.wait_searchable(SMOKE_N)
        for ef in SMOKE_EFS:
            peer.set_ef(ef)
            t0 = time.monotonic()
            got = peer.search(queries, SMOKE_K)
            row[f"qps_batch_ef{ef}"] = len(queries) / (time.monotonic() - t0)
            row[f"recall_ef{ef}"] = _recall(got, truth)
        peer.set_ef(DEFAULT_EF)
        where = {"must": [{"key": "kind", "match": "a"}]}
        got = peer.search(queries, SMOKE_K, where)
        allowed = {ids[i] for i, p in enumerate(payloads) if p["kind"] == "a"}
        bad = sum(1 for r in got for h in r if h not in allowed)
        if bad:
            raise AssertionError(f"{peer_cls.name}: {bad} filtered hits do not match kind == 'a'")
        mask = np.array([p["kind"] == "a" for p in payloads])
        scores = np.where(mask[None, :], queries @ base.T, -np.inf)
        row["filtered_recall_ef64"] = _recall(got, np.argsort(-scores, axis=1)[:, :SMOKE_K])
        row["filtered_hits"] = sum(len(r) for r in got)
        try:
            spec = peer.client_spec(k=SMOKE_K)
            row[f"qps_{SMOKE_LOOP_PROCS}proc_ef64"] = closed_loop_qps(
                spec, queries, SMOKE_LOOP_PROCS, SMOKE_LOOP_S
            )
        except NotImplementedError:
            row[f"qps_{SMOKE_LOOP_PROCS}proc_ef64"] = "n/a (1 process only)"
        row["memory_mib"] = peer.memory_bytes() / 2**20
    return row


def main() -> int:
    import tempfile

    rows = []
    for name, cls in {**PEERS, **EXTRA_PEERS}.items():
        reason = cls.unavailable()
        if reason:
            print(f"{name}: skipped ({reason})")
            continue
        with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as tmp:
            print(f"{name}: running smoke test in {tmp} ...", flush=True)
            rows.append(smoke(cls, Path(tmp)))
    if not rows:
        print("no peer available")
        return 1
    keys = list(dict.fromkeys(k for r in rows for k in r))
    width = max(len(k) for k in keys)
    print()
    print(" " * width + "".join(f"{r['peer']:>22}" for r in rows))
    for key in keys[1:]:
        cells = []
        for r in rows:
            v = r.get(key, "")
            cells.append(f"{v:>22.3f}" if isinstance(v, float) else f"{v!s:>22}")
        print(f"{key:<{width}}" + "".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
