"""What replication costs and how fast a shard fails over, on a real local cluster.

    .venv/bin/python loadtest/bench_replication.py                 # ../shared/data pydocs, 20k rows
    .venv/bin/python loadtest/bench_replication.py --rows 60000 --duration 8 --failover-runs 20

Options: --rows N (rows loaded per run, default 20,000), --duration S (seconds per closed-loop
search run, default 5), --failover-runs R (default 10), --generated (use generated clustered
vectors even when the shared dataset exists), --out DIR (default loadtest/results).

The cluster is LocalCluster: etcd, a coordinator, 3 nodes and a router, all real processes on
this machine, started once for the whole run. Reports:

1. Writes, per replication factor 1, 2, 3 and write consistency one / majority / all (for RF 1
   the three are the same and run once): ingest rows/s loading ROWS rows in batches of 500 from
   4 client processes (spawned, one QuartzClient each), and p50/p99 latency of the upserts.
   Every (RF, consistency) run loads into a fresh collection (dim 384, cosine, 2 shards, m=16,
   ef_construction=200, ef=64) so each starts from an empty index and the searched collection
   holds every vector once; ids are prefixed with the consistency name.
2. Searches, per replication factor, on the collection of its last write run: closed-loop
   single-query QPS with 4 client processes and p50/p99 latency, with read consistency eventual
   (any in-sync replica) and strong (the primary), and recall@10 vs exact ground truth.
3. Failover, FAILOVER_RUNS times on one collection (RF 3, 1 shard, dim 8) reused for all runs:
   a writer thread does majority upserts of 10 points in a tight loop (QuartzClient timeout 30 s);
   the shard's primary is SIGKILLed; the figure is the seconds from the kill to the
   acknowledgement of the first upsert that started after the kill and succeeded. The node is
   restarted and the run waits until all 3 replicas are in sync again. Node lease TTL: the
   LocalCluster default (3 s).

Writes loadtest/results/replication-<time>.json. A benchmark, not a test: nothing is asserted.
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
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loadtest.common import percentiles_ms, run_info
from quartz_cluster import QuartzClient
from quartz_cluster.bench.clients import run_processes
from quartz_cluster.cluster import LocalCluster
from quartz_cluster.datasets import generate_clustered, load_pydocs, recall_at_k, shared_data_dir

K = 10
M, EF_CONSTRUCTION, EF = 16, 200, 64
SHARDS = 2
CLUSTER_NODES = 3
REPLICATION_FACTORS = (1, 2, 3)
WRITE_CONSISTENCIES = ("one", "majority", "all")
READ_CONSISTENCIES = ("eventual", "strong")
LOAD_BATCH = 500
WRITERS = 4
SEARCH_CLIENTS = 4
RECALL_BATCH = 100
WARMUP_CALLS = 20
START_TIMEOUT_S = 120.0
CLIENT_TIMEOUT_S = 120.0

FAILOVER_COLLECTION = "failover"
FAILOVER_DIM = 8
FAILOVER_BATCH = 10
FAILOVER_CLIENT_TIMEOUT_S = 30.0
FAILOVER_WRITES_BEFORE_KILL = 5
FAILOVER_WAIT_S = 90.0
RESYNC_WAIT_S = 120.0


pct = percentiles_ms


# --- client processes ----------------------------------------------------------------------------


def _ingest_body(address, api_key, collection, ids, vectors, payloads, consistency) -> tuple:
    """Load one slice in batches of LOAD_BATCH. Returns (start, end, latencies in seconds)."""
    lat = []
    with QuartzClient(address, api_key=api_key, timeout=CLIENT_TIMEOUT_S) as client:
        start = time.perf_counter()
        for s in range(0, len(ids), LOAD_BATCH):
            t = time.perf_counter()
            client.upsert(
                collection,
                ids[s : s + LOAD_BATCH],
                vectors[s : s + LOAD_BATCH],
                payloads[s : s + LOAD_BATCH],
                write_consistency=consistency,
            )
            lat.append(time.perf_counter() - t)
        return start, time.perf_counter(), lat


def _search_body(address, api_key, collection, queries, consistency, duration_s, barrier) -> tuple:
    """Closed loop: one search at a time over `queries` (wrapping) for `duration_s`."""
    with QuartzClient(address, api_key=api_key, timeout=CLIENT_TIMEOUT_S) as client:

        def search(q):
            return client.search(collection, q, k=K, ef=EF, consistency=consistency, with_payload=False)

        for i in range(WARMUP_CALLS):
            search(queries[i % len(queries)])
        barrier.wait(timeout=START_TIMEOUT_S)
        lat = []
        start = time.perf_counter()
        stop_at = start + duration_s
        i = 0
        while (t := time.perf_counter()) < stop_at:
            search(queries[i % len(queries)])
            lat.append(time.perf_counter() - t)
            i += 1
        return start, time.perf_counter(), lat


def _client_process(kind, args, barrier, results) -> None:
    """Body of one spawned client: ingest waits at the barrier before loading, search after its
    warm-up. Results go to the parent as ("ok", ...) or ("error", text): gRPC errors do not pickle."""
    try:
        if kind == "ingest":
            barrier.wait(timeout=START_TIMEOUT_S)
            results.put(("ok", _ingest_body(*args)))
        else:
            results.put(("ok", _search_body(*args, barrier)))
    except BaseException as exc:
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def run_clients(kind: str, per_client_args: list[tuple], timeout_s: float) -> list[tuple]:
    return run_processes(
        _client_process, [(kind, a) for a in per_client_args], START_TIMEOUT_S + timeout_s, kind
    )


def summarize(results: list[tuple], rows: int | None = None) -> dict:
    wall_s = max(r[1] for r in results) - min(r[0] for r in results)
    lat = np.concatenate([np.asarray(r[2]) for r in results])
    out = {"calls": len(lat), "wall_s": wall_s}
    if rows is not None:
        out["ingest_rows_per_s"] = rows / wall_s
    else:
        out["qps"] = len(lat) / wall_s
    return {**out, **pct(lat)}


# --- writes and searches -------------------------------------------------------------------------


def create(client: QuartzClient, name: str, dim: int, metric: str, shards: int, rf: int) -> None:
    client.create_collection(
        name,
        dim=dim,
        metric=metric,
        shards=shards,
        replication_factor=rf,
        m=M,
        ef_construction=EF_CONSTRUCTION,
        ef=EF,
        wait=True,
    )


def bench_write(
    client: QuartzClient, address: str, api_key: str | None, ds, rf: int, consistency: str
) -> tuple[dict, str]:
    name = f"rf{rf}-{consistency}"
    create(client, name, ds.dim, ds.metric, SHARDS, rf)
    ids = [f"{consistency}-{pid}" for pid in ds.ids]
    slices = np.array_split(np.arange(len(ids)), WRITERS)
    args = [
        (
            address,
            api_key,
            name,
            ids[s[0] : s[-1] + 1],
            ds.base[s[0] : s[-1] + 1],
            ds.payloads[s[0] : s[-1] + 1],
            consistency,
        )
        for s in slices
        if len(s)
    ]
    r = summarize(run_clients("ingest", args, timeout_s=3600), rows=len(ids))
    r["count"] = client.count(name)
    print(
        f"  RF {rf}, write {consistency:>8}: {r['ingest_rows_per_s']:,.0f} rows/s, "
        f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms",
        flush=True,
    )
    return {"rf": rf, "write_consistency": consistency, **r}, name


def recall(client: QuartzClient, name: str, ds, prefix: str, consistency: str) -> float:
    row_of = {f"{prefix}-{pid}": i for i, pid in enumerate(ds.ids)}
    found = []
    for s in range(0, len(ds.queries), RECALL_BATCH):
        hits = client.search(
            name, ds.queries[s : s + RECALL_BATCH], k=K, ef=EF, consistency=consistency, with_payload=False
        )
        found += [[row_of[h.id] for h in row] for row in hits]
    return recall_at_k(found, ds.gt_ids, K)


def bench_search(
    client: QuartzClient,
    address: str,
    api_key: str | None,
    ds,
    rf: int,
    name: str,
    prefix: str,
    duration_s: float,
) -> list[dict]:
    out = []
    for consistency in READ_CONSISTENCIES:
        parts = np.array_split(ds.queries, SEARCH_CLIENTS)
        args = [(address, api_key, name, part, consistency, duration_s) for part in parts]
        r = summarize(run_clients("search", args, timeout_s=duration_s + 60))
        r["recall_at_10"] = recall(client, name, ds, prefix, consistency)
        print(
            f"  RF {rf}, read {consistency:>8}: {r['qps']:,.0f} QPS, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, recall@10 {r['recall_at_10']:.4f}",
            flush=True,
        )
        out.append({"rf": rf, "read_consistency": consistency, "clients": SEARCH_CLIENTS, **r})
    return out


def bench_writes_and_searches(cluster: LocalCluster, ds, duration_s: float) -> tuple[list[dict], list[dict]]:
    address, key = cluster.router_address, cluster.admin_key  # clients use the cluster's admin key
    writes, searches = [], []
    with QuartzClient(address, api_key=key, timeout=CLIENT_TIMEOUT_S) as client:
        for rf in REPLICATION_FACTORS:
            modes = ("majority",) if rf == 1 else WRITE_CONSISTENCIES
            names = []
            for consistency in modes:
                r, name = bench_write(client, address, key, ds, rf, consistency)
                if rf == 1:
                    r["same_as"] = list(WRITE_CONSISTENCIES)  # one = majority = all at RF 1
                writes.append(r)
                names.append((name, consistency))
            for name, _ in names[:-1]:
                client.drop_collection(name)
            name, prefix = names[-1]
            searches += bench_search(client, address, key, ds, rf, name, prefix, duration_s)
            client.drop_collection(name)
    return writes, searches


# --- failover ------------------------------------------------------------------------------------


class Writer(threading.Thread):
    """Majority upserts of FAILOVER_BATCH random points in a tight loop; records every attempt as
    (start, end, ok, error) on time.monotonic()."""

    def __init__(self, address: str, api_key: str | None, prefix: str) -> None:
        super().__init__(daemon=True)
        self.client = QuartzClient(address, api_key=api_key, timeout=FAILOVER_CLIENT_TIMEOUT_S)
        self.prefix = prefix
        self.attempts: list[tuple[float, float, bool, str]] = []
        self.halt = threading.Event()
        self.rng = np.random.default_rng(0)

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            ids = [f"{self.prefix}-{i}-{j}" for j in range(FAILOVER_BATCH)]
            vecs = self.rng.normal(size=(FAILOVER_BATCH, FAILOVER_DIM)).astype(np.float32)
            t = time.monotonic()
            try:
                self.client.upsert(FAILOVER_COLLECTION, ids, vecs, write_consistency="majority")
            except Exception as exc:
                self.attempts.append((t, time.monotonic(), False, type(exc).__name__))
            else:
                self.attempts.append((t, time.monotonic(), True, ""))
            i += 1

    def successes(self) -> int:
        return sum(1 for a in list(self.attempts) if a[2])

    def first_success_after(self, t0: float) -> tuple | None:
        return next((a for a in list(self.attempts) if a[0] > t0 and a[2]), None)

    def stop(self) -> None:
        self.halt.set()
        self.join(FAILOVER_CLIENT_TIMEOUT_S + 30)
        self.client.close()


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def failover_run(cluster: LocalCluster, client: QuartzClient, run: int) -> dict:
    writer = Writer(cluster.router_address, cluster.admin_key, f"r{run}")
    writer.start()
    try:
        wait_for(
            lambda: writer.successes() >= FAILOVER_WRITES_BEFORE_KILL, 60, "writes before the kill", 0.01
        )
        before = client.describe_collection(FAILOVER_COLLECTION).shard_map[0]
        victim = next(n for n in cluster.nodes if n.name == before["primary"])
        killed_at = time.monotonic()
        victim.kill()
        deadline = killed_at + FAILOVER_WAIT_S
        while (first := writer.first_success_after(killed_at)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        writer.stop()
    after = client.describe_collection(FAILOVER_COLLECTION).shard_map[0]
    after_kill = [a for a in writer.attempts if a[0] > killed_at]
    failed = [a for a in after_kill if not a[2]]
    restarted_at = time.monotonic()
    victim.start()
    wait_for(
        lambda: len(client.describe_collection(FAILOVER_COLLECTION).shard_map[0]["in_sync"]) == CLUSTER_NODES,
        RESYNC_WAIT_S,
        f"{victim.name} back in sync",
        0.2,
    )
    r = {
        "run": run,
        "killed": before["primary"],
        "epoch_before": before["epoch"],
        "new_primary": after["primary"],
        "epoch_after": after["epoch"],
        "failover_s": (first[1] - killed_at) if first else None,
        "first_ok_attempt_started_s": (first[0] - killed_at) if first else None,
        "in_sync_before_restart": after["in_sync"],
        "failed_attempts_after_kill": len(failed),
        "failed_attempt_errors": sorted({a[3] for a in failed}),
        "writes_acked": writer.successes(),
        "restart_to_in_sync_s": time.monotonic() - restarted_at,
    }
    shown = f"{r['failover_s']:.2f} s" if first else f"no success within {FAILOVER_WAIT_S:.0f} s"
    print(
        f"  run {run + 1}: killed {r['killed']} -> {r['new_primary']}, failover {shown}, "
        f"{len(failed)} failed attempt(s), back in sync {r['restart_to_in_sync_s']:.1f} s after restart",
        flush=True,
    )
    return r


def bench_failover(cluster: LocalCluster, runs: int) -> dict:
    with cluster.client(timeout=CLIENT_TIMEOUT_S) as client:
        create(client, FAILOVER_COLLECTION, FAILOVER_DIM, "cosine", 1, CLUSTER_NODES)
        detail = [failover_run(cluster, client, run) for run in range(runs)]
        client.drop_collection(FAILOVER_COLLECTION)
    samples = [d["failover_s"] for d in detail if d["failover_s"] is not None]
    return {
        "lease_ttl_s": cluster.lease_ttl_s,
        "runs": runs,
        "completed": len(samples),
        "samples_s": samples,
        "median_s": float(np.median(samples)) if samples else None,
        "min_s": min(samples) if samples else None,
        "max_s": max(samples) if samples else None,
        "detail": detail,
    }


# --- main ----------------------------------------------------------------------------------------


def fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_table(result: dict) -> None:
    f = result["figures"]
    print(
        "\n| RF | write consistency | ingest rows/s | upsert p50 ms | upsert p99 ms |\n|---|---|---|---|---|"
    )
    for w in f["writes"]:
        mode = " = ".join(w["same_as"]) if "same_as" in w else w["write_consistency"]
        print(
            f"| {w['rf']} | {mode} | {w['ingest_rows_per_s']:,.0f} | {w['p50_ms']:.1f} | {w['p99_ms']:.1f} |"
        )
    print(
        f"\n| RF | read consistency | QPS, {SEARCH_CLIENTS} clients | p50 ms | p99 ms | recall@10 (ef={EF}) |"
        "\n|---|---|---|---|---|---|"
    )
    for s in f["searches"]:
        print(
            f"| {s['rf']} | {s['read_consistency']} | {s['qps']:,.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['recall_at_10']:.4f} |"
        )
    fo = f["failover"]
    print("\n| failover (SIGKILL primary, RF 3, majority writes) | value |\n|---|---|")
    print(f"| node lease TTL | {fo['lease_ttl_s']} s |")
    print(f"| runs completed | {fo['completed']} of {fo['runs']} |")
    print(f"| median s | {fmt_s(fo['median_s'])} |")
    print(f"| min s | {fmt_s(fo['min_s'])} |")
    print(f"| max s | {fmt_s(fo['max_s'])} |")
    print(f"| samples s | {', '.join(f'{x:.2f}' for x in fo['samples_s'])} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000, help="rows loaded per write run")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop search run")
    ap.add_argument("--failover-runs", type=int, default=10)
    ap.add_argument("--generated", action="store_true", help="generated clustered vectors, not pydocs")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()

    data_dir = shared_data_dir()
    if args.generated or data_dir is None:
        ds = generate_clustered(args.rows, dim=384, n_queries=1000, seed=1)
    else:
        ds = load_pydocs(data_dir, rows=args.rows, with_text=False)
    print(f"dataset {ds.name}: {len(ds.base)} x {ds.dim}, {len(ds.queries)} queries", flush=True)
    result = {
        "benchmark": "replication",
        "dataset": ds.name,
        "rows": len(ds.base),
        "dim": ds.dim,
        "queries": len(ds.queries),
        "params": {
            "k": K,
            "m": M,
            "ef_construction": EF_CONSTRUCTION,
            "ef": EF,
            "cluster": {"nodes": CLUSTER_NODES, "coordinators": 1, "routers": 1},
            "shards": SHARDS,
            "replication_factors": list(REPLICATION_FACTORS),
            "write_consistencies": list(WRITE_CONSISTENCIES),
            "read_consistencies": list(READ_CONSISTENCIES),
            "load_batch": LOAD_BATCH,
            "writer_processes": WRITERS,
            "search_clients": SEARCH_CLIENTS,
            "clients_are": "processes (spawn), one QuartzClient each",
            "collections": "a fresh collection per (RF, write consistency); searches on the RF's last",
            "duration_s": args.duration,
            "warmup_calls": WARMUP_CALLS,
            "failover": {
                "runs": args.failover_runs,
                "collection": "one collection reused for all runs",
                "shards": 1,
                "replication_factor": CLUSTER_NODES,
                "dim": FAILOVER_DIM,
                "batch": FAILOVER_BATCH,
                "write_consistency": "majority",
                "client_timeout_s": FAILOVER_CLIENT_TIMEOUT_S,
                "writes_before_kill": FAILOVER_WRITES_BEFORE_KILL,
                "measure": "kill -> ack of the first upsert that started after the kill and succeeded",
            },
        },
        **run_info(),
    }
    workdir = Path(tempfile.mkdtemp(prefix="quartz-bench-repl-"))
    cluster = LocalCluster(workdir / "cluster", nodes=CLUSTER_NODES)
    try:
        cluster.start()
        result["params"]["lease_ttl_s"] = cluster.lease_ttl_s
        print(f"writes and searches ({CLUSTER_NODES} nodes, {SHARDS} shards) ...", flush=True)
        writes, searches = bench_writes_and_searches(cluster, ds, args.duration)
        print(f"failover x {args.failover_runs} (lease TTL {cluster.lease_ttl_s} s) ...", flush=True)
        failover = bench_failover(cluster, args.failover_runs)
        result["figures"] = {"writes": writes, "searches": searches, "failover": failover}
    finally:
        try:
            cluster.stop()
        except BaseException:
            cluster.kill()
            raise
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
    for w in writes:
        if w["count"] != len(ds.base):
            print(f"WARNING: RF {w['rf']} {w['write_consistency']}: {w['count']} points, not {len(ds.base)}")
    os.makedirs(args.out, exist_ok=True)
    out = Path(args.out) / f"replication-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print_table(result)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
