"""The coordinator's decisions, driven directly: snapshots in, actions out (no etcd)."""

import logging
from dataclasses import replace
from types import SimpleNamespace

import pytest

from quartz_cluster.coordinator.reconcile import (
    ClusterView,
    PlaceShards,
    PurgeCollection,
    UpdateShard,
    failover_candidates,
    reconcile,
)
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import CollectionRecord, InSync, NodeRecord, ReplicaRecord, ShardRecord


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


# --- exact decisions: reasons, revisions, load accounting, one shard never stops the others ----


def shard(cid="cid1", n=0, primary="n1", replicas=("n1", "n2"), in_sync=None, epoch=2, inc="inc-n1"):
    return ShardRecord(
        "docs",
        cid,
        n,
        8,
        "cosine",
        16,
        200,
        64,
        epoch=epoch,
        primary=primary,
        replicas=tuple(replicas),
        in_sync=tuple(InSync(r, "r-" + r) for r in replicas) if in_sync is None else in_sync,
        primary_incarnation=inc,
    )


def with_shards(v: ClusterView, *recs: ShardRecord, reports=True) -> ClusterView:
    for i, rec in enumerate(recs):
        v.shards.setdefault(rec.collection_id, {})[rec.shard] = (rec, 200 + i)
        if reports:
            for r in rec.replicas:
                v.replicas[(rec.collection_id, rec.shard, r)] = ReplicaRecord(r, "r-" + r)
    return v


def test_placed_records_carry_the_collections_definition():
    v = view()
    v.collections["docs"] = replace(COLL, dim=12, metric="l2", m=8, ef_construction=90, ef=33, shards=2)
    [place] = reconcile(v)
    assert place.collection_id == "cid1"
    for i, rec in enumerate(place.records):
        assert (rec.collection, rec.collection_id, rec.shard) == ("docs", "cid1", i)
        assert (rec.dim, rec.metric, rec.m, rec.ef_construction, rec.ef) == (12, "l2", 8, 90, 33)
        assert (rec.epoch, rec.in_sync, rec.primary_incarnation) == (0, (), "")
        assert len(set(rec.replicas)) == 2 and rec.primary == rec.replicas[0]


def test_a_collection_that_cannot_be_placed_does_not_stop_the_next():
    v = view(nodes=("n1", "n2"))
    v.collections["aaa"] = replace(COLL, name="aaa", id="cid-a", replication_factor=3)  # too few nodes
    v.collections["bbb"] = replace(COLL, name="bbb", id="cid-b")
    [place] = reconcile(v)
    assert isinstance(place, PlaceShards) and place.collection_id == "cid-b"


def existing_load(v: ClusterView, replicas: dict[str, int], primaries: dict[str, int]) -> ClusterView:
    """Shards of another collection giving each live node `replicas` replicas of which it leads
    `primaries`; the rest are led by a node that is gone. Not yet created (in_sync empty, no
    reports): reconcile counts them and does nothing else with them."""
    recs = []
    for node, count in replicas.items():
        lead = primaries.get(node, 0)
        recs += [("old", node, (node,))] * lead + [("old", "n9", ("n9", node))] * (count - lead)
    for i, (cid, primary, reps) in enumerate(recs):
        rec = shard(cid, i, primary, reps, in_sync=(), epoch=0, inc="")
        v.shards.setdefault(cid, {})[i] = (rec, 300 + i)
    return v


