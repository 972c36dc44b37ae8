"""Stop a whole cluster and start it again from its data dir: same data, same answers."""

from __future__ import annotations

import numpy as np
import pytest

from quartz_cluster import QuartzClient
from quartz_cluster.datasets import generate_clustered

pytestmark = pytest.mark.integration


def test_full_restart_from_data_dir(cluster_factory):
    ds = generate_clustered(6000, dim=16, n_queries=50, seed=5)
    cluster = cluster_factory("c", nodes=3)
    key = cluster.admin_key
    with QuartzClient(cluster.router_address, api_key=key, timeout=60) as c:
        c.create_collection("keep", dim=16, shards=4, replication_factor=2)
        for s in range(0, 6000, 1500):
            c.upsert("keep", ds.ids[s : s + 1500], ds.base[s : s + 1500], ds.payloads[s : s + 1500])
        c.delete("keep", ds.ids[:100])
        before = (
            c.count("keep"),
            c.search("keep", ds.queries, k=10),
            c.search("keep", ds.queries, k=10, filter={"must": [{"key": "kind", "match": "class"}]}),
        )
        info_before = c.describe_collection("keep")
    router = cluster.router_address
    # A graceful stop exits 0 (leases revoked, shards checkpointed): a LeaseKeeper that shadowed
    # Thread._stop once made every clustered node and coordinator exit 1 half-way through it.
    for p in [*cluster.routers, *cluster.nodes, *cluster.coordinators]:
        assert p.stop() == 0, p.log_tail()
    cluster.stop()
    assert not any(p.alive() for p in cluster.processes())

    again = cluster_factory("c", nodes=3)  # same data dir
    assert again.router_address == router  # the router comes back on its port
    # the same cluster secret and admin key: the key a user saved still works after a restart
    assert again.admin_key == key
    with QuartzClient(again.router_address, api_key=key, timeout=60) as c:
        after = (
            c.count("keep"),
            c.search("keep", ds.queries, k=10),
            c.search("keep", ds.queries, k=10, filter={"must": [{"key": "kind", "match": "class"}]}),
        )
        info_after = c.describe_collection("keep")
        assert c.get("keep", ds.ids[:100]) == []
        got = c.get("keep", ds.ids[100:200])
        assert np.array_equal(np.stack([p.vector for p in got]), ds.base[100:200])
    assert before[0] == after[0] == 5900
    assert before[1] == after[1] and before[2] == after[2]
    assert info_before.id == info_after.id
    # Every primary's process restarted, so each shard failed over to a new epoch (possibly the
    # same node): placement is kept, and every replica is back in sync.
    for b, a in zip(info_before.shard_map, info_after.shard_map, strict=True):
        assert a["replicas"] == b["replicas"] and a["epoch"] > b["epoch"]
        assert a["primary"] in a["replicas"]
