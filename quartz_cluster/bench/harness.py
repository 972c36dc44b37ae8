"""`quartz bench`: QuartzDB next to the limit (in-process hnswlib) and its peers, in one run, on
the same machine and data, reported as Qdrant's vector-db-benchmark and VectorDBBench do.

Per system, one after another (never two at once, so they do not share the CPU):
  1. ingest in batches (rows/s), then the time until every row is searchable;
  2. memory per vector: growth of the servers' RSS over the ingest / rows (/ replicas);
  3. serial pass at every ef of the sweep: recall@10 and ndcg@10 against exact ground truth,
     p50/p95/p99 latency and single-client QPS; the operating point is the smallest ef whose
     recall reaches the target (0.95), so systems are compared at equal recall;
  4. batched search throughput at that ef (batches of 100 queries);
  5. closed loop at 1, 4, 8, 16, 32 concurrent clients, each its own OS process (spawned), each
     with its own connection: QPS, p50/p95/p99, error rate;
  6. filtered search at several selectivities (fields and values picked by frequency), recall
     against exact filtered ground truth, and latency.
A benchmark, not a test: nothing is asserted. Results: a JSON per run and PNG plots."""

from __future__ import annotations

import importlib
import math
import os
import resource
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from quartz_cluster.bench.clients import run_processes
from quartz_cluster.bench.systems import SYSTEMS, System
from quartz_cluster.datasets import Dataset, exact_knn

K = 10
RECALL_TARGET = 0.95
CLIENT_START_TIMEOUT_S = 180.0
WARMUP_CALLS = 20
BATCH_QUERIES = 100
BATCHED_MIN_S = 2.0  # the batched pass repeats over the queries until this long (one pass took 0.1-1 s)
FILTER_QUERIES = 200
SELECTIVITIES = (0.001, 0.01, 0.1, 0.5)


@dataclass
class BenchConfig:
    systems: list[str] = field(default_factory=lambda: ["hnswlib", "quartz-node", "quartz-cluster"])
    ef_sweep: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    concurrency: list[int] = field(default_factory=lambda: [1, 4, 8, 16, 32])
    duration_s: float = 10.0
    m: int = 16
    ef_construction: int = 200
    load_batch: int = 1000
    serial_queries: int = 1000
    filters: bool = True
    workdir: str | None = None
    auth: bool = True  # False: the QuartzDB cluster systems run without auth (quartz up --no-auth)


def load_system(name: str) -> type[System]:
    if name in SYSTEMS:
        return SYSTEMS[name]
    from quartz_cluster.bench import peers

    if name in peers.PEERS:
        return peers.PEERS[name]
    raise ValueError(f"unknown system {name!r}; one of {', '.join([*SYSTEMS, *peers.PEERS])}")


# --- quality ------------------------------------------------------------------------------------


def recall_ndcg(found: list[list[str]], truth: list[list[str]], k: int = K) -> tuple[float, float]:
    """Mean recall@k and ndcg@k (binary relevance: a hit is relevant when it is one of the true
    top k) over queries; queries with no true neighbour are skipped."""
    ideal = [sum(1 / math.log2(i + 2) for i in range(n)) for n in range(k + 1)]
    recalls, ndcgs = [], []
    for got, want in zip(found, truth, strict=True):
        want_k = set(want[:k])
        if not want_k:
            continue
        hits = [1 if pid in want_k else 0 for pid in got[:k]]
        recalls.append(sum(hits) / len(want_k))
        ndcgs.append(sum(h / math.log2(i + 2) for i, h in enumerate(hits)) / ideal[len(want_k)])
    return float(np.mean(recalls)), float(np.mean(ndcgs))


def truth_ids(ds: Dataset, rows: np.ndarray, k: int = K) -> list[list[str]]:
    return [[ds.ids[r] for r in row[:k] if r >= 0] for row in rows]