# Each case: a placement that depends on counting every existing replica and primary exactly
# (the cases were found by comparing the placement with mis-counted loads: -1, +2, a count of
# 1, counting from 1).
@pytest.mark.parametrize(
    ("nodes", "rf", "shards", "replicas", "primaries", "expected"),
    [
        (("n1", "n2"), 2, 3, {"n2": 1}, {"n2": 1}, [("n1", "n2"), ("n1", "n2"), ("n2", "n1")]),
        (("n1", "n2", "n3", "n4"), 4, 1, {"n2": 3, "n4": 3}, {"n2": 2, "n4": 2}, [("n1", "n3", "n2", "n4")]),
        (("n1", "n2"), 2, 2, {"n1": 3, "n2": 3}, {"n1": 2}, [("n2", "n1"), ("n2", "n1")]),
        (("n1", "n2", "n3"), 2, 3, {"n1": 1, "n3": 2}, {}, [("n2", "n1"), ("n3", "n2"), ("n1", "n2")]),
        (("n1", "n2"), 1, 2, {"n2": 3}, {"n2": 1}, [("n1",), ("n1",)]),
        (
            ("n1", "n2", "n3", "n4"),
            1,
            2,
            {"n1": 1, "n2": 1, "n3": 3},
            {"n1": 1, "n2": 1, "n3": 2},
            [("n4",), ("n2",)],
        ),
    ],
)
def test_a_new_collection_is_placed_against_the_exact_existing_load(
    nodes, rf, shards, replicas, primaries, expected
):
    v = existing_load(view(nodes=nodes), replicas, primaries)
    v.collections["docs"] = replace(COLL, shards=shards, replication_factor=rf)
    [place] = reconcile(v)
    assert [rec.replicas for rec in place.records] == expected
    assert [rec.primary for rec in place.records] == [r[0] for r in expected]


# Two collections placed in one pass: the second is placed against the first's exact load.
@pytest.mark.parametrize(
    ("nodes", "first", "second", "expected"),
    [
        (("n1", "n2", "n3", "n4"), (2, 1), (3, 2), [("n1", "n2"), ("n4", "n1"), ("n2", "n3")]),
        (("n1", "n2", "n3", "n4"), (3, 3), (1, 3), [("n2", "n1", "n3")]),
        (("n1", "n2"), (3, 1), (3, 2), [("n1", "n2"), ("n1", "n2"), ("n2", "n1")]),
    ],
)
def test_collections_placed_in_one_pass_count_each_other(nodes, first, second, expected):
    v = view(nodes=nodes)
    v.collections["aaa"] = replace(COLL, name="aaa", id="cid-a", shards=first[0], replication_factor=first[1])
    v.collections["bbb"] = replace(
        COLL, name="bbb", id="cid-b", shards=second[0], replication_factor=second[1]
    )
    a, b = reconcile(v)
    assert (a.collection_id, b.collection_id) == ("cid-a", "cid-b")
    assert [rec.replicas for rec in b.records] == expected


def test_new_collections_balance_against_existing_shards_and_each_other():
    # n1 and n2 already hold a replica and a primary each; n3 nothing: a one-shard rf-1
    # collection goes to n3
    v = with_shards(view(), shard("old", 0, "n1", ("n1",)), shard("old", 1, "n2", ("n2",)))
    v.collections["docs"] = replace(COLL, shards=1, replication_factor=1)
    [place] = reconcile(v)
    assert place.records[0].replicas == ("n3",)
    # two collections placed in one pass spread over each other: 3 + 3 shards on 3 nodes
    v = view()
    v.collections["aaa"] = replace(COLL, name="aaa", id="cid-a", shards=3, replication_factor=1)
    v.collections["bbb"] = replace(COLL, name="bbb", id="cid-b", shards=3, replication_factor=1)
    places = reconcile(v)
    assert [p.collection_id for p in places] == ["cid-a", "cid-b"]
    per_node = {n: 0 for n in v.nodes}
    for p in places:
        for rec in p.records:
            per_node[rec.primary] += 1
    assert per_node == {"n1": 2, "n2": 2, "n3": 2}


def test_purge_on_a_tombstone_with_shards_or_replica_reports_of_that_collection_only():
    v = view()
    v.tombstones.add("gone")
    assert reconcile(v) == []  # nothing left of it
    v.replicas[("other", 0, "n1")] = ReplicaRecord("n1", "x")
    assert reconcile(v) == []  # reports of another collection do not count
    v.replicas[("gone", 0, "n1")] = ReplicaRecord("n1", "x")
    assert reconcile(v) == [PurgeCollection("gone")]  # a replica report, no shard map entry
    del v.replicas[("gone", 0, "n1")]
    with_shards(v, shard("gone"), reports=False)
    assert reconcile(v) == [PurgeCollection("gone")]  # shard map entries, no report


