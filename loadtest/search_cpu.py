"""Server CPU per search on a fresh local cluster, serially (one client), with tracing on or off:
the check behind "what metrics and traces cost" in docs/BENCHMARKS.md.

    .venv/bin/python loadtest/search_cpu.py            # tracing off (no OTLP endpoint)
    .venv/bin/python loadtest/search_cpu.py --otlp     # every process exports to a sink here
    cd /tmp/quartz-pre16 && PYTHONPATH=$PWD /work/main/.venv/bin/python /work/main/loadtest/search_cpu.py

3 nodes, 3 shards x RF 2, 6,000 random 384-d vectors, 200 warm-up searches, then 3,000 searches
(k 10) through the SDK with the admin key; prints searches/s and the CPU the router and nodes used
per search (from /proc, via psutil). Interleave runs of the variants: the machine drifts. A
benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import psutil

from quartz_cluster.cluster import LocalCluster

VECTORS, WARMUP, SEARCHES, DIM = 6000, 200, 3000, 384


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--otlp", action="store_true", help="tracing on: an OTLP sink in this process")
    args = p.parse_args()
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


if __name__ == "__main__":
    main()
