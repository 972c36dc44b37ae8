"""A node gone past the grace period has its replicas re-created; `quartz drain` empties a node
under load with zero failed searches and no write lost."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.integration.test_replication import DIM, Writer, converged, shard_map, verify_acked, wait_for

pytestmark = pytest.mark.integration


def test_replication_factor_restored_after_grace_period(cluster_factory):
    cluster = cluster_factory("c", nodes=4, coordinator_args=["--repair-grace", "3"])
    with cluster.client(timeout=30) as c:
        c.create_collection("rp", dim=DIM, shards=3, replication_factor=2)
        rng = np.random.default_rng(0)
        ids = [f"p{i}" for i in range(600)]
        c.upsert("rp", ids, rng.normal(size=(600, DIM)))
    victim = next(n for n in cluster.nodes if any(n.name in s["replicas"] for s in shard_map(cluster, "rp")))
    victim.kill()  # and never restarted

    def restored():
        m = shard_map(cluster, "rp")
        return all(
            victim.name not in s["replicas"] and len(s["replicas"]) == 2 and len(s["in_sync"]) == 2 for s in m
        )

    wait_for(restored, timeout_s=90, what="replication factor restored without a command")
    with cluster.client(timeout=30) as c:
        assert c.count("rp") == 600
        assert len(c.get("rp", ids, consistency="strong", with_payload=False)) == 600
    wait_for(lambda: converged(cluster, "rp", 3, ids), what="replicas identical")


def test_drain_under_load_fails_no_search(cluster_factory):
    cluster = cluster_factory("c", nodes=4)
    with cluster.client(timeout=30) as c:
        c.create_collection("dr", dim=DIM, shards=3, replication_factor=2)
    target = shard_map(cluster, "dr")[0]["primary"]  # it leads at least one shard: a handover too
    writer = Writer(cluster, "dr", "w")
    writer.start()
    wait_for(lambda: len(writer.acked) >= 200, what="writes before the drain")
    failures: list[Exception] = []
    searches = [0]
    stop = threading.Event()

    def searcher():
        rng = np.random.default_rng(1)
        with cluster.client(timeout=30) as c:
            while not stop.is_set():
                try:
                    c.search("dr", rng.normal(size=DIM).astype(np.float32), k=5, with_payload=False)
                    searches[0] += 1
                except Exception as exc:
                    failures.append(exc)

    t = threading.Thread(target=searcher, daemon=True)
    t.start()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "quartz_cluster",
            "drain",
            target,
            "--etcd",
            cluster.etcd.endpoint,
            "--data-dir",  # the cluster's etcd credentials, as for an operator of `quartz up`
            str(cluster.data_dir),
            "--timeout",
            "120",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "drained" in out.stdout
    stop.set()
    t.join(30)
    writer.stop()
    assert not failures, failures[:3]
    assert searches[0] > 50
    m = shard_map(cluster, "dr")
    assert all(target not in s["replicas"] and len(s["replicas"]) == 2 for s in m)
    verify_acked(cluster, "dr", writer)
    ids = list(writer.acked) + sorted(writer.failed)
    wait_for(lambda: converged(cluster, "dr", 3, ids), what="replicas identical")
    node = next(n for n in cluster.nodes if n.name == target)
    with cluster.client() as c:
        cid = c.describe_collection("dr").id
    wait_for(
        lambda: not any((node.data_dir / "shards" / cid).glob("*")),
        timeout_s=30,
        what="the drained node deleted its replicas",
    )
