"""Why one huge search expired the nodes' etcd leases (issue 12, item 1): protobuf holds the GIL.

    .venv/bin/python loadtest/gil_stall.py                # the probe: 1,024 x 1,024 hits, 1 KB payloads
    .venv/bin/python loadtest/gil_stall.py --queries 16 --payload 2000  # ~ the largest budgeted reply

Builds, serializes and parses a node SearchResponse of QUERIES x K hits with PAYLOAD-byte
payloads, while a watcher thread sleeps 50 ms in a loop and records how much longer than that it
waited: the longest time no other Python thread could run. A node's lease keepalive runs on such
a thread (meta/lease.py); with the default TTL of 3 s, any stall near that lets the lease lapse
and the coordinator fails the node's primaries over although the node is alive. A benchmark, not
a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import threading
import time

from quartz_cluster.proto.quartz.v1 import node_pb2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--payload", type=int, default=1000, help="payload bytes per hit")
    args = ap.parse_args()
    stall = [0.0]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            t = time.monotonic()
            time.sleep(0.05)
            stall[0] = max(stall[0], time.monotonic() - t - 0.05)

    threading.Thread(target=watch, daemon=True).start()
    payload = b'{"t":"' + b"x" * max(0, args.payload - 8) + b'"}'
    k = args.k

    def step(name: str, fn):
        stall[0] = 0.0
        t0 = time.monotonic()
        out = fn()
        print(f"{name:10} {time.monotonic() - t0:6.2f} s; longest stall of other threads {stall[0]:5.2f} s")
        return out

    resp = step(
        "build",
        lambda: node_pb2.SearchResponse(
            results=[
                node_pb2.SearchResult(
                    ids=[f"id{i}" for i in range(k)], scores=[0.5] * k, payloads=[payload] * k
                )
                for _ in range(args.queries)
            ]
        ),
    )
    data = step("serialize", resp.SerializeToString)
    step("parse", lambda: node_pb2.SearchResponse.FromString(data))
    stop.set()
    print(f"reply {len(data) / 2**20:,.1f} MiB: {args.queries} queries x k {k} x {len(payload)} B payloads")


if __name__ == "__main__":
    main()
