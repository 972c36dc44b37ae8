"""What writes and reads do while etcd is down (issue 12, item 7: the docs said writes go on).

    .venv/bin/python loadtest/etcd_outage.py              # 3 nodes, etcd down for 15 s

A LocalCluster (1 etcd member, 3 nodes, RF 3); one client writes 10 points every 50 ms (majority,
2 s deadline) and another does eventual searches; etcd is SIGKILLed, left down OUTAGE_S, and
started again. Prints when writes and searches first failed after the kill and when they
succeeded again after the restart. A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time

import numpy as np

from quartz_cluster.cluster import LocalCluster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outage", type=float, default=15.0, help="seconds etcd stays down")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="quartz-etcd-") as tmp:
        cluster = LocalCluster(tmp + "/c", nodes=3).start()
        try:
            with cluster.client(timeout=30) as c:  # the cluster's admin key (auth is on)
                c.create_collection("e", dim=8, shards=2)
            events: list[tuple[float, str, bool]] = []
            stop = threading.Event()

            def loop(kind: str) -> None:
                with cluster.client(timeout=2) as c:
                    n = 0
                    while not stop.is_set():
                        try:
                            if kind == "write":
                                c.upsert("e", [f"p{n + i}" for i in range(10)], rng.normal(size=(10, 8)))
                                n += 10
                            else:
                                c.search("e", rng.normal(size=8), k=5)
                            events.append((time.monotonic(), kind, True))
                        except Exception:
                            events.append((time.monotonic(), kind, False))
                        time.sleep(0.05)

            threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in ("write", "search")]
            for t in threads:
                t.start()
            time.sleep(3)
            killed = time.monotonic()
            cluster.etcd.kill()
            time.sleep(args.outage)
            restarted = time.monotonic()
            cluster.etcd.start()
            time.sleep(15)
            stop.set()
            for t in threads:
                t.join(10)
            for kind in ("write", "search"):
                label = {"write": "writes", "search": "searches"}[kind]
                mine = [(t, ok) for t, k, ok in events if k == kind]
                first_fail = next((t for t, ok in mine if t >= killed and not ok), None)
                back = next((t for t, ok in mine if t >= restarted and ok), None)
                during = [ok for t, ok in mine if killed <= t < restarted]
                print(
                    f"{label}: first failure {first_fail - killed:.1f} s after etcd was killed"
                    if first_fail
                    else f"{label}: none failed while etcd was down",
                    f"; {sum(during)} ok / {len(during) - sum(during)} failed during the outage",
                    f"; ok again {back - restarted:.1f} s after etcd restarted" if back else "; not back",
                )
        finally:
            cluster.kill()


if __name__ == "__main__":
    main()
