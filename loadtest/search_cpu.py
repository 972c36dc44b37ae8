"""Server CPU per search on a fresh local cluster, serially (one client), with tracing on or off:
the check behind "what metrics and traces cost" in docs/BENCHMARKS.md.

    .venv/bin/python loadtest/search_cpu.py            # tracing off (no OTLP endpoint)
    .venv/bin/python loadtest/search_cpu.py --otlp     # every process exports to a sink here
    # the A/B: rounds of (BEFORE, after, after + tracing), interleaved, each run a fresh cluster
    .venv/bin/python loadtest/search_cpu.py --before /tmp/quartz-pre16 --rounds 6

3 nodes, 3 shards x RF 2, 6,000 random 384-d vectors, 200 warm-up searches, then 3,000 searches
(k 10) through the SDK with the admin key; prints searches/s and the CPU the router and nodes used
per search (from /proc, via psutil). Interleave runs of the variants: the machine drifts. A
benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from quartz_cluster.cluster import LocalCluster

VECTORS, WARMUP, SEARCHES, DIM = 6000, 200, 3000, 384


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--otlp", action="store_true", help="tracing on: an OTLP sink in this process")
    p.add_argument("--before", type=Path, help="A/B mode: the checkout to compare with (a git worktree)")
    p.add_argument("--rounds", type=int, default=6, help="A/B mode: rounds of the three variants")
    p.add_argument("--out", type=Path, help="A/B mode: write every run and the summary here (JSON)")
    args = p.parse_args()
    if args.before is not None:
        if args.rounds < 2:
            p.error("--rounds must be at least 2 (the interval needs a spread)")
        compare(args.before, args.rounds, args.out)
        return
    received = None
    if args.otlp:
        from ab_cluster import otlp_sink  # loadtest/ab_cluster.py

        _, endpoint, received = otlp_sink()
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint  # inherited by every cluster process
    rng = np.random.default_rng(1)
    with LocalCluster(tempfile.mkdtemp(prefix="quartz-cpu-"), nodes=3) as cluster:
        client = cluster.client(timeout=30)
        client.create_collection("x", dim=DIM, shards=3, replication_factor=2)
        vectors = rng.standard_normal((VECTORS, DIM)).astype(np.float32)
        for at in range(0, VECTORS, 1000):
            client.upsert("x", [str(i) for i in range(at, at + 1000)], vectors[at : at + 1000])
        queries = rng.standard_normal((SEARCHES, DIM)).astype(np.float32)
        for q in queries[:WARMUP]:
            client.search("x", q, k=10)
        procs = {p.name: psutil.Process(p.pid) for p in cluster.processes() if p.role in ("router", "node")}
        before = {n: sum(p.cpu_times()[:2]) for n, p in procs.items()}
        t0 = time.perf_counter()
        for q in queries:
            client.search("x", q, k=10)
        elapsed = time.perf_counter() - t0
        used = {n: sum(p.cpu_times()[:2]) - before[n] for n, p in procs.items()}
    out = {
        "tracing": args.otlp,
        "searches_per_s": round(SEARCHES / elapsed, 1),
        "server_cpu_ms_per_search": round(sum(used.values()) / SEARCHES * 1000, 3),
        "per_process_ms": {n: round(v / SEARCHES * 1000, 3) for n, v in used.items()},
        "spans_received": received["spans"] if received else None,
    }
    print(json.dumps(out))


def compare(before: Path, rounds: int, out: Path | None) -> None:
    """Rounds of three runs, each in a fresh process and cluster, in a rotating order: `before`
    (its own code, this script), this checkout, this checkout with tracing to a sink. Prints each
    variant's server CPU per search and each variant's mean against `before`'s with a 95 %
    confidence interval (Welch, normal approximation: a rough bound, not a test)."""
    here = Path(__file__).resolve()
    this = here.parent.parent
    variants = {
        "before": (before.resolve(), []),
        "after": (this, []),
        "after+tracing": (this, ["--otlp"]),
    }
    names = list(variants)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % 3 :] + names[: r % 3]  # each variant goes first, second and third in turn
        for name in order:
            root, extra = variants[name]
            env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{here.parent}")
            line = (
                subprocess.run(
                    [sys.executable, str(here), *extra],
                    cwd=root,
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            runs[name].append(json.loads(line))
            print(f"round {r + 1} {name:14s} {line}", flush=True)
    summary = {}
    base = [x["server_cpu_ms_per_search"] for x in runs["before"]]
    for name in names:
        cpu = [x["server_cpu_ms_per_search"] for x in runs[name]]
        rate = [x["searches_per_s"] for x in runs[name]]
        diff = statistics.fmean(cpu) - statistics.fmean(base)
        half = 1.96 * (statistics.variance(cpu) / len(cpu) + statistics.variance(base) / len(base)) ** 0.5
        summary[name] = {
            "cpu_ms_per_search_mean": round(statistics.fmean(cpu), 3),
            "cpu_ms_per_search_sd": round(statistics.stdev(cpu), 3),
            "searches_per_s_mean": round(statistics.fmean(rate), 1),
            "vs_before_pct": round(100 * diff / statistics.fmean(base), 2),
            "vs_before_ci95_pct": [
                round(100 * (diff - half) / statistics.fmean(base), 2),
                round(100 * (diff + half) / statistics.fmean(base), 2),
            ],
        }
        print(f"{name:14s} {json.dumps(summary[name])}", flush=True)
    if out is not None:
        out.write_text(json.dumps({"rounds": rounds, "runs": runs, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
