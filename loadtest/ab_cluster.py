"""A/B of the cluster's search throughput between two checkouts, or one checkout with auth on
and off, interleaved (A, B, A, B, ...) so that the drift of a shared machine falls on both
sides alike.

    git worktree add /tmp/quartz-a 06ab9e3
    .venv/bin/python loadtest/ab_cluster.py --a /tmp/quartz-a --b . --rounds 2
    .venv/bin/python loadtest/ab_cluster.py --a . --b . --b-no-auth --rounds 2   # what auth costs
    git worktree add /tmp/quartz-pre16 0c5c985   # before metrics and traces (issue 16)
    .venv/bin/python loadtest/ab_cluster.py --a /tmp/quartz-pre16 --b . --otlp-sink --rounds 2
                                                  # what metrics + tracing cost, as shipped

Each side runs in its own process with that checkout first on sys.path (its cluster's
processes inherit it): 3 nodes, 3 shards x RF 2, pydocs (or --generated N rows) ingested in
batches of 1,000 (timed: the write path), ef 32, then a closed loop of client processes per
level, every call through the router's gRPC API with the cluster's admin key. --a-no-auth /
--b-no-auth start that side's cluster as `quartz up --no-auth` (no API keys, no member tokens,
no etcd auth; its clients send no key; the checkout's QuartzCluster must take auth=, as it does
since issue 13). Prints ingest rows/s, QPS, p50/p99 and the servers' CPU per query (from /proc,
as `quartz bench` reports it), then per level each side's mean QPS and B against A in %; writes
loadtest/results/ab-<time>.json. --otlp-sink starts an OTLP/gRPC trace receiver in this process
and gives both sides OTEL_EXPORTER_OTLP_ENDPOINT: a checkout with tracing exports its spans there
at its default sampling ratio (one that has none ignores it), so an A/B against a checkout from
before issue 16 measures metrics plus tracing as shipped. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def side(args: argparse.Namespace) -> None:
    """One measurement, in a process whose sys.path starts with the checkout under test."""
    from quartz_cluster.bench import harness
    from quartz_cluster.bench.systems import QuartzCluster
    from quartz_cluster.datasets import generate_clustered, load_pydocs, shared_data_dir

    data = shared_data_dir()
    if data is not None and not args.generated:
        ds = load_pydocs(data, rows=args.rows, with_text=False)
    else:
        ds = generate_clustered(args.generated or args.rows, dim=384, n_queries=500, seed=3)
    system = QuartzCluster(auth=False) if args.no_auth else QuartzCluster()
    workdir = Path(tempfile.mkdtemp(prefix="quartz-ab-"))
    try:
        system.start(workdir, ds.dim, ds.metric, 16, 200)
        t0 = time.perf_counter()
        system.ingest(ds.ids, ds.base, ds.payloads, 1000)
        ingest = len(ds.ids) / (time.perf_counter() - t0)
        system.set_ef(args.ef)
        for clients in args.clients:
            r = harness.closed_loop(system, ds.queries, clients, args.duration)
            row = {"clients": clients, "auth": not args.no_auth, "ingest_rows_per_s": round(ingest)}
            row |= {k: r.get(k) for k in FIELDS}
            print(json.dumps(row), flush=True)
    finally:
        system.stop()
        shutil.rmtree(workdir, ignore_errors=True)


FIELDS = ("qps", "p50_ms", "p99_ms", "server_cpu_ms_per_query", "error_rate")
FIELDS += ("other_cpu_cores", "load_avg_1m")  # how busy the shared machine was with other work


def _commit(repo: Path) -> str:
    """The checkout's commit, "+dirty" when it has uncommitted changes to tracked files."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")


def summarize(runs: list[dict], levels: list[int]) -> list[dict]:
    """Per level: each side's mean QPS over the rounds and B against A in %."""
    out = []
    for clients in levels:
        mean = {}
        for name in ("a", "b"):
            qps = [r["qps"] for r in runs if r["side"] == name and r["clients"] == clients]
            mean[name] = sum(qps) / len(qps) if qps else float("nan")
        pct = (mean["b"] / mean["a"] - 1) * 100 if mean["a"] else float("nan")
        out.append({"clients": clients, "a_qps": mean["a"], "b_qps": mean["b"], "b_vs_a_pct": pct})
    return out