def test_a_tombstoned_collection_is_skipped_and_the_next_one_still_reconciled():
    v = view()
    with_shards(v, shard("aaa", primary="n9", inc="gone"), shard("bbb", primary="n9", inc="gone"))
    v.tombstones.add("aaa")
    v.positions = {("bbb", 0, "n1"): (2, 4), ("bbb", 0, "n2"): (2, 5)}
    assert failover_candidates(v) == [("bbb", 0, "n1"), ("bbb", 0, "n2")]
    actions = reconcile(v)
    assert actions[0] == PurgeCollection("aaa")
    [update] = actions[1:]
    assert update.record.collection_id == "bbb" and update.record.primary == "n2"


def test_failover_reason_and_revision_and_every_shard_handled():
    v = view(nodes=("n2", "n3"))
    with_shards(v, shard("cid1", 0, "n1", ("n1", "n2")), shard("cid1", 1, "n1", ("n1", "n3")))
    v.positions = {("cid1", 0, "n2"): (2, 9), ("cid1", 1, "n3"): (2, 9)}
    a, b = reconcile(v)
    assert (a.record.shard, a.record.primary, a.mod_revision, a.reason) == (0, "n2", 200, "failover from n1")
    assert (b.record.shard, b.record.primary, b.mod_revision, b.reason) == (1, "n3", 201, "failover from n1")
    assert a.record.primary_incarnation == "inc-n2" and a.record.epoch == 3


def test_a_new_shard_whose_primary_is_not_live_waits_and_the_next_one_starts():
    v = view(nodes=("n2", "n3"))
    with_shards(
        v,
        shard("cid1", 0, "n1", ("n1", "n2"), in_sync=(), epoch=0, inc=""),
        shard("cid1", 1, "n2", ("n2", "n3"), in_sync=(), epoch=0, inc=""),
    )
    [update] = reconcile(v)
    assert update.record.shard == 1 and update.mod_revision == 201 and update.reason == "replicas created"
    assert update.record.epoch == 1 and update.record.primary_incarnation == "inc-n2"
    assert update.record.in_sync == (InSync("n2", "r-n2"), InSync("n3", "r-n3"))


def test_a_new_shard_waits_for_ready_reports():
    v = view()
    rec = shard(in_sync=(), epoch=0, inc="")
    with_shards(v, rec)
    v.replicas[("cid1", 0, "n2")] = ReplicaRecord("n2", "r-n2", state="creating")
    assert reconcile(v) == []


def test_a_healthy_shard_does_not_stop_the_next_shard():
    v = view()
    with_shards(v, shard("cid1", 0), shard("cid1", 1, in_sync=(), epoch=0, inc=""))
    [update] = reconcile(v)
    assert update.record.shard == 1 and update.reason == "replicas created"


# --- repair and drain: exact records, reasons and the load they add ---------------------------


def repair_view(grace=10.0, dead_for=None, nodes=("n1", "n3", "n4")):
    v = view(nodes=nodes)
    v.repair_grace_s = grace
    v.dead_for_s = {"n2": 10.0} if dead_for is None else dead_for
    v.collections["docs"] = COLL
    return v


def test_repair_at_exactly_the_grace_period_and_not_before():
    v = with_shards(repair_view(dead_for={"n2": 10.0}), shard())
    [a] = reconcile(v)
    assert a.reason == "repair: n2 gone past the grace period; new replica on n3"
    assert a.mod_revision == 200 and a.record.replicas == ("n1", "n3")
    assert a.record.in_sync == (InSync("n1", "r-n1"),) and a.removed == (("cid1", 0, "n2", "r-n2"),)
    assert reconcile(with_shards(repair_view(dead_for={"n2": 9.99}), shard())) == []
    # a node the leader has no dead time for is not repaired, whatever the grace
    assert reconcile(with_shards(repair_view(grace=0.5, dead_for={}), shard())) == []


def test_repair_of_a_replica_that_never_reported_removes_it_with_no_incarnation():
    v = with_shards(repair_view(), shard())
    del v.replicas[("cid1", 0, "n2")]
    [a] = reconcile(v)
    assert a.removed == (("cid1", 0, "n2", ""),)


def test_repair_and_drain_pick_the_least_loaded_spare_then_by_name():
    # n3 holds a replica of another collection, n4 none: n4 is the spare
    v = with_shards(repair_view(), shard(), shard("other", 0, "n3", ("n3",)))
    [a] = reconcile(v)
    assert a.record.replicas == ("n1", "n4")
    # equal load: by name
    v = with_shards(
        repair_view(), shard(), shard("other", 0, "n3", ("n3",)), shard("other", 1, "n4", ("n4",))
    )
    assert reconcile(v)[0].record.replicas == ("n1", "n3")


