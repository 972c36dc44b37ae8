"""Issue 12 (hardening II) against real processes: admission control refuses what a node cannot
hold, naming the limit, and nothing gets killed; in a cluster a node's CreateShard needs the
shard map; a search over its budget is refused before any work."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from quartz_cluster import QuartzClient
from quartz_cluster.errors import InvalidArgument, ResourceExhausted
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.integration.conftest import member_node_client

pytestmark = pytest.mark.integration


def test_collections_beyond_the_nodes_memory_budget_are_refused_and_nothing_dies(cluster_factory):
    # 64 shards x RF 3 x dim 4096: ~21 MiB per empty replica, 64 per node, ~1.3 GiB a node;
    # the probe's 41 such creates got a node OOM-killed. Budget here: 600 MiB per node.
    cluster = cluster_factory("c", nodes=3, node_args=["--memory-max", "600M"])
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=30) as c:
        with pytest.raises(
            ResourceExhausted, match=r"^config\.shards: .*memory budget \(600 MiB, --memory-max\)"
        ):
            c.create_collection("huge", dim=4096, shards=64, replication_factor=3)
        assert c.list_collections() == []
        small = c.create_collection("small", dim=4096, shards=4, replication_factor=3)
        assert small.ready
        rows = np.random.default_rng(0).normal(size=(50, 4096)).astype(np.float32)
        c.upsert("small", [f"p{i}" for i in range(50)], rows)
        assert c.count("small") == 50
    assert all(p.alive() for p in cluster.processes())


def test_create_shard_on_a_cluster_node_needs_the_shard_map(cluster_factory):
    cluster = cluster_factory("c", nodes=1)
    node = cluster.nodes[0]
    with member_node_client(cluster, node.address) as client:  # a member of the cluster
        with pytest.raises(grpc.RpcError) as err:
            client.create_shard("nosuchcollection", 0, 8, "l2")
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details().startswith("spec.ref: the shard map places no replica")
        shards = client.stub.ListShards(node_pb2.ListShardsRequest(), timeout=10).shards
        assert list(shards) == []


def test_the_heaviest_search_the_api_used_to_accept_is_refused_before_any_work(cluster_factory):
    cluster = cluster_factory("c", nodes=1)
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=30) as c:
        c.create_collection("h", dim=8, shards=2, replication_factor=1)
        c.upsert("h", [f"p{i}" for i in range(100)], np.random.default_rng(0).normal(size=(100, 8)))
        queries = np.ones((1024, 8), np.float32)
        with pytest.raises(InvalidArgument, match=r"^k: 1024 queries x k 1024 = 1048576 hits exceeds"):
            c.search("h", queries, k=1024, ef=8192)
        with pytest.raises(InvalidArgument, match=r"^ef: 64 queries x ef 8192"):
            c.search("h", queries[:64], k=10, ef=8192)
        hits = c.search("h", queries[:16], k=1024, ef=1024)  # at the hits budget: answered
        assert len(hits) == 16 and all(len(h) == 100 for h in hits)


def test_primaries_move_back_to_a_returned_node(cluster_factory):
    """After a node returns, primaries no longer stay where failover put them: the coordinator
    hands them back, one epoch bump each, until no node leads two more than another."""
    import time

    cluster = cluster_factory("c", nodes=3, coordinator_args=["--rebalance-after", "1"])
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=30) as c:
        info = c.create_collection("bal", dim=8, shards=6, replication_factor=3)
        c.upsert("bal", [f"p{i}" for i in range(60)], np.random.default_rng(0).normal(size=(60, 8)))
        victim = info.shard_map[0]["primary"]
        node = next(n for n in cluster.nodes if n.name == victim)
        node.kill()

        def primaries() -> dict[str, int]:
            out = {n.name: 0 for n in cluster.nodes}
            for s in c.describe_collection("bal").shard_map:
                out[s["primary"]] += 1
            return out

        deadline = time.monotonic() + 60
        while primaries()[victim] > 0:
            assert time.monotonic() < deadline, "no failover"
            time.sleep(0.2)
        node.start()
        deadline = time.monotonic() + 90
        while True:
            counts = primaries()
            if counts[victim] >= 1 and max(counts.values()) - min(counts.values()) <= 1:
                break
            assert time.monotonic() < deadline, f"primaries stayed unbalanced: {counts}"
            time.sleep(0.3)
        c.upsert("bal", ["after"], np.ones((1, 8)))
        assert c.count("bal") == 61
