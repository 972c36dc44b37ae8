"""A cluster through the router next to one node over gRPC and in-process hnswlib (the limit),
in one run, same data.

    .venv/bin/python loadtest/bench_cluster.py                  # ../shared/data pydocs (60k x 384)
    .venv/bin/python loadtest/bench_cluster.py --generated 50000 --duration 8

The cluster is LocalCluster: etcd, a coordinator, 3 nodes and a router, all real processes on
this machine; its collection has 4 shards, replication factor 1. Reports per system: ingest
rows/s (batches of 1,000; node and cluster also store payloads), recall@10 vs exact ground truth
at ef=64, and closed-loop single-query QPS with p50/p99 latency at 1, 4 and 16 concurrent
clients. Node and cluster clients are separate processes (spawned, one client each, so the
client's GIL is not the limit); hnswlib clients are threads (knn_query releases the GIL).
Writes loadtest/results/cluster-<time>.json. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.common import percentiles_ms, run_info
from quartz_cluster import QuartzClient
from quartz_cluster.bench.clients import run_processes
from quartz_cluster.cluster import LocalCluster
from quartz_cluster.datasets import generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess

K = 10
M, EF_CONSTRUCTION, EF = 16, 200, 64
LOAD_BATCH = 1000
RECALL_BATCH = 100
SHARDS, REPLICATION = 4, 1
CLUSTER_NODES = 3
CLIENTS = (1, 4, 16)
WARMUP_CALLS = 20
HNSW_THREADS = 2
COLLECTION = "bench"
START_TIMEOUT_S = 120.0


# --- closed-loop clients -------------------------------------------------------------------------


def _searcher(
    kind: str, address: str, api_key: str | None
) -> tuple[Callable[[np.ndarray], object], Callable[[], None]]:
    """One client of `kind` ('node': a standalone node; 'cluster': the router, with the cluster's
    API key): (search one query, close)."""
    if kind == "node":
        node = NodeClient(address)
        return lambda q: node.search(COLLECTION, 0, q, k=K, ef=EF), node.close
    cluster = QuartzClient(address, api_key=api_key)
    return lambda q: cluster.search(COLLECTION, q, k=K, ef=EF, with_payload=False), cluster.close


def _loop(search: Callable[[np.ndarray], object], queries: np.ndarray, duration_s: float) -> tuple:
    """Issue one search at a time over `queries` (wrapping around) for `duration_s`.
    Returns (start, end, latencies in seconds); perf_counter is system-wide on Linux."""
    lat = []
    start = time.perf_counter()
    stop_at = start + duration_s
    i = 0
    while (t := time.perf_counter()) < stop_at:
        search(queries[i % len(queries)])
        lat.append(time.perf_counter() - t)
        i += 1
    return start, time.perf_counter(), lat


def _client_process(kind, address, api_key, queries, duration_s, barrier, results) -> None:
    """Body of one spawned client process: connect, warm up, wait for the others, measure."""
    try:
        search, close = _searcher(kind, address, api_key)
        for i in range(WARMUP_CALLS):
            search(queries[i % len(queries)])
        barrier.wait(timeout=START_TIMEOUT_S)
        results.put(("ok", _loop(search, queries, duration_s)))
        close()
    except BaseException as exc:  # reported to the parent as text: gRPC errors do not pickle
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def closed_loop_processes(
    kind: str, address: str, queries: np.ndarray, clients: int, duration_s: float, api_key: str | None = None
):
    parts = np.array_split(queries, clients)
    out = run_processes(
        _client_process,
        [(kind, address, api_key, p, duration_s) for p in parts],
        START_TIMEOUT_S + duration_s + 60,
        kind,
    )
    return summarize(out, clients)


def closed_loop_threads(index: hnswlib.Index, queries: np.ndarray, clients: int, duration_s: float):
    barrier = threading.Barrier(clients)
    out: list[tuple] = []
    lock = threading.Lock()

    def search(q: np.ndarray) -> object:
        return index.knn_query(q[None, :], k=K, num_threads=1)

    def client(part: np.ndarray) -> None:
        for i in range(WARMUP_CALLS):
            search(part[i % len(part)])
        barrier.wait()
        r = _loop(search, part, duration_s)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=client, args=(p,)) for p in np.array_split(queries, clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(out, clients)


def summarize(results: list[tuple], clients: int) -> dict:
    wall_s = max(r[1] for r in results) - min(r[0] for r in results)
    lat_ms = np.concatenate([np.asarray(r[2]) for r in results]) * 1000
    return {
        "clients": clients,
        "calls": len(lat_ms),
        "wall_s": wall_s,
        "qps": len(lat_ms) / wall_s,
        **percentiles_ms(lat_ms / 1000),
    }


def concurrency(run: Callable[[int], dict], label: str) -> dict[str, dict]:
    out = {}
    for n in CLIENTS:
        r = out[str(n)] = run(n)
        print(f"  {label}, {n:>2} client(s): {r['qps']:,.0f} QPS, p50 {r['p50_ms']:.2f} ms", flush=True)
    return out


# --- the three systems ---------------------------------------------------------------------------


def bench_hnswlib(ds, duration_s: float) -> dict:
    index = hnswlib.Index(space=ds.metric, dim=ds.dim)
    index.init_index(max_elements=len(ds.base), M=M, ef_construction=EF_CONSTRUCTION)
    t0 = time.perf_counter()
    for start in range(0, len(ds.base), LOAD_BATCH):
        end = min(start + LOAD_BATCH, len(ds.base))
        index.add_items(ds.base[start:end], np.arange(start, end), num_threads=HNSW_THREADS)
    ingest_s = time.perf_counter() - t0
    index.set_ef(EF)
    labels, _ = index.knn_query(ds.queries, k=K, num_threads=HNSW_THREADS)
    return {
        "ingest_rows_per_s": len(ds.base) / ingest_s,
        "count": index.get_current_count(),
        "recall_at_10": recall_at_k(labels.tolist(), ds.gt_ids, K),
        "single_query": concurrency(
            lambda n: closed_loop_threads(index, ds.queries, n, duration_s), "hnswlib"
        ),
    }


def recall_by_batches(search: Callable[[np.ndarray], list], ds) -> float:
    row_of = {pid: i for i, pid in enumerate(ds.ids)}
    found = []
    for start in range(0, len(ds.queries), RECALL_BATCH):
        found += [[row_of[h.id] for h in hits] for hits in search(ds.queries[start : start + RECALL_BATCH])]
    return recall_at_k(found, ds.gt_ids, K)


def bench_node(ds, workdir: Path, duration_s: float) -> dict:
    node = NodeProcess("bench", workdir / "node", workdir / "node.log", ["--threads", str(HNSW_THREADS)])
    try:
        node.start()
        with NodeClient(node.address, timeout_s=300) as client:
            client.create_shard(COLLECTION, 0, ds.dim, ds.metric, m=M, ef_construction=EF_CONSTRUCTION, ef=EF)
            t0 = time.perf_counter()
            for start in range(0, len(ds.base), LOAD_BATCH):
                end = start + LOAD_BATCH
                client.upsert(COLLECTION, 0, ds.ids[start:end], ds.base[start:end], ds.payloads[start:end])
            ingest_s = time.perf_counter() - t0
            count = client.stats(COLLECTION, 0).count
            recall = recall_by_batches(lambda q: client.search(COLLECTION, 0, q, k=K, ef=EF), ds)
        single = concurrency(
            lambda n: closed_loop_processes("node", node.address, ds.queries, n, duration_s), "node"
        )
    finally:
        try:
            node.stop()
        except BaseException:
            node.kill()
            raise
    return {
        "ingest_rows_per_s": len(ds.base) / ingest_s,
        "count": count,
        "recall_at_10": recall,
        "single_query": single,
    }


def bench_cluster(ds, workdir: Path, duration_s: float) -> dict:
    cluster = LocalCluster(workdir / "cluster", nodes=CLUSTER_NODES)
    try:
        cluster.start()
        address, key = cluster.router_address, cluster.admin_key
        with QuartzClient(address, api_key=key, timeout=120) as client:
            info = client.create_collection(
                COLLECTION,
                dim=ds.dim,
                metric=ds.metric,
                shards=SHARDS,
                replication_factor=REPLICATION,
                m=M,
                ef_construction=EF_CONSTRUCTION,
                ef=EF,
                wait=True,
            )
            t0 = time.perf_counter()
            for start in range(0, len(ds.base), LOAD_BATCH):
                end = start + LOAD_BATCH
                client.upsert(COLLECTION, ds.ids[start:end], ds.base[start:end], ds.payloads[start:end])
            ingest_s = time.perf_counter() - t0
            count = client.count(COLLECTION)
            recall = recall_by_batches(
                lambda q: client.search(COLLECTION, q, k=K, ef=EF, with_payload=False), ds
            )
        single = concurrency(
            lambda n: closed_loop_processes("cluster", address, ds.queries, n, duration_s, key), "cluster"
        )
    finally:
        try:
            cluster.stop()
        except BaseException:
            cluster.kill()
            raise
    return {
        "ingest_rows_per_s": len(ds.base) / ingest_s,
        "count": count,
        "recall_at_10": recall,
        "single_query": single,
        "placement": {str(s["shard"]): s["replicas"] for s in info.shard_map},
    }


# --- main ----------------------------------------------------------------------------------------


def print_table(result: dict) -> None:
    systems = [result["hnswlib"], result["node"], result["cluster"]]

    def row(label: str, cells: list[str]) -> None:
        print(f"| {label} | {' | '.join(cells)} |")

    print("\n| figure | in-process hnswlib | one node over gRPC | cluster via router |\n|---|---|---|---|")
    row("ingest rows/s", [f"{s['ingest_rows_per_s']:,.0f}" for s in systems])
    row(f"recall@10 (ef={EF})", [f"{s['recall_at_10']:.4f}" for s in systems])
    for n in CLIENTS:
        runs = [s["single_query"][str(n)] for s in systems]
        clients = f"{n} client{'s' if n > 1 else ''}"
        row(f"QPS, {clients}", [f"{r['qps']:,.0f}" for r in runs])
        row(f"p50 ms, {clients}", [f"{r['p50_ms']:.2f}" for r in runs])
        row(f"p99 ms, {clients}", [f"{r['p99_ms']:.2f}" for r in runs])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generated", type=int, default=0, help="use N generated clustered vectors instead")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per closed-loop run")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    data_dir = shared_data_dir()
    if args.generated or data_dir is None:
        ds = generate_clustered(args.generated or 50_000, dim=384, n_queries=1000, seed=1)
    else:
        ds = load_pydocs(data_dir, with_text=False)
    print(f"dataset {ds.name}: {len(ds.base)} x {ds.dim}, {len(ds.queries)} queries", flush=True)
    result = {
        "benchmark": "cluster",
        "dataset": ds.name,
        "rows": len(ds.base),
        "dim": ds.dim,
        "queries": len(ds.queries),
        "params": {
            "k": K,
            "m": M,
            "ef_construction": EF_CONSTRUCTION,
            "ef": EF,
            "load_batch": LOAD_BATCH,
            "hnswlib_threads": HNSW_THREADS,
            "cluster": {"nodes": CLUSTER_NODES, "shards": SHARDS, "replication_factor": REPLICATION},
            "clients": list(CLIENTS),
            "duration_s": args.duration,
            "warmup_calls": WARMUP_CALLS,
            "clients_are": {
                "hnswlib": "threads",
                "node": "processes (spawn)",
                "cluster": "processes (spawn)",
            },
        },
        **run_info(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="quartz-bench-cluster-"))
    try:
        print("in-process hnswlib ...", flush=True)
        result["hnswlib"] = bench_hnswlib(ds, args.duration)
        print("one node over gRPC ...", flush=True)
        result["node"] = bench_node(ds, workdir, args.duration)
        print(f"cluster ({CLUSTER_NODES} nodes, {SHARDS} shards x {REPLICATION}) via router ...", flush=True)
        result["cluster"] = bench_cluster(ds, workdir, args.duration)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    for name in ("hnswlib", "node", "cluster"):
        if result[name]["count"] != len(ds.base):
            print(f"WARNING: {name} holds {result[name]['count']} points, expected {len(ds.base)}")
    os.makedirs(args.out, exist_ok=True)
    out = Path(args.out) / f"cluster-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print_table(result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
