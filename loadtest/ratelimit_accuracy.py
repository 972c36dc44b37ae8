"""How closely the shared rate limits hold (issue 14): the accepted rate of one hammered key
against its configured limit, with its clients on 1 router and spread over 2, and what the
hammering costs another tenant (its search latency, against a quiet baseline).

    .venv/bin/python loadtest/ratelimit_accuracy.py [--limit 200] [--clients 16] [--duration 10]

A real cluster (`LocalCluster`: etcd, a coordinator, 2 nodes, 2 routers, auth on). The admin key
creates two paid tenants: `hammer`, whose read-write key gets `read=<limit>/s:burst=<limit>`, and
`bystander`, with a 1-shard collection of 2,000 vectors. Each phase runs `--clients` threads
calling ListCollections with the hammer key as fast as they can (refusals are counted, never
retried) while one bystander thread searches (k=10) at its own pace. Accepted/s is measured over
the phase after its first second (the burst), so it compares with the rate, not burst + rate.
Prints a table and writes loadtest/results/ratelimit-<time>.json. A benchmark: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

HERE = Path(__file__).resolve().parents[1]
DIM = 64
WARMUP_S = 1.0  # the burst is spent in the first second: accepted/s is measured after it


def percentile(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p)) if xs else float("nan")


def phase(cluster, key: str, bystander, routers: int, clients: int, duration_s: float, query) -> dict:
    from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc

    stop = threading.Event()
    accepted: list[list[float]] = [[] for _ in range(clients)]
    refused = [0] * clients
    latencies_ms: list[float] = []
    md = (("authorization", f"Bearer {key}"),)

    def hammer(i: int) -> None:
        stub = quartz_pb2_grpc.QuartzStub(grpc.insecure_channel(cluster.routers[i % routers].address))
        req = quartz_pb2.ListCollectionsRequest()
        while not stop.is_set():
            try:
                stub.ListCollections(req, metadata=md, timeout=10)
                accepted[i].append(time.monotonic())
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                refused[i] += 1

    def calm() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            bystander.search("c", query, k=10)
            latencies_ms.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.02)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)] if clients else []
    threads.append(threading.Thread(target=calm))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(duration_s)
    stop.set()
    for t in threads:
        t.join()
    t_end = time.monotonic()
    after = [t for ts in accepted for t in ts if t >= t0 + WARMUP_S]
    return {
        "routers": routers,
        "clients": clients,
        "accepted_total": sum(len(ts) for ts in accepted),
        "accepted_per_s": round(len(after) / (t_end - t0 - WARMUP_S), 1),
        "refused_per_s": round(sum(refused) / (t_end - t0), 1),
        "bystander_searches": len(latencies_ms),
        "bystander_p50_ms": round(percentile(latencies_ms, 50), 2),
        "bystander_p99_ms": round(percentile(latencies_ms, 99), 2),
        "bystander_mean_ms": round(statistics.fmean(latencies_ms), 2) if latencies_ms else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=float, default=200.0, help="the hammered key's read limit per second")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    args = ap.parse_args()

    from quartz_cluster.client import QuartzClient
    from quartz_cluster.cluster import LocalCluster

    workdir = Path(tempfile.mkdtemp(prefix="quartz-ratelimit-"))
    cluster = LocalCluster(workdir, nodes=2, routers=2)
    cluster.start()
    try:
        admin = cluster.client(timeout=60)
        admin.create_tenant("hammer", plan="paid")
        key, _ = admin.create_key(
            tenant="hammer", role="read-write", rate_limits=[f"read={args.limit:g}/s:burst={args.limit:g}"]
        )
        admin.create_tenant("bystander", plan="paid")
        bkey, _ = admin.create_key(tenant="bystander", role="tenant-admin")
        bystander = QuartzClient(cluster.routers[1].address, api_key=bkey, timeout=30)
        bystander.create_collection("c", dim=DIM, shards=1, replication_factor=1)
        rng = np.random.default_rng(1)
        bystander.upsert("c", ids=[str(i) for i in range(2000)], vectors=rng.random((2000, DIM), dtype="f4"))
        query = rng.random(DIM, dtype="f4")
        rows = [phase(cluster, key, bystander, 1, 0, args.duration, query)]  # quiet baseline
        for routers in (1, 2):
            rows.append(phase(cluster, key, bystander, routers, args.clients, args.duration, query))
            time.sleep(2.0)  # the bucket refills: each phase starts from a full burst
    finally:
        cluster.kill()
    print(f"limit {args.limit:g}/s (burst {args.limit:g}); {args.clients} clients; {args.duration:g} s/phase")
    head = f"{'routers':>7} {'clients':>7} {'accepted/s':>11} {'vs limit':>9} {'refused/s':>10}"
    print(f"{head} {'bystander p50/p99 ms':>22}")
    for r in rows:
        vs = f"{100 * r['accepted_per_s'] / args.limit:.1f} %" if r["clients"] else "-"
        print(
            f"{r['routers']:>7} {r['clients']:>7} {r['accepted_per_s']:>11} {vs:>9} {r['refused_per_s']:>10} "
            f"{r['bystander_p50_ms']:>10} / {r['bystander_p99_ms']:<10}"
        )
    out = HERE / "loadtest" / "results" / f"ratelimit-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
