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


# ------------------------------------------------------------------ self-remediation (issue 16)


def unhealthy_view(rec=REC, sick="n1", live=("n1", "n2", "n3")) -> ClusterView:
    """A cluster whose node `sick` reports it cannot write, as parsed from etcd."""
    from quartz_cluster.meta import schema

    kvs = []
    for n in live:
        health = "disk nearly full: under 64 MiB free" if n == sick else ""
        raw = NodeRecord(n, "addr", "p" + n[1:], health=health).to_json()
        kvs.append(type("KV", (), {"key": schema.node_key(n), "value": raw, "mod_revision": 1})())
    v = ClusterView.from_kvs(9, kvs)
    v.collections["docs"] = COLL
    v.shards["cid"] = {0: (rec, 50)}
    for n in rec.replicas:
        v.replicas[("cid", 0, n)] = ReplicaRecord(n, "r" + n[1:])
    return v


def test_a_healthy_node_record_reads_as_before_and_an_unhealthy_one_names_why():
    assert b"health" not in NodeRecord("n1", "a", "p").to_json()  # older coordinators parse it
    sick = NodeRecord("n1", "a", "p", health="checkpoint failing")
    assert NodeRecord.from_json(sick.to_json()) == sick


def test_an_unhealthy_primary_is_handed_over_at_once_then_its_replica_moves_away():
    v = unhealthy_view()
    assert v.unhealthy == {"n1": "disk nearly full: under 64 MiB free"} and "n1" in v.draining
    a = step(v)  # first: writes must resume, so the in-sync follower leads (a new epoch)
    assert (a.record.primary, a.record.epoch, a.record.primary_incarnation) == ("n2", 3, "p2")
    assert a.record.replicas == ("n1", "n2") and "cannot write" in a.reason
    a = step(unhealthy_view(rec=a.record))  # then re-replicate: a new replica on the spare node
    assert a.record.replicas == ("n1", "n2", "n3") and a.record.primary == "n2"
    rec = replace(a.record, in_sync=(*a.record.in_sync, InSync("n3", "r3")))
    a = step(unhealthy_view(rec=rec))  # caught up: the sick node's replica goes
    assert a.record.replicas == ("n2", "n3") and a.removed == (("cid", 0, "n1", "r1"),)


def test_an_unhealthy_primary_with_no_healthy_in_sync_replica_keeps_leading():
    rec = replace(REC, in_sync=(InSync("n1", "r1"),))  # n2 is catching up: promoting it would lose writes
    a = step(unhealthy_view(rec=rec))
    assert a is None or a.record.primary == "n1"


def test_new_collections_are_not_placed_on_an_unhealthy_node():
    v = unhealthy_view(live=("n1", "n2", "n3"))
    v.shards = {}
    v.replicas = {}
    v.collections["fresh"] = CollectionRecord("fresh", "cid2", 8, "cosine", 3, 2, 16, 200, 64)
    v.collections.pop("docs")
    [place] = [a for a in reconcile(v) if hasattr(a, "records")]
    assert all("n1" not in r.replicas for r in place.records)
