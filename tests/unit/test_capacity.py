"""Admission control (issue 12, item 3): capacity.check_create refuses a collection the cluster
cannot hold, naming the limit; a node's NodeBudget refuses replicas and writes beyond its
memory budget and replica limit. No network: the views and the memory readings are made here."""

import asyncio

import numpy as np
import pytest

from quartz_cluster import capacity, limits, validation
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import ResourceExhausted
from quartz_cluster.meta.schema import CollectionRecord, NodeRecord, ShardRecord
from quartz_cluster.node.memory import NodeBudget
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.shard import ShardOptions, ShardSpec

HANG_GUARD_S = 120  # a broken writer (a mutant) must fail this test, not hang it


def view(nodes=3, collections=(), memory=0, placed=(), tenant="default") -> ClusterView:
    v = ClusterView(revision=1)
    v.nodes = {f"n{i}": NodeRecord(f"n{i}", f"a:{i}", "inc", 0, memory) for i in range(nodes)}
    for i, (shards, rf, dim) in enumerate(collections):
        rec = CollectionRecord(f"c{i}", f"id{i}", dim, "l2", shards, rf, 16, 100, 64, tenant)
        v.collections[rec.qualified] = rec
    for cid, shard, replicas in placed:
        rec = ShardRecord(cid, cid, shard, 4, "l2", 16, 100, 64, 1, replicas[0], tuple(replicas))
        v.shards.setdefault(cid, {})[shard] = (rec, 1)
    return v


def test_replica_bytes_is_the_initial_index_plus_a_base():
    assert capacity.replica_bytes(4096, 16) == limits.REPLICA_BASE_BYTES + limits.INITIAL_CAPACITY * (
        4096 * 4 + 128 + 16
    )
    assert capacity.replica_bytes(8, 16) < capacity.replica_bytes(4096, 16)


def test_the_collection_limit_is_exact(monkeypatch):
    monkeypatch.setattr(limits, "COLLECTIONS_PER_TENANT_MAX", 3)
    capacity.check_create(view(collections=[(1, 1, 4)] * 2), "default", 1, 1, 4, 16)
    with pytest.raises(
        ResourceExhausted,
        match=r"^config\.name: 3 collections exist in this tenant: .*COLLECTIONS_PER_TENANT_MAX = 3",
    ):
        capacity.check_create(view(collections=[(1, 1, 4)] * 3), "default", 1, 1, 4, 16)
    v = view(collections=[(1, 1, 4)] * 3)
    v.tombstones.add("id0")  # a dropped collection does not count
    capacity.check_create(v, "default", 1, 1, 4, 16)
    # the limit is per tenant: another tenant's collections do not count, its own do
    capacity.check_create(view(collections=[(1, 1, 4)] * 3, tenant="acme"), "default", 1, 1, 4, 16)
    with pytest.raises(ResourceExhausted, match=r"^config\.name: 3 collections exist in this tenant"):
        capacity.check_create(view(collections=[(1, 1, 4)] * 3, tenant="acme"), "acme", 1, 1, 4, 16)


def test_replicas_per_node_count_placed_and_unplaced_collections(monkeypatch):
    monkeypatch.setattr(limits, "REPLICAS_PER_NODE_MAX", 10)
    # 3 nodes x 10 = 30 replicas fit; id0 is placed (2 shards x 3), id1 not yet (4 x 3 = 12)
    v = view(
        collections=[(2, 3, 4), (4, 3, 4)],
        placed=[("id0", 0, ["n0", "n1", "n2"]), ("id0", 1, ["n0", "n1", "n2"])],
    )
    capacity.check_create(v, "default", 4, 3, 4, 16)  # 6 + 12 + 12 = 30: exactly 10 per node
    with pytest.raises(
        ResourceExhausted, match=r"^config\.shards: 5 shards x 3 replicas would put 11 replicas"
    ):
        capacity.check_create(v, "default", 5, 3, 4, 16)


def test_memory_for_empty_replicas_is_checked_against_the_smallest_node_budget():
    one = capacity.replica_bytes(4096, 16)
    budget = 64 * one  # 64 empty dim-4096 replicas per node
    v = view(memory=budget)
    capacity.check_create(v, "default", 64, 3, 4096, 16)  # 192 replicas over 3 nodes: 64 each, exactly
    with pytest.raises(ResourceExhausted, match=r"memory budget .*--memory-max"):
        capacity.check_create(view(collections=[(1, 3, 4096)], memory=budget), "default", 64, 3, 4096, 16)
    capacity.check_create(
        view(collections=[(1, 3, 4096)], memory=0), "default", 64, 3, 4096, 16
    )  # not reported


def budget(rss: int, memory_max: int = 1000, fds: int = 10_000) -> NodeBudget:
    b = NodeBudget("n1", memory_max, fds)
    b.rss = lambda: rss
    return b


def test_node_budget_refuses_memory_beyond_it_exactly():
    budget(900).check_memory(100, "this write", "upserts")
    with pytest.raises(ResourceExhausted, match=r"^upserts: node n1 uses 0 MiB of its 0 MiB memory budget"):
        budget(900).check_memory(101, "this write", "upserts")


def test_node_budget_replica_limit_follows_the_open_file_limit(monkeypatch):
    b = budget(0, memory_max=2**40, fds=256 + 5 * limits.FDS_PER_REPLICA)
    assert b.replicas_max == 5
    b.check_replica(4, 4, 16)
    with pytest.raises(ResourceExhausted, match=r"holds 5 shard replicas, its limit .* is 5"):
        b.check_replica(5, 4, 16)
    assert budget(0, fds=10**7).replicas_max == limits.REPLICAS_PER_NODE_MAX
    assert NodeBudget("n1").memory_bytes_max > 0  # the default: a share of the machine


def test_a_registry_over_budget_creates_nothing(tmp_path):
    async def go():
        reg = ShardRegistry(str(tmp_path), ShardOptions(threads=1))
        await reg.open_all()
        reg.budget = budget(0, memory_max=2**40, fds=256 + 1 * limits.FDS_PER_REPLICA)
        assert await reg.create(ShardSpec("c", 0, 4, "l2")) is True
        with pytest.raises(ResourceExhausted):
            await reg.create(ShardSpec("c", 1, 4, "l2"))
        assert sorted(reg.shards) == [("c", 0)]
        assert sorted((tmp_path / "shards" / "c").iterdir()) == [tmp_path / "shards" / "c" / "0"]
        reg.budget = budget(10**9, memory_max=10**9 + 10)
        with pytest.raises(ResourceExhausted, match="a new replica needs"):
            await reg.create(ShardSpec("c", 2, 4, "l2"))
        rows = np.ones((1, 4), np.float32)
        await reg.get("c", 0).write(validation.write_batch(["a"], rows.tobytes(), 1, 4, [], [], 4))
        await reg.close()

    asyncio.run(asyncio.wait_for(go(), HANG_GUARD_S))
