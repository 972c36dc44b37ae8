"""Does dropping shards give a node's memory back? (issue 12, item 2)

    .venv/bin/python loadtest/drop_memory.py                    # 4 cycles, 64 shards, dim 4096
    .venv/bin/python loadtest/drop_memory.py --cycles 8 --shards 32 --dim 1024 --points 500

One real node process (standalone, its own temp data dir). Each cycle creates SHARDS shards
(cosine, dim DIM), writes POINTS random points into each (batches of 100), drops them all, and
then reads the node's resident memory (RSS, from /proc via psutil) and counts what is left under
DATA_DIR/shards. The probe of issue 12 ran 4 such cycles of a 64-shard, dim-4096, RF 3 collection
on a cluster (64 replicas per node) and saw a node grow from 579 to 3,399 MiB with nothing left.
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=4)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--points", type=int, default=200, help="points written into each shard per cycle")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="quartz-drop-") as tmp:
        node = NodeProcess("n1", Path(tmp) / "n1", Path(tmp) / "n1.log")
        node.start()
        try:
            client = NodeClient(node.address, timeout_s=300)
            print(f"node pid {node.pid}: {rss_mib(node.pid):,.0f} MiB at start")
            for cycle in range(1, args.cycles + 1):
                t0 = time.monotonic()
                cid = f"drop{cycle}"
                for s in range(args.shards):
                    client.create_shard(cid, s, args.dim, "cosine")
                peak = rss_mib(node.pid)
                for s in range(args.shards):
                    for start in range(0, args.points, 100):
                        n = min(100, args.points - start)
                        rows = rng.normal(size=(n, args.dim)).astype(np.float32)
                        client.upsert(cid, s, [f"p{start + i}" for i in range(n)], rows)
                    peak = max(peak, rss_mib(node.pid))
                for s in range(args.shards):
                    client.drop_shard(cid, s)
                time.sleep(1.0)
                left = list((Path(tmp) / "n1" / "shards").iterdir())
                print(
                    f"cycle {cycle}: peak {peak:,.0f} MiB, after drop {rss_mib(node.pid):,.0f} MiB, "
                    f"{len(left)} entries left under shards/, {time.monotonic() - t0:.1f} s"
                )
            client.close()
        finally:
            node.kill()
    print(f"(cpus {os.cpu_count()}; {args.shards} shards x dim {args.dim} x {args.points} points per cycle)")


if __name__ == "__main__":
    main()
