"""Failover decisions of the coordinator, driven directly (no etcd, no nodes)."""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster.coordinator.reconcile import ClusterView, UpdateShard, failover_candidates, reconcile
from quartz_cluster.meta.schema import InSync, NodeRecord, ReplicaRecord, ShardRecord

REC = ShardRecord(
    "docs",
    "cid",
    0,
    8,
    "cosine",
    16,
    200,
    64,
    epoch=3,
    primary="n1",
    replicas=("n1", "n2", "n3"),
    in_sync=(InSync("n1", "r1"), InSync("n2", "r2"), InSync("n3", "r3")),
    primary_incarnation="p1",
)


def view(live=("n1", "n2", "n3"), incarnations=None, rec=REC, positions=None) -> ClusterView:
    v = ClusterView(revision=5)
    for n in live:
        v.nodes[n] = NodeRecord(n, f"addr-{n}", (incarnations or {}).get(n, "p" + n[1:]))
    v.shards["cid"] = {0: (rec, 77)}
    for i, n in enumerate(("n1", "n2", "n3")):
        v.replicas[("cid", 0, n)] = ReplicaRecord(n, f"r{i + 1}")
    v.positions = positions or {}
    return v


def test_healthy_primary_is_left_alone():
    v = view()
    assert failover_candidates(v) == [] and reconcile(v) == []


def test_lost_primary_is_replaced_by_the_most_advanced_in_sync_replica():
    v = view(live=("n2", "n3"))
    assert sorted(failover_candidates(v)) == [("cid", 0, "n2"), ("cid", 0, "n3")]
    assert reconcile(v) == []  # positions unknown yet: no decision
    v.positions = {("cid", 0, "n2"): (3, 40), ("cid", 0, "n3"): (3, 42)}
    [action] = reconcile(v)
    assert isinstance(action, UpdateShard) and action.mod_revision == 77
    new = action.record
    assert (new.epoch, new.primary, new.primary_incarnation) == (4, "n3", "p3")
    assert [i.node for i in new.in_sync] == ["n2", "n3"]  # the lost primary leaves in_sync


def test_last_epoch_outranks_log_length():
    v = view(live=("n2", "n3"), positions={("cid", 0, "n2"): (3, 10), ("cid", 0, "n3"): (2, 50)})
    assert reconcile(v)[0].record.primary == "n2"


def test_a_replica_that_lost_its_data_is_not_promoted():
    v = view(live=("n2", "n3"), positions={("cid", 0, "n2"): (3, 40), ("cid", 0, "n3"): (3, 42)})
    v.replicas[("cid", 0, "n3")] = ReplicaRecord("n3", "re-created")
    assert failover_candidates(v) == [("cid", 0, "n2")]
    assert reconcile(v)[0].record.primary == "n2"


def test_restarted_primary_gets_a_new_epoch_and_may_keep_leading():
    v = view(incarnations={"n1": "p1-new"})
    assert ("cid", 0, "n1") in failover_candidates(v)
    v.positions = {("cid", 0, "n1"): (3, 50), ("cid", 0, "n2"): (3, 40), ("cid", 0, "n3"): (3, 40)}
    new = reconcile(v)[0].record
    assert (new.epoch, new.primary, new.primary_incarnation) == (4, "n1", "p1-new")
    assert len(new.in_sync) == 3


def test_no_live_in_sync_replica_means_no_failover():
    rec = replace(REC, in_sync=(InSync("n1", "r1"),))
    v = view(live=("n2", "n3"), rec=rec, positions={("cid", 0, "n2"): (3, 40)})
    assert failover_candidates(v) == [] and reconcile(v) == []


@settings(max_examples=300, deadline=None)
@given(
    live=st.sets(st.sampled_from(["n1", "n2", "n3"])),
    in_sync=st.sets(st.sampled_from(["n1", "n2", "n3"]), min_size=1),
    restarted=st.booleans(),
    lost_data=st.sets(st.sampled_from(["n1", "n2", "n3"])),
    pos=st.dictionaries(st.sampled_from(["n1", "n2", "n3"]), st.tuples(st.integers(0, 4), st.integers(0, 9))),
)
def test_failover_only_ever_promotes_a_live_intact_in_sync_replica(live, in_sync, restarted, lost_data, pos):
    members = tuple(InSync(n, f"r{n[1:]}") for n in sorted(in_sync | {"n1"}))
    rec = replace(REC, in_sync=members)
    v = view(live=tuple(sorted(live)), rec=rec, incarnations={"n1": "p1-new" if restarted else "p1"})
    for n in lost_data:
        v.replicas[("cid", 0, n)] = ReplicaRecord(n, "fresh")
    v.positions = {("cid", 0, n): p for n, p in pos.items()}
    for action in reconcile(v):
        new = action.record
        assert new.epoch == rec.epoch + 1
        assert new.primary in live and new.primary in {m.node for m in members}
        assert new.primary not in lost_data
        assert {m.node for m in new.in_sync} <= {m.node for m in members}
        assert new.primary in {m.node for m in new.in_sync}
        assert new.primary != "n1" or restarted