def test_each_move_adds_to_the_load_the_next_move_sees():
    # two shards lose n2 in one pass: the first takes n3, the second then takes n4
    v = with_shards(repair_view(), shard("cid1", 0), shard("cid1", 1))
    a, b = reconcile(v)
    assert a.record.replicas == ("n1", "n3") and b.record.replicas == ("n1", "n4")


@pytest.mark.parametrize(
    ("other_load", "second_spare"),
    [
        ({"n4": 1}, "n3"),  # n3 takes the first (0 < 1), then n3 1 = n4 1: by name, n3 again
        ({"n3": 2, "n4": 2}, "n4"),  # n3 takes the first (by name), then n3 3 > n4 2: n4
    ],
)
def test_the_load_a_move_adds_is_counted_exactly(other_load, second_spare):
    v = existing_load(repair_view(), other_load, {})
    with_shards(v, shard("cid1", 0), shard("cid1", 1))
    a, b = reconcile(v)
    assert a.record.replicas == ("n1", "n3") and b.record.replicas == ("n1", second_spare)


def test_drain_steps_name_their_reason_and_revision():
    v = view(nodes=("n1", "n2", "n3"))
    v.collections["docs"] = COLL
    v.draining = {"n2"}
    with_shards(v, shard())
    [a] = reconcile(v)
    assert (a.reason, a.mod_revision, a.removed) == ("drain n2: new replica on n3", 200, ())
    assert a.record.replicas == ("n1", "n2", "n3") and a.record.in_sync == shard().in_sync

    rec = shard(replicas=("n1", "n2", "n3"))
    v.shards = {}
    with_shards(v, rec)
    [a] = reconcile(v)
    assert (a.reason, a.mod_revision) == ("drain n2: replica removed", 200)
    assert a.record.replicas == ("n1", "n3")
    assert a.record.in_sync == (InSync("n1", "r-n1"), InSync("n3", "r-n3"))
    assert a.removed == (("cid1", 0, "n2", "r-n2"),)

    v.draining = {"n1"}
    [a] = reconcile(v)
    assert (a.reason, a.mod_revision) == ("drain n1: primary handed to n2", 200)
    assert (a.record.primary, a.record.epoch, a.record.primary_incarnation) == ("n2", 3, "inc-n2")
    assert a.record.replicas == rec.replicas and a.record.in_sync == rec.in_sync


# --- from_kvs: the reason each bad record is left out, and its one log line --------------------


def kv(key: bytes, value: bytes, mod_revision: int = 7):
    return SimpleNamespace(key=key, value=value, mod_revision=mod_revision)


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (schema.node_key("n3"), NodeRecord("n4", "x:1", "p").to_json(), "id 'n4' does not match the key"),
        (schema.collection_key("default", "c3"), COLL.to_json(), "name 'docs' does not match the key"),
        (
            schema.replica_key("cid1", 1, "n2"),
            ReplicaRecord("n1", "r").to_json(),
            "node 'n1' does not match the key",
        ),
        (
            schema.shard_key("cid1", 1),
            shard("cid1", 0).to_json(),
            "key does not match collection_id 'cid1' / shard 0",
        ),
        (schema.replica_tombstone_key("cid1", 0, "n1"), b"\xff", "value is not UTF-8"),
    ],
)
def test_a_record_disagreeing_with_its_key_is_left_out_with_the_reason(key, value, why):
    v = ClusterView.from_kvs(33, [kv(key, value)])
    assert v.revision == 33
    assert v.bad_records == {key: f"{schema.show_key(key)}: {why}"}
    assert (v.nodes, v.collections, v.shards, v.replicas, v.replica_tombstones) == ({}, {}, {}, {}, {})


