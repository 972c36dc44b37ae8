"""Repair and drain decisions, step by step (no etcd)."""

from dataclasses import replace

from quartz_cluster.coordinator.reconcile import ClusterView, UpdateShard, reconcile
from quartz_cluster.meta.schema import CollectionRecord, InSync, NodeRecord, ReplicaRecord, ShardRecord

COLL = CollectionRecord("docs", "cid", 8, "cosine", 1, 2, 16, 200, 64)
REC = ShardRecord(
    "docs",
    "cid",
    0,
    8,
    "cosine",
    16,
    200,
    64,
    epoch=2,
    primary="n1",
    replicas=("n1", "n2"),
    in_sync=(InSync("n1", "r1"), InSync("n2", "r2")),
    primary_incarnation="p1",
)


def view(rec=REC, live=("n1", "n2", "n3"), draining=(), dead_for=None, grace=10.0) -> ClusterView:
    v = ClusterView(revision=9)
    for n in live:
        v.nodes[n] = NodeRecord(n, "addr", "p" + n[1:])
    v.collections["docs"] = COLL
    v.shards["cid"] = {0: (rec, 50)}
    for n in rec.replicas:
        v.replicas[("cid", 0, n)] = ReplicaRecord(n, "r" + n[1:])
    v.draining = set(draining)
    v.dead_for_s = dead_for or {}
    v.repair_grace_s = grace
    return v


def step(v: ClusterView) -> UpdateShard | None:
    actions = reconcile(v)
    assert len(actions) <= 1
    return actions[0] if actions else None


def test_node_gone_within_grace_is_left_alone_then_replaced():
    assert step(view(live=("n1", "n3"), dead_for={"n2": 5.0})) is None
    a = step(view(live=("n1", "n3"), dead_for={"n2": 11.0}))
    assert a.record.replicas == ("n1", "n3") and [i.node for i in a.record.in_sync] == ["n1"]
    assert a.record.epoch == 2 and a.removed == (("cid", 0, "n2", "r2"),)


def test_drain_moves_a_follower_then_hands_over_and_removes_a_primary():
    # follower n2 drains: add n3, wait for it in in_sync, then remove n2
    a = step(view(draining=("n2",)))
    assert a.record.replicas == ("n1", "n2", "n3") and not a.removed
    rec = a.record
    assert step(view(rec=rec, draining=("n2",))) is None  # n3 not caught up yet
    rec = replace(rec, in_sync=(*rec.in_sync, InSync("n3", "r3")))
    a = step(view(rec=rec, draining=("n2",)))
    assert a.record.replicas == ("n1", "n3") and a.removed == (("cid", 0, "n2", "r2"),)

    # primary n1 drains: add n3, then a new epoch with another primary, then remove n1
    a = step(view(draining=("n1",)))
    rec = replace(a.record, in_sync=(*a.record.in_sync, InSync("n3", "r3")))
    a = step(view(rec=rec, draining=("n1",)))
    assert (a.record.epoch, a.record.primary) == (3, "n2") and not a.removed
    a = step(view(rec=a.record, draining=("n1",)))
    assert a.record.replicas == ("n2", "n3") and a.removed == (("cid", 0, "n1", "r1"),)
    assert step(view(rec=a.record, draining=("n1",))) is None  # done


def test_nothing_moves_without_a_spare_node():
    assert step(view(live=("n1", "n2"), draining=("n2",))) is None