def pick_filters(ds: Dataset, targets=SELECTIVITIES) -> list[dict]:
    """For each target selectivity, the (string or bool field, value) whose frequency is closest."""
    counts: Counter = Counter()
    for p in ds.payloads:
        for key, value in p.items():
            if isinstance(value, str | bool) and key != "text":
                counts[(key, value)] += 1
    n = len(ds.payloads)
    out = []
    for target in targets:
        (key, value), c = min(counts.items(), key=lambda kv: abs(math.log(kv[1] / n) - math.log(target)))
        if any(f["key"] == key and f["value"] == value for f in out):
            continue
        out.append({"target": target, "key": key, "value": value, "selectivity": c / n})
    return out


# --- closed-loop clients ------------------------------------------------------------------------


def _loop(search: Callable[[np.ndarray], object], queries: np.ndarray, duration_s: float) -> tuple:
    """One query at a time for duration_s: (start, end, latencies of successes, errors)."""
    lat, errors = [], 0
    start = time.perf_counter()
    stop_at = start + duration_s
    i = 0
    while (t := time.perf_counter()) < stop_at:
        try:
            search(queries[i % len(queries)])
            lat.append(time.perf_counter() - t)
        except Exception:
            errors += 1
        i += 1
    return start, time.perf_counter(), lat, errors