def test_good_records_of_every_family_are_read():
    rec = shard("cid1", 0)
    v = ClusterView.from_kvs(
        12,
        [
            kv(schema.node_key("n1"), NodeRecord("n1", "a:1", "p").to_json()),
            kv(schema.collection_key("default", "docs"), COLL.to_json()),
            kv(schema.shard_key("cid1", 0), rec.to_json(), 41),
            kv(schema.replica_key("cid1", 0, "n2"), ReplicaRecord("n2", "r2").to_json()),
            kv(schema.replica_tombstone_key("cid1", 0, "n3"), b"r3"),
            kv(schema.drain_key("n1"), b""),
            kv(schema.tombstone_key("cid0"), b"{}"),
        ],
    )
    assert v.revision == 12 and v.bad_records == {}
    assert v.nodes == {"n1": NodeRecord("n1", "a:1", "p")} and v.collections == {"default/docs": COLL}
    assert v.shards == {"cid1": {0: (rec, 41)}}
    assert v.replicas == {("cid1", 0, "n2"): ReplicaRecord("n2", "r2")}
    assert v.replica_tombstones == {("cid1", 0, "n3"): "r3"}
    assert v.draining == {"n1"} and v.tombstones == {"cid0"}


def test_a_bad_record_is_logged_with_its_key_and_reason(caplog):
    key = schema.node_key("n7")
    with caplog.at_level(logging.WARNING, logger="quartz.meta"):
        ClusterView.from_kvs(5, [kv(key, NodeRecord("n8", "x:1", "p").to_json(), 1234567)])
    [record] = [r for r in caplog.records if getattr(r, "key", None) == "/quartz/nodes/n7"]
    assert record.getMessage() == "bad record left out of the cluster view"
    assert record.error == "/quartz/nodes/n7: id 'n8' does not match the key"


# ------------------------------------------------------------------ primary rebalance (issue 12)


def after_failover(live_for=60.0, after=10.0, primaries=("n1", "n1", "n1", "n1")):
    """4 shards of 3 replicas: failover left every primary on n1 (as the probe saw)."""
    v = view()
    recs = [
        shard(n=i, primary=p, replicas=("n1", "n2", "n3"), inc="inc-" + p) for i, p in enumerate(primaries)
    ]
    with_shards(v, *recs)
    v.live_for_s = {n: live_for for n in v.nodes}
    v.rebalance_after_s = after
    return v


def rebalance_moves(v: ClusterView) -> list[UpdateShard]:
    return [a for a in reconcile(v) if isinstance(a, UpdateShard) and a.reason.startswith("rebalance")]


def test_primaries_move_back_until_they_are_even_and_then_stop():
    v = after_failover()
    moves = rebalance_moves(v)
    # n1 leads 4, the others 0: a move while the leader has >= 2 more than the target
    assert [(m.record.shard, m.record.primary) for m in moves] == [(0, "n2"), (1, "n3")]
    for m in moves:
        assert m.record.epoch == 3 and m.record.primary_incarnation == "inc-" + m.record.primary
        assert m.reason.startswith("rebalance: primary handed from n1 (")
        assert m.mod_revision == 200 + m.record.shard
    # applied: 2, 1, 1 is as even as 4 primaries on 3 nodes get: nothing more moves
    for m in moves:
        v.shards["cid1"][m.record.shard] = (m.record, 300)
    assert rebalance_moves(v) == []


def test_no_rebalance_to_a_node_not_up_long_enough_draining_or_not_in_sync():
    assert rebalance_moves(after_failover(live_for=9.9)) == []
    assert len(rebalance_moves(after_failover(live_for=10.0))) == 2  # exactly the delay: moves
    assert rebalance_moves(after_failover(after=None)) == []  # not the leader's view: never
    v = after_failover()
    v.draining.add("n2")
    assert [m.record.primary for m in rebalance_moves(v)] == ["n3", "n3"]  # 4-0 -> 3-1 -> 2-2
    v = after_failover()
    for i in range(4):  # n3's replica was re-created: its incarnation no longer matches
        v.replicas[("cid1", i, "n3")] = ReplicaRecord("n3", "new")
    assert [m.record.primary for m in rebalance_moves(v)] == ["n2", "n2"]
    v = after_failover()
    v.draining.add("n1")  # a draining primary is handed over by the drain, not here
    assert rebalance_moves(v) == []


def test_a_spread_of_one_is_left_alone_and_two_is_narrowed():
    assert rebalance_moves(after_failover(primaries=("n1", "n1", "n2", "n3"))) == []
    (move,) = rebalance_moves(after_failover(primaries=("n1", "n1", "n2", "n2")))  # 2-2-0
    assert (move.record.shard, move.record.primary) == (0, "n3")