def otlp_sink():
    """An OTLP/gRPC trace receiver on a free loopback port that counts what it gets."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    received = {"spans": 0}

    class Sink(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received["spans"] += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Sink(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}", received


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, required=True, help="checkout A (a git worktree)")
    p.add_argument("--b", type=Path, required=True, help="checkout B")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--clients", default="1,8,32", help="closed-loop levels, comma-separated")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per level")
    p.add_argument("--rows", type=int, default=20_000)
    p.add_argument("--generated", type=int, default=0, help="generated rows instead of pydocs")
    p.add_argument("--ef", type=int, default=32)
    p.add_argument("--a-no-auth", action="store_true", help="side A's cluster without auth (--no-auth)")
    p.add_argument("--b-no-auth", action="store_true", help="side B's cluster without auth (--no-auth)")
    p.add_argument(
        "--otlp-sink", action="store_true", help="receive both sides' traces (OTEL_EXPORTER_OTLP_ENDPOINT)"
    )
    p.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-auth", action="store_true", help=argparse.SUPPRESS)  # of one side
    args = p.parse_args()
    try:
        args.clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        p.error("--clients: comma-separated integers, such as 1,8,32")
    for flag, value, low in (
        ("--clients", min(args.clients), 1),
        ("--rounds", args.rounds, 1),
        ("--rows", args.rows, 1000),
    ):
        if value < low:
            p.error(f"{flag}: must be at least {low}, not {value}")
    if args.duration <= 0 or args.ef < 1 or args.generated < 0:
        p.error("--duration must be > 0, --ef >= 1 and --generated >= 0")
    if args.side:
        side(args)
        return
    for name in ("a", "b"):
        if not (getattr(args, name) / "quartz_cluster" / "__init__.py").exists():
            p.error(f"--{name}: {getattr(args, name)} is not a QuartzDB checkout")
    sink_env, sink = {}, None
    if args.otlp_sink:
        sink, endpoint, received = otlp_sink()
        sink_env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    runs = []
    started = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load_avg": os.getloadavg()}
    for round_ in range(args.rounds):
        for name in ("a", "b"):
            repo = getattr(args, name).resolve()
            env = {**os.environ, "PYTHONPATH": str(repo), **sink_env}
            env.setdefault("QUARTZ_SHARED_DATA", str(HERE.parent / "shared" / "data"))
            cmd = [sys.executable, str(HERE / "loadtest" / "ab_cluster.py"), "--side", "--a", ".", "--b", "."]
            cmd += ["--clients", ",".join(map(str, args.clients)), "--duration", str(args.duration)]
            cmd += ["--rows", str(args.rows), "--generated", str(args.generated), "--ef", str(args.ef)]
            if getattr(args, f"{name}_no_auth"):
                cmd.append("--no-auth")
            done = subprocess.run(cmd, env=env, cwd=repo, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"side {name} ({repo}) failed with {done.returncode}:\n{done.stderr[-4000:]}")
            out = done.stdout
            for line in out.splitlines():
                if line.startswith("{"):
                    row = {"side": name, "round": round_, "repo": str(repo), **json.loads(line)}
                    runs.append(row)
                    auth = "auth on " if row.get("auth", True) else "auth off"
                    print(
                        f"{name} ({auth}) round {round_} clients {row['clients']:>3}: "
                        f"{row['qps']:>7,.0f} QPS  "
                        f"p50 {row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  "
                        f"server CPU {row['server_cpu_ms_per_query']:.2f} ms/query  "
                        f"(ingest {row['ingest_rows_per_s']:,} rows/s; other work "
                        f"{row.get('other_cpu_cores') or 0:.2f} cores)",
                        flush=True,
                    )
    if sink is not None:
        sink.stop(0)
        print(f"traces received: {received['spans']} spans", flush=True)
        started["spans_received"] = received["spans"]
    summary = summarize(runs, args.clients)
    for row in summary:
        print(
            f"clients {row['clients']:>3}: A {row['a_qps']:,.0f} QPS, B {row['b_qps']:,.0f} QPS "
            f"(mean of {args.rounds} rounds): B/A {row['b_vs_a_pct']:+.1f} %",
            flush=True,
        )
    out_dir = HERE / "loadtest" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ab-{time.strftime('%Y%m%dT%H%M%S')}.json"
    args_out = {k: str(v) for k, v in vars(args).items()}
    commits = {name: _commit(getattr(args, name).resolve()) for name in ("a", "b")}
    out = {"args": args_out, "commits": commits, "started": started, "runs": runs, "summary": summary}
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
