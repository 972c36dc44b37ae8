"""One storage node over gRPC next to in-process hnswlib (the limit), in one run, same data.

    .venv/bin/python loadtest/bench_node.py                 # ../shared/data pydocs (60k x 384)
    .venv/bin/python loadtest/bench_node.py --generated 100000 --dim 384

Reports ingest rows/s, search QPS single-query (serial and 4 client threads) and batched,
p50/p95/p99 latency, recall@10 vs exact ground truth, resident memory per vector, restart-to-
ready time (graceful and after SIGKILL), and write throughput with an fsync per batch vs group
commit. Writes loadtest/results/node-<time>.json. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import hnswlib
import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.common import percentiles_ms, run_info
from quartz_cluster.datasets import generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess

K = 10
M, EF_CONSTRUCTION, EF = 16, 200, 64
LOAD_BATCH = 1000
SEARCH_BATCH = 100


pct = percentiles_ms


def bench_hnswlib(ds, threads: int) -> dict:
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    index = hnswlib.Index(space=ds.metric, dim=ds.dim)
    index.init_index(max_elements=len(ds.base), M=M, ef_construction=EF_CONSTRUCTION)
    t0 = time.perf_counter()
    for start in range(0, len(ds.base), LOAD_BATCH):
        index.add_items(
            ds.base[start : start + LOAD_BATCH],
            np.arange(start, min(start + LOAD_BATCH, len(ds.base))),
            num_threads=threads,
        )
    ingest_s = time.perf_counter() - t0
    rss = proc.memory_info().rss - rss0
    index.set_ef(EF)
    lat, found = [], []
    for q in ds.queries:
        t = time.perf_counter()
        labels, _ = index.knn_query(q[None, :], k=K, num_threads=1)
        lat.append(time.perf_counter() - t)
        found.append(labels[0].tolist())
    t = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        index.knn_query(ds.queries, k=K, num_threads=threads)
    batched_s = (time.perf_counter() - t) / rounds
    return {
        "ingest_rows_per_s": len(ds.base) / ingest_s,
        "serial": {"qps": len(lat) / sum(lat), **pct(lat)},
        "batched_qps": len(ds.queries) / batched_s,
        "recall_at_10": recall_at_k(found, ds.gt_ids, K),
        "rss_bytes_per_vector": rss / len(ds.base),
    }


def _serial(client, coll, queries):
    lat, found = [], []
    for q in queries:
        t = time.perf_counter()
        hits = client.search(coll, 0, q, k=K)[0]
        lat.append(time.perf_counter() - t)
        found.append([h.id for h in hits])
    return lat, found


def bench_node(ds, workdir: Path, threads: int) -> dict:
    node = NodeProcess("bench", workdir / "bench", workdir / "bench.log", ["--threads", str(threads)])
    node.start()
    client = NodeClient(node.address, timeout_s=300)
    client.create_shard("bench", 0, ds.dim, ds.metric, m=M, ef_construction=EF_CONSTRUCTION, ef=EF)
    rss0 = psutil.Process(node.pid).memory_info().rss
    t0 = time.perf_counter()
    for start in range(0, len(ds.base), LOAD_BATCH):
        end = start + LOAD_BATCH
        client.upsert("bench", 0, ds.ids[start:end], ds.base[start:end], ds.payloads[start:end])
    ingest_s = time.perf_counter() - t0
    rss = psutil.Process(node.pid).memory_info().rss
    row_of = {pid: i for i, pid in enumerate(ds.ids)}

    client.search("bench", 0, ds.queries[:50], k=K)  # warm up
    lat, found = _serial(client, "bench", ds.queries)
    recall = recall_at_k([[row_of[i] for i in row] for row in found], ds.gt_ids, K)

    # 4 client threads, one channel each (the client's GIL is part of what this measures)
    clients = [NodeClient(node.address) for _ in range(4)]
    parts = np.array_split(np.arange(len(ds.queries)), 4)
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _serial(clients[i], "bench", ds.queries[parts[i]]), range(4)))
    conc_s = time.perf_counter() - t
    conc_lat = [x for r in results for x in r[0]]

    t = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for start in range(0, len(ds.queries), SEARCH_BATCH):
            client.search_raw("bench", 0, ds.queries[start : start + SEARCH_BATCH], k=K)
    batched_s = (time.perf_counter() - t) / rounds

    node.stop()
    t = time.perf_counter()
    node.start()
    graceful_restart_s = time.perf_counter() - t
    client.reconnect(node.address)
    client.upsert("bench", 0, ["after-restart"], ds.base[:1])  # one write past the checkpoint
    node.kill()
    t = time.perf_counter()
    node.start()
    crash_restart_s = time.perf_counter() - t
    client.reconnect(node.address)
    assert client.stats("bench", 0).count == len(ds.base) + 1
    node.stop()
    for c in clients:
        c.close()
    client.close()
    return {
        "ingest_rows_per_s": len(ds.base) / ingest_s,
        "serial": {"qps": len(lat) / sum(lat), **pct(lat)},
        "concurrent_4_threads": {"qps": len(ds.queries) / conc_s, **pct(conc_lat)},
        "batched_qps": len(ds.queries) / batched_s,
        "batch_size": SEARCH_BATCH,
        "recall_at_10": recall,
        "rss_bytes_per_vector": (rss - rss0) / len(ds.base),
        "restart_to_ready_s": {"graceful": graceful_restart_s, "after_sigkill": crash_restart_s},
    }


def bench_commit(
    mode: str, dim: int, workdir: Path, writers: int = 8, batches: int = 150, size: int = 10
) -> dict:
    node = NodeProcess(
        f"commit-{mode}", workdir / f"commit-{mode}", workdir / f"commit-{mode}.log", ["--commit-mode", mode]
    )
    node.start()
    setup = NodeClient(node.address)
    setup.create_shard("w", 0, dim, "cosine", m=M, ef_construction=EF_CONSTRUCTION)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(size, dim)).astype(np.float32)
    lat: list[float] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        c = NodeClient(node.address)
        for b in range(batches):
            t = time.perf_counter()
            c.upsert("w", 0, [f"{w}-{b}-{i}" for i in range(size)], vecs)
            with lock:
                lat.append(time.perf_counter() - t)
        c.close()

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(writers) as pool:
        list(pool.map(writer, range(writers)))
    total_s = time.perf_counter() - t
    setup.close()
    node.stop()
    n = writers * batches
    return {
        "mode": mode,
        "writers": writers,
        "batch_points": size,
        "batches_per_s": n / total_s,
        "points_per_s": n * size / total_s,
        **pct(lat),
    }


def fsync_cost_us(path: Path, rounds: int = 200) -> float:
    f = path / "fsync.probe"
    with open(f, "wb") as fh:
        t = time.perf_counter()
        for _ in range(rounds):
            fh.write(b"x" * 4096)
            fh.flush()
            os.fsync(fh.fileno())
        return (time.perf_counter() - t) / rounds * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--generated", type=int, default=0, help="use N generated clustered vectors instead")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--rows", type=int, default=None, help="first ROWS of the shared dataset")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    data_dir = shared_data_dir()
    if args.generated or data_dir is None:
        ds = generate_clustered(args.generated or 50_000, dim=args.dim, n_queries=1000, seed=1)
    else:
        ds = load_pydocs(data_dir, rows=args.rows, with_text=False)
    print(f"dataset {ds.name}: {len(ds.base)} x {ds.dim}, {len(ds.queries)} queries", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="quartz-bench-"))
    try:
        result = {
            "benchmark": "node",
            "dataset": ds.name,
            "rows": len(ds.base),
            "dim": ds.dim,
            "queries": len(ds.queries),
            "params": {
                "k": K,
                "m": M,
                "ef_construction": EF_CONSTRUCTION,
                "ef": EF,
                "threads": args.threads,
                "load_batch": LOAD_BATCH,
            },
            **run_info(),
        }
        print("in-process hnswlib ...", flush=True)
        result["hnswlib"] = bench_hnswlib(ds, args.threads)
        print("node over gRPC ...", flush=True)
        result["node"] = bench_node(ds, workdir, args.threads)
        print("commit modes ...", flush=True)
        result["fsync_us"] = fsync_cost_us(workdir)
        result["commit_modes"] = [bench_commit(m, ds.dim, workdir) for m in ("batch", "group")]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    out = Path(args.out) / f"node-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    h, n = result["hnswlib"], result["node"]
    print("\n| figure | in-process hnswlib | node over gRPC |\n|---|---|---|")
    print(f"| ingest rows/s | {h['ingest_rows_per_s']:,.0f} | {n['ingest_rows_per_s']:,.0f} |")
    print(f"| recall@10 (ef={EF}) | {h['recall_at_10']:.4f} | {n['recall_at_10']:.4f} |")
    print(f"| single-query QPS, 1 client | {h['serial']['qps']:,.0f} | {n['serial']['qps']:,.0f} |")
    for p in ("p50_ms", "p95_ms", "p99_ms"):
        print(f"| single-query {p} | {h['serial'][p]:.3f} | {n['serial'][p]:.3f} |")
    print(f"| single-query QPS, 4 client threads | - | {n['concurrent_4_threads']['qps']:,.0f} |")
    print(
        f"| batched QPS | {h['batched_qps']:,.0f} (all queries, 1 call) | {n['batched_qps']:,.0f} "
        f"(batches of {SEARCH_BATCH}) |"
    )
    print(f"| RSS per vector | {h['rss_bytes_per_vector']:,.0f} B | {n['rss_bytes_per_vector']:,.0f} B |")
    r = n["restart_to_ready_s"]
    print(
        f"| restart to ready | - | graceful {r['graceful']:.2f} s, after SIGKILL {r['after_sigkill']:.2f} s |"
    )
    print(f"\nfsync of 4 KiB: {result['fsync_us']:.0f} us")
    print("| commit mode | batches/s | points/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for c in result["commit_modes"]:
        print(
            f"| {c['mode']} | {c['batches_per_s']:,.0f} | {c['points_per_s']:,.0f} | {c['p50_ms']:.2f} | "
            f"{c['p99_ms']:.2f} |"
        )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
