"""The coordinator's decisions, driven directly: snapshots in, actions out (no etcd)."""

from dataclasses import replace

from quartz_cluster.coordinator.reconcile import (
    ClusterView,
    PlaceShards,
    PurgeCollection,
    UpdateShard,
    reconcile,
)
from quartz_cluster.meta.schema import CollectionRecord, NodeRecord, ReplicaRecord


def view(nodes=("n1", "n2", "n3")) -> ClusterView:
    v = ClusterView(revision=10)
    for n in nodes:
        v.nodes[n] = NodeRecord(n, f"127.0.0.1:{len(v.nodes)}", "inc-" + n)
    return v


COLL = CollectionRecord(
    "docs", "cid1", 8, "cosine", shards=3, replication_factor=2, m=16, ef_construction=200, ef=64
)


def apply_place(v: ClusterView, action: PlaceShards) -> None:
    v.shards[action.collection_id] = {r.shard: (r, 100 + r.shard) for r in action.records}


def test_new_collection_is_placed_then_marked_in_sync_once_every_replica_reports():
    v = view()
    v.collections["docs"] = COLL
    [place] = reconcile(v)
    assert isinstance(place, PlaceShards) and len(place.records) == 3
    assert all(r.epoch == 0 and r.in_sync == () and r.primary == r.replicas[0] for r in place.records)
    apply_place(v, place)
    assert reconcile(v) == []  # placed, nothing reported yet: nothing to do

    rec0 = place.records[0]
    v.replicas[("cid1", 0, rec0.replicas[0])] = ReplicaRecord(rec0.replicas[0], "r-a")
    assert reconcile(v) == []  # one of two replicas reported
    v.replicas[("cid1", 0, rec0.replicas[1])] = ReplicaRecord(rec0.replicas[1], "r-b")
    [update] = reconcile(v)
    assert isinstance(update, UpdateShard) and update.mod_revision == 100
    assert update.record.epoch == 1
    assert [(i.node, i.incarnation) for i in update.record.in_sync] == [
        (rec0.replicas[0], "r-a"),
        (rec0.replicas[1], "r-b"),
    ]


def test_collection_waits_for_enough_live_nodes():
    v = view(nodes=("n1",))
    v.collections["docs"] = COLL
    assert reconcile(v) == []
    v.nodes["n2"] = NodeRecord("n2", "x", "i")
    assert isinstance(reconcile(v)[0], PlaceShards)


def test_dropped_collection_is_purged_and_never_placed():
    v = view()
    v.collections["docs"] = COLL
    apply_place(v, reconcile(v)[0])
    v.replicas[("cid1", 1, "n1")] = ReplicaRecord("n1", "x")
    v.tombstones.add("cid1")
    del v.collections["docs"]
    assert reconcile(v) == [PurgeCollection("cid1")]
    v.shards.clear()
    v.replicas.clear()
    assert reconcile(v) == []
    v.collections["docs"] = COLL  # a stale record of the dropped id is not placed again
    assert reconcile(v) == []
    v.collections["docs"] = replace(COLL, id="cid2")  # re-created: a new id
    assert isinstance(reconcile(v)[0], PlaceShards)


def test_second_collection_balances_against_the_first():
    v = view()
    v.collections["docs"] = COLL
    apply_place(v, reconcile(v)[0])
    v.collections["more"] = replace(COLL, name="more", id="cid2")
    [place] = reconcile(v)
    load = {n: 0 for n in v.nodes}
    for by in (v.shards["cid1"], {r.shard: (r, 0) for r in place.records}):
        for rec, _ in by.values():
            for n in rec.replicas:
                load[n] += 1
    assert max(load.values()) - min(load.values()) <= 1
