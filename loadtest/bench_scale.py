"""One QuartzDB node at scale: generated clustered 384-d sets of each size (default 100k and 1M),
each loaded into a fresh node. Per size: ingest rows/s, resident memory per vector (the node's
RSS growth / rows) and bytes on disk per vector, recall@10 / latency / single-client QPS over an
ef sweep, batched QPS and 8-client closed-loop QPS at the smallest ef reaching recall 0.95, and
restart-to-ready (graceful stop, then SIGKILL) with everything loaded.

    .venv/bin/python loadtest/bench_scale.py                        # 100k and 1M (about 25 min here)
    .venv/bin/python loadtest/bench_scale.py --rows 20000,50000     # a quick look

Writes loadtest/results/scale-<time>.json. A benchmark, not a test: nothing is asserted."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartz_cluster.bench.harness import RECALL_TARGET, closed_loop, serial_pass, truth_ids
from quartz_cluster.bench.machine import run_info
from quartz_cluster.bench.systems import QuartzNode
from quartz_cluster.datasets import generate_clustered

M, EF_CONSTRUCTION = 16, 200
EF_SWEEP = (32, 64, 128, 256)
LOAD_BATCH = 1000
QUERIES = 200
CLIENTS = 8
BATCH_QUERIES = 100


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_size(rows: int, dim: int, workdir: Path, duration_s: float) -> dict:
    t0 = time.perf_counter()
    ds = generate_clustered(rows, dim=dim, n_queries=QUERIES, clusters=256, seed=1)
    print(
        f"{rows:,} x {dim}: generated with exact ground truth in {time.perf_counter() - t0:.0f} s", flush=True
    )
    node = QuartzNode()
    node.start(workdir / f"n{rows}", dim, ds.metric, M, EF_CONSTRUCTION)
    out: dict = {"rows": rows, "dim": dim}
    try:
        rss0 = node.memory_bytes()
        t0 = time.perf_counter()
        for start in range(0, rows, 100_000):  # progress lines for the long runs
            end = min(start + 100_000, rows)
            node.ingest(ds.ids[start:end], ds.base[start:end], ds.payloads[start:end], LOAD_BATCH)
            print(f"  {end:,} rows, {end / (time.perf_counter() - t0):,.0f} rows/s", flush=True)
        ingest_s = time.perf_counter() - t0
        rss1 = node.memory_bytes()
        out["ingest_rows_per_s"] = rows / ingest_s
        out["rss_bytes"] = rss1
        out["memory_bytes_per_vector"] = (rss1 - rss0) / rows
        out["raw_vector_bytes"] = dim * 4
        truth = truth_ids(ds, ds.gt_ids)
        sweep = {}
        for ef in EF_SWEEP:
            node.set_ef(ef)
            sweep[str(ef)] = serial_pass(node, ds.queries, truth)
            s = sweep[str(ef)]
            print(
                f"  ef {ef}: recall@10 {s['recall_at_10']:.3f}, p50 {s['p50_ms']:.2f} ms, "
                f"{s['qps']:,.0f} QPS",
                flush=True,
            )
        out["ef_sweep"] = sweep
        reaching = [ef for ef in EF_SWEEP if sweep[str(ef)]["recall_at_10"] >= RECALL_TARGET]
        ef_star = min(reaching) if reaching else max(EF_SWEEP)
        node.set_ef(ef_star)
        out["operating_ef"] = ef_star
        t0 = time.perf_counter()
        for start in range(0, len(ds.queries), BATCH_QUERIES):
            node.search(ds.queries[start : start + BATCH_QUERIES], 10)
        out["batched_qps"] = len(ds.queries) / (time.perf_counter() - t0)
        out["closed_loop"] = closed_loop(node, ds.queries, CLIENTS, duration_s)
        print(
            f"  ef {ef_star}: batched {out['batched_qps']:,.0f} QPS; {CLIENTS} clients "
            f"{out['closed_loop']['qps']:,.0f} QPS",
            flush=True,
        )
        out["restart_to_ready_s"] = {"graceful": node.restart_to_ready_s()}
        node.client.upsert("bench", 0, ["after-restart"], ds.base[:1])  # a write past the checkpoint
        out["restart_to_ready_s"]["after_sigkill"] = node.restart_to_ready_s(kill=True)
        out["disk_bytes_per_vector"] = disk_bytes(workdir / f"n{rows}") / rows
        print(
            f"  memory {out['memory_bytes_per_vector']:,.0f} B/vector (raw {dim * 4} B), disk "
            f"{out['disk_bytes_per_vector']:,.0f} B/vector; restart to ready: graceful "
            f"{out['restart_to_ready_s']['graceful']:.1f} s, after SIGKILL "
            f"{out['restart_to_ready_s']['after_sigkill']:.1f} s",
            flush=True,
        )
    finally:
        node.stop()
        shutil.rmtree(workdir / f"n{rows}", ignore_errors=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="100000,1000000")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of the closed loop")
    ap.add_argument("--workdir", default=None, help="where the nodes keep data (default: a temp dir)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="quartz-scale-"))
    sizes = [bench_size(int(n), args.dim, workdir, args.duration) for n in args.rows.split(",")]
    result = {"benchmark": "scale", "m": M, "ef_construction": EF_CONSTRUCTION, **run_info(), "sizes": sizes}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"scale-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
