"""`quartz`: the one console script. Subcommands are added as the system grows."""

from __future__ import annotations

import argparse
import os
import sys


def _node(args: argparse.Namespace) -> int:
    from quartz_cluster.node.main import NodeSettings, run

    return run(
        NodeSettings(
            node_id=args.id,
            data_dir=args.data_dir,
            listen=args.listen,
            commit_mode=args.commit_mode,
            checkpoint_every_points=args.checkpoint_every,
            threads=args.threads,
        ),
        args.log_level,
    )


def _demo(args: argparse.Namespace) -> int:
    from quartz_cluster.demo import run_demo

    return run_demo(args.data_dir, args.shared_dir, args.rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quartz", description="QuartzDB distributed vector database")
    sub = parser.add_subparsers(dest="command", required=True)

    node = sub.add_parser("node", help="run a storage node")
    node.add_argument("--id", required=True, help="node id, e.g. n1")
    node.add_argument("--data-dir", required=True, help="directory for this node's shards")
    node.add_argument("--listen", default="127.0.0.1:7101", help="host:port (port 0 picks a free one)")
    node.add_argument(
        "--commit-mode",
        choices=["group", "batch"],
        default="group",
        help="group: one fsync covers every queued batch; batch: one fsync per batch",
    )
    node.add_argument(
        "--checkpoint-every",
        type=int,
        default=50_000,
        metavar="POINTS",
        help="checkpoint the index after this many written points",
    )
    node.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="hnswlib threads")
    node.add_argument("--log-level", default="info")
    node.set_defaults(func=_node)

    demo = sub.add_parser("demo", help="start a node, load demo data, run example searches")
    demo.add_argument("--data-dir", default=".quartz/demo", help="where the demo node keeps its data")
    demo.add_argument("--shared-dir", default=None, help="dataset dir (default: ../shared/data if present)")
    demo.add_argument("--rows", type=int, default=20_000, help="rows to load")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
