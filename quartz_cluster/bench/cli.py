"""Arguments of `quartz bench` (also `python loadtest/bench.py`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from quartz_cluster.datasets import generate_clustered, load_pydocs, shared_data_dir

DEFAULT_OUT = "loadtest/results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dataset",
        choices=["pydocs", "generated"],
        default=None,
        help="pydocs: ../shared/data (60k x 384 MiniLM); generated: clustered vectors "
        "(default: pydocs when present)",
    )
    p.add_argument("--rows", type=int, default=None, help="rows (generated: default 50,000; pydocs: all)")
    p.add_argument("--dim", type=int, default=384, help="generated: dimension")
    p.add_argument("--queries", type=int, default=1000, help="generated: queries with exact ground truth")
    p.add_argument(
        "--systems",
        default="hnswlib,quartz-node,quartz-cluster,chroma,milvus-lite",
        help="comma-separated, of: hnswlib, quartz-node, quartz-cluster (gRPC), quartz-http (the same "
        "cluster over its HTTP/JSON gateway), chroma, milvus-lite",
    )
    p.add_argument("--ef-sweep", default="16,32,64,128,256", help="search ef values for the serial pass")
    p.add_argument("--concurrency", default="1,4,8,16,32", help="closed-loop client counts")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    p.add_argument("--serial-queries", type=int, default=1000, help="queries in each serial pass")
    p.add_argument("--no-filters", action="store_true", help="skip filtered search")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="run quartz-cluster and quartz-http as `quartz up --no-auth` (no API keys): what auth costs",
    )
    p.add_argument("--out", default=DEFAULT_OUT, help="where the JSON and PNGs go")
    p.add_argument("--workdir", default=None, help="keep the systems' data here (default: a temp dir)")


def _positive_ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"{flag}: expected comma-separated positive integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise SystemExit(f"{flag}: expected comma-separated positive integers, got {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    from quartz_cluster.bench import harness, report
    from quartz_cluster.bench.machine import run_info
    from quartz_cluster.bench.peers import PEERS
    from quartz_cluster.bench.systems import SYSTEMS

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS and s not in PEERS]
    if not systems or unknown:
        raise SystemExit(
            f"--systems: unknown {unknown or systems}; choose from {', '.join([*SYSTEMS, *PEERS])}"
        )
    ef_sweep = _positive_ints(args.ef_sweep, "--ef-sweep")
    concurrency = _positive_ints(args.concurrency, "--concurrency")
    if args.duration <= 0 or args.serial_queries < 1 or (args.rows is not None and args.rows < 10):
        raise SystemExit("--duration must be > 0, --serial-queries >= 1 and --rows >= 10")

    data = shared_data_dir()
    kind = args.dataset or ("pydocs" if data else "generated")
    if kind == "pydocs":
        if data is None:
            raise SystemExit(
                "pydocs not found (../shared/data or $QUARTZ_SHARED_DATA); use --dataset generated"
            )
        ds = load_pydocs(data, rows=args.rows, with_text=False)
    else:
        ds = generate_clustered(args.rows or 50_000, dim=args.dim, n_queries=args.queries, seed=0)
    cfg = harness.BenchConfig(
        systems=systems,
        ef_sweep=ef_sweep,
        concurrency=concurrency,
        duration_s=args.duration,
        serial_queries=args.serial_queries,
        filters=not args.no_filters,
        auth=not args.no_auth,
        workdir=args.workdir,
    )
    print(
        f"bench: {ds.name} ({len(ds.ids):,} x {ds.dim}, {len(ds.queries):,} queries), systems {cfg.systems}"
    )
    info = run_info()
    result = {**harness.run(ds, cfg), **info}
    path, pngs = report.write(result, Path(args.out))
    print()
    print(report.tables(result))
    print(f"\nwrote {path}" + "".join(f"\nwrote {p}" for p in pngs))
    return 0