def _client_process(module, cls_name, spec, queries, duration_s, barrier, results) -> None:
    try:
        cls = getattr(importlib.import_module(module), cls_name)
        search, close = cls.open_client(spec)
        for i in range(WARMUP_CALLS):
            search(queries[i % len(queries)])
        barrier.wait(timeout=CLIENT_START_TIMEOUT_S)
        results.put(("ok", _loop(search, queries, duration_s)))
        close()
    except BaseException as exc:  # reported as text: many client errors do not pickle
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def server_pids(system: System) -> list[int]:
    """The processes that serve the system's queries (empty for an in-process library)."""
    if hasattr(system, "server_pids"):
        return system.server_pids()
    server = getattr(system, "_server", None)  # the peers: one server process and its children
    if server is not None:
        from quartz_cluster.bench.peers import _children

        return [server.pid, *_children(server.pid)]
    return []


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (from /proc)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            continue
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O) since boot."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]  # user .. steal
    except (OSError, ValueError):
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _rusage_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def descendants(pid: int) -> list[int]:
    """Every live process under pid (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _cpu_now(pids: list[int]) -> tuple:
    """CPU seconds so far of the servers, the reaped client processes, this process, each live
    process under this one (etcd, coordinator, servers) and the whole machine (busy); the time."""
    children, own = _rusage_s(resource.RUSAGE_CHILDREN), _rusage_s(resource.RUSAGE_SELF)
    tree = {p: cpu_s([p]) for p in descendants(os.getpid())}
    return cpu_s(pids), children, own, tree, machine_busy_s(), time.perf_counter()


def closed_loop(system: System, queries: np.ndarray, clients: int, duration_s: float) -> dict:
    """The closed loop, with the CPU it cost per query: the servers' (from /proc) and the client
    processes' (their rusage, warm-up and start-up included); and how busy the machine was with
    other work meanwhile (this is a shared machine): the 1-minute load average after the level and
    `other_cpu_cores`, the machine's busy CPU less that of this process and every process under
    it (servers, etcd, coordinator, clients), per second of the level."""
    pids = server_pids(system)
    server0, clients0, self0, tree0, busy0, t0 = _cpu_now(pids)
    result = _closed_loop(system, queries, clients, duration_s)
    server1, clients1, self1, tree1, busy1, t1 = _cpu_now(pids)
    wall = t1 - t0
    if pids and result["calls"]:
        result["server_cpu_ms_per_query"] = (server1 - server0) * 1000 / result["calls"]
        if getattr(system, "clients_are_processes", True):
            result["client_cpu_ms_per_query"] = (clients1 - clients0) * 1000 / result["calls"]
    live = sum(c - tree0.get(p, 0.0) for p, c in tree1.items())  # servers, etcd, coordinator
    ours = live + (clients1 - clients0) + (self1 - self0)
    result["other_cpu_cores"] = max(0.0, (busy1 - busy0 - ours) / wall)
    result["load_avg_1m"] = os.getloadavg()[0]
    return result


def _closed_loop(system: System, queries: np.ndarray, clients: int, duration_s: float) -> dict:
    parts = np.array_split(queries, clients)
    if not getattr(system, "clients_are_processes", True):
        return _closed_loop_threads(system, parts, duration_s)
    cls = type(system)
    spec = system.client_spec()
    out = run_processes(
        _client_process,
        [(cls.__module__, cls.__name__, spec, p, duration_s) for p in parts],
        CLIENT_START_TIMEOUT_S + duration_s + 60,
        system.name,
    )
    return summarize(out, clients)


def _closed_loop_threads(system: System, parts: list[np.ndarray], duration_s: float) -> dict:
    barrier = threading.Barrier(len(parts))
    out: list[tuple] = []
    lock = threading.Lock()

    def client(part: np.ndarray) -> None:
        for i in range(WARMUP_CALLS):
            system.search_one(part[i % len(part)], K)
        barrier.wait()
        r = _loop(lambda q: system.search_one(q, K), part, duration_s)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=client, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(out, len(parts))


def summarize(results: list[tuple], clients: int) -> dict:
    wall_s = max(r[1] for r in results) - min(r[0] for r in results)
    lat_ms = np.concatenate([np.asarray(r[2], dtype=float) for r in results]) * 1000
    errors = sum(r[3] for r in results)
    calls = len(lat_ms) + errors
    return {
        "clients": clients,
        "calls": calls,
        "qps": len(lat_ms) / wall_s,
        "error_rate": errors / calls if calls else 0.0,
        **percentiles(lat_ms),
    }


def percentiles(lat_ms: np.ndarray) -> dict:
    if len(lat_ms) == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {f"p{p}_ms": float(np.percentile(lat_ms, p)) for p in (50, 95, 99)}


# --- one system ---------------------------------------------------------------------------------


def serial_pass(
    system: System, queries: np.ndarray, truth: list[list[str]], where: dict | None = None
) -> dict:
    """One query at a time from this process: quality and latency (after a few untimed queries:
    the first after an ef change or a restart pays for page faults and connection setup)."""
    for q in queries[:WARMUP_CALLS]:
        system.search(q[None, :], K, where)
    found, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        found.append(system.search(q[None, :], K, where)[0])
        lat.append(time.perf_counter() - t0)
    recall, ndcg = recall_ndcg(found, truth)
    lat_ms = np.asarray(lat) * 1000
    return {"recall_at_10": recall, "ndcg_at_10": ndcg, "qps": len(lat) / sum(lat), **percentiles(lat_ms)}


def bench_system(name: str, ds: Dataset, cfg: BenchConfig, workdir: Path, say=print) -> dict:
    cls = load_system(name)
    why = cls.unavailable()
    if why:
        say(f"{name}: skipped ({why})")
        return {"system": name, "skipped": why}
    system = cls(auth=cfg.auth) if getattr(cls, "takes_auth", False) else cls()
    out: dict = {
        "system": name,
        "notes": getattr(system, "notes", ""),
        "honours": getattr(system, "HONOURS", {}),
        "replicas": getattr(system, "replicas", 1),
    }
    if getattr(cls, "takes_auth", False):
        out["auth"] = cfg.auth
    out["load_avg_at_start"] = list(os.getloadavg())
    queries = ds.queries[: cfg.serial_queries]
    truth = truth_ids(ds, ds.gt_ids[: len(queries)])
    system.start(workdir / name, ds.dim, ds.metric, cfg.m, cfg.ef_construction)
    try:
        mem0 = system.memory_bytes()
        t0 = time.perf_counter()
        system.ingest(ds.ids, ds.base, ds.payloads, cfg.load_batch)
        ingest_s = time.perf_counter() - t0
        searchable_s = system.wait_searchable(len(ds.ids))
        mem1 = system.memory_bytes()
        out["ingest"] = {
            "rows": len(ds.ids),
            "seconds": ingest_s,
            "rows_per_s": len(ds.ids) / ingest_s,
            "searchable_after_s": searchable_s,
        }
        out["memory"] = {
            "rss_before_bytes": mem0,
            "rss_after_bytes": mem1,
            "bytes_per_vector": (mem1 - mem0) / len(ds.ids),
            "bytes_per_vector_per_replica": (mem1 - mem0) / len(ds.ids) / out["replicas"],
        }
        say(
            f"{name}: ingest {out['ingest']['rows_per_s']:,.0f} rows/s, "
            f"searchable after {searchable_s:.2f} s, "
            f"{out['memory']['bytes_per_vector_per_replica']:,.0f} B/vector/replica"
        )
        sweep = {}
        for ef in cfg.ef_sweep:
            system.set_ef(ef)
            sweep[ef] = serial_pass(system, queries, truth)
            s = sweep[ef]
            say(
                f"  ef {ef:>4}: recall@10 {s['recall_at_10']:.3f}, ndcg@10 {s['ndcg_at_10']:.3f}, "
                f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms, {s['qps']:,.0f} QPS (1 client)"
            )
        out["ef_sweep"] = {str(ef): s for ef, s in sweep.items()}
        reaching = [ef for ef in cfg.ef_sweep if sweep[ef]["recall_at_10"] >= RECALL_TARGET]
        ef_star = min(reaching) if reaching else max(cfg.ef_sweep)
        out["operating_ef"] = ef_star
        out["operating_recall_at_10"] = sweep[ef_star]["recall_at_10"]
        system.set_ef(ef_star)

        system.search(ds.queries[:BATCH_QUERIES], K)  # warm-up: the first batch of its size
        t0, done = time.perf_counter(), 0
        while done == 0 or time.perf_counter() - t0 < BATCHED_MIN_S:  # whole passes, >= 2 s
            for start in range(0, len(ds.queries), BATCH_QUERIES):
                system.search(ds.queries[start : start + BATCH_QUERIES], K)
            done += len(ds.queries)
        out["batched_qps"] = done / (time.perf_counter() - t0)
        say(f"  at ef {ef_star}: batched search {out['batched_qps']:,.0f} QPS (batches of {BATCH_QUERIES})")

        levels = {}
        for clients in cfg.concurrency:
            r = levels[str(clients)] = closed_loop(system, ds.queries, clients, cfg.duration_s)
            say(
                f"  {clients:>2} clients: {r['qps']:,.0f} QPS, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, errors {r['error_rate']:.1%} (load {r['load_avg_1m']:.2f}, "
                f"other work {r['other_cpu_cores']:.2f} cores)"
            )
        out["concurrency"] = levels

        if cfg.filters:
            out["filtered"] = []
            fq = ds.queries[:FILTER_QUERIES]
            for f in pick_filters(ds):
                mask = np.array([p.get(f["key"]) == f["value"] for p in ds.payloads], dtype=bool)
                ftruth = truth_ids(ds, exact_knn(ds.base, fq, K, ds.metric, mask))
                where = {"must": [{"key": f["key"], "match": f["value"]}]}
                r = serial_pass(system, fq, ftruth, where)
                out["filtered"].append({**f, **r})
                say(
                    f"  filter {f['key']}={f['value']!r} ({f['selectivity']:.2%}): recall@10 "
                    f"{r['recall_at_10']:.3f}, p50 {r['p50_ms']:.2f} ms, {r['qps']:,.0f} QPS"
                )
        if hasattr(system, "restart_to_ready_s"):
            out["restart_to_ready_s"] = system.restart_to_ready_s()
            say(f"  restart to ready: {out['restart_to_ready_s']:.2f} s")
    finally:
        system.stop()
    out["load_avg_at_end"] = list(os.getloadavg())
    return out


def run(ds: Dataset, cfg: BenchConfig, say=print) -> dict:
    workdir = Path(cfg.workdir) if cfg.workdir else Path(tempfile.mkdtemp(prefix="quartz-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        results = [bench_system(name, ds, cfg, workdir, say) for name in cfg.systems]
    finally:
        if not cfg.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "dataset": {
            "name": ds.name,
            "rows": len(ds.ids),
            "dim": ds.dim,
            "metric": ds.metric,
            "queries": len(ds.queries),
        },
        "parameters": {**asdict(cfg), "k": K, "recall_target": RECALL_TARGET, "batch_queries": BATCH_QUERIES},
        "systems": results,
    }
