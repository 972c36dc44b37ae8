"""Node ids are etcd key segments: refused where they enter (the CLI, NodeSettings) unless they
match limits.NAME_PATTERN, and a bad record in etcd is skipped and reported by the cluster view
instead of stopping the control plane (issue 11, item 8)."""

from __future__ import annotations

import logging
from collections import namedtuple
from dataclasses import asdict

import orjson
import pytest

from quartz_cluster import cli
from quartz_cluster.auth.cluster import ClusterCredentials
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import InvalidArgument
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import (
    CollectionRecord,
    InSync,
    NodeRecord,
    ReplicaRecord,
    ShardRecord,
    Tombstone,
)
from quartz_cluster.node import main as node_main

KV = namedtuple("KV", "key value mod_revision")

BAD_IDS = ["a/b", "", "n" * 65, "n 1", "n1\n", "nö", "../n1"]

# ---------------------------------------------------------------- where ids enter


@pytest.mark.parametrize("bad", BAD_IDS)
def test_cli_refuses_a_node_id_that_is_not_a_name_naming_the_flag(bad, tmp_path, capsys, monkeypatch):
    started = []
    monkeypatch.setattr(node_main, "run", lambda settings, level: started.append(settings) or 0)
    with pytest.raises(SystemExit) as exc:
        cli.main(["node", "--id", bad, "--data-dir", str(tmp_path / "n")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --id" in err and "[A-Za-z0-9_-]{1,64}" in err
    assert started == [] and not (tmp_path / "n").exists()  # nothing was started or written


def test_cli_accepts_a_good_node_id(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(node_main, "run", lambda settings, level: started.append(settings) or 0)
    assert cli.main(["node", "--id", "node-1_a", "--data-dir", str(tmp_path / "n"), "--no-auth"]) == 0
    assert started[0].node_id == "node-1_a" and started[0].credentials is None
    creds = ClusterCredentials.create(tmp_path)  # what `quartz up` leaves in its data dir
    argv = ["node", "--id", "node-1_a", "--data-dir", str(tmp_path / "n"), "--cluster-dir", str(tmp_path)]
    assert cli.main(argv) == 0
    assert started[1].node_id == "node-1_a" and started[1].credentials.secret == creds.secret


def test_cli_node_needs_the_cluster_dir_or_no_auth(tmp_path, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(node_main, "run", lambda settings, level: started.append(settings) or 0)
    assert cli.main(["node", "--id", "n1", "--data-dir", str(tmp_path / "n")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--cluster-dir D" in err and "--no-auth" in err
    assert started == []


@pytest.mark.parametrize("bad", BAD_IDS)
def test_node_settings_refuse_a_node_id_that_is_not_a_name(bad, tmp_path):
    with pytest.raises(InvalidArgument) as exc:
        node_main.NodeSettings(node_id=bad, data_dir=str(tmp_path))
    assert exc.value.field == "node_id" and str(exc.value).startswith("node_id: must match")


# ---------------------------------------------------------------- parsing etcd records

COLL = CollectionRecord("docs", "cid1", 8, "cosine", 2, 2, 16, 200, 64)
ACME_DOCS = CollectionRecord("docs", "cid9", 4, "l2", 1, 1, 16, 200, 64, tenant="acme")  # same name
ACME = schema.TenantRecord("acme", 1700000000)
KEY1 = schema.KeyRecord("k1", "acme", "read-write", "h" * 64, ("docs",))


def _shard(shard: int, **kw) -> ShardRecord:
    base = dict(
        collection="docs",
        collection_id="cid1",
        shard=shard,
        dim=8,
        metric="cosine",
        m=16,
        ef_construction=200,
        ef=64,
        epoch=3,
        primary="n1",
        replicas=("n1", "n2"),
        in_sync=(InSync("n1", "r1"), InSync("n2", "r2")),
        primary_incarnation="p1",
    )
    return ShardRecord(**{**base, **kw})


def good_kvs() -> list[KV]:
    kvs = [
        KV(schema.node_key("n1"), NodeRecord("n1", "127.0.0.1:1", "p1", 2).to_json(), 5),
        KV(schema.node_key("n2"), NodeRecord("n2", "127.0.0.1:2", "p2").to_json(), 6),
        KV(schema.collection_key("default", "docs"), COLL.to_json(), 7),
        KV(schema.collection_key("acme", "docs"), ACME_DOCS.to_json(), 7),
        KV(schema.tenant_key("acme"), ACME.to_json(), 4),
        KV(schema.key_record_key("k1"), KEY1.to_json(), 4),
        KV(schema.shard_key("cid1", 0), _shard(0).to_json(), 8),
        KV(schema.shard_key("cid1", 1), _shard(1, in_sync=()).to_json(), 9),
        KV(schema.replica_key("cid1", 0, "n1"), ReplicaRecord("n1", "r1").to_json(), 10),
        KV(schema.replica_key("cid1", 0, "n2"), ReplicaRecord("n2", "r2", "creating").to_json(), 11),
        KV(schema.replica_tombstone_key("cid1", 1, "n3"), b"r9", 12),
        KV(schema.tombstone_key("cid0"), Tombstone("old", "cid0").to_json(), 13),
        KV(schema.drain_key("n2"), b"{}", 14),
        KV(schema.LEADER, schema.LeaderRecord("c-1").to_json(), 15),
    ]
    return kvs


def _parsed(v: ClusterView) -> tuple:
    return (
        v.nodes,
        v.collections,
        v.shards,
        v.replicas,
        v.replica_tombstones,
        v.tombstones,
        v.draining,
        v.tenants,
        v.keys,
    )


def test_good_records_parse_exactly():
    v = ClusterView.from_kvs(20, good_kvs())
    assert v.nodes["n1"] == NodeRecord("n1", "127.0.0.1:1", "p1", 2) and set(v.nodes) == {"n1", "n2"}
    assert v.collections == {"default/docs": COLL, "acme/docs": ACME_DOCS}  # two tenants, one name
    assert v.tenants == {"acme": ACME} and v.keys == {"k1": KEY1}
    assert v.shards == {"cid1": {0: (_shard(0), 8), 1: (_shard(1, in_sync=()), 9)}}
    assert v.replicas == {
        ("cid1", 0, "n1"): ReplicaRecord("n1", "r1"),
        ("cid1", 0, "n2"): ReplicaRecord("n2", "r2", "creating"),
    }
    assert v.replica_tombstones == {("cid1", 1, "n3"): "r9"}
    assert v.tombstones == {"cid0"} and v.draining == {"n2"}
    assert v.bad_records == {}


def _json(obj: dict) -> bytes:
    return orjson.dumps(obj)


SHARD_DICT = {
    "collection": "docs",
    "collection_id": "cid2",
    "shard": 0,
    "dim": 8,
    "metric": "cosine",
    "m": 16,
    "ef_construction": 200,
    "ef": 64,
    "epoch": 1,
    "primary": "n1",
    "replicas": ["n1"],
    "in_sync": [{"node": "n1", "incarnation": "r"}],
    "primary_incarnation": "p",
}

REPLICA = ReplicaRecord("n1", "r").to_json()
NODE3 = {"id": "n3", "address": "x:1", "incarnation": "p"}
COLL2 = {**asdict(COLL), "name": "c2", "id": "cid2"}


def _shard_json(**kw) -> bytes:
    return _json({**SHARD_DICT, **kw})


# one bad record each: (what, key, value)
BAD_RECORDS = [
    # the defect of issue 11: a node started with --id a/b registers and reports replicas
    ("node id with /", b"/quartz/nodes/a/b", NodeRecord("a/b", "x:1", "p").to_json()),
    ("replica of a node id with /", b"/quartz/replicas/cid1/0000/a/b", ReplicaRecord("a/b", "r").to_json()),
    ("replica tombstone, node id with /", b"/quartz/replica-tombstones/cid1/0000/a/b", b"r"),
    ("replica key, too few segments", b"/quartz/replicas/cid1/0000", REPLICA),
    ("replica key, shard not a number", b"/quartz/replicas/cid1/00x1/n1", REPLICA),
    ("replica key, shard not 4 digits", b"/quartz/replicas/cid1/1/n1", REPLICA),
    ("replica key, shard beyond the limit", b"/quartz/replicas/cid1/9999/n1", REPLICA),
    ("replica key, empty collection id", b"/quartz/replicas//0000/n1", REPLICA),
    ("replica key, not UTF-8", b"/quartz/replicas/cid1/0000/n\xff", REPLICA),
    ("replica record, node differs from key", schema.replica_key("cid1", 1, "n2"), REPLICA),
    ("replica record, bad JSON", schema.replica_key("cid1", 1, "n1"), b"{not json"),
    ("replica record, not an object", schema.replica_key("cid1", 1, "n1"), b"[1, 2]"),
    ("replica tombstone, shard not a number", b"/quartz/replica-tombstones/cid1/+001/n1", b"r"),
    ("replica tombstone, value not UTF-8", schema.replica_tombstone_key("cid1", 0, "n1"), b"\xff"),
    ("node record, bad JSON", schema.node_key("n3"), b"{"),
    ("node record, id differs from key", schema.node_key("n3"), NodeRecord("n4", "x:1", "p").to_json()),
    ("node record, missing field", schema.node_key("n3"), _json({"id": "n3", "address": "x:1"})),
    ("node record, unknown field", schema.node_key("n3"), _json({**NODE3, "zone": 1})),
    ("node record, wrong type", schema.node_key("n3"), _json({**NODE3, "shards": "2"})),
    ("node record, bool for int", schema.node_key("n3"), _json({**NODE3, "shards": True})),
    (
        "collection record, missing field",
        schema.collection_key("default", "c2"),
        _json({"name": "c2", "id": "cid2"}),
    ),
    ("collection record, name with /", b"/quartz/collections/default/c/2", _json({**COLL2, "name": "c/2"})),
    ("collection record, name differs from key", schema.collection_key("default", "c3"), _json(COLL2)),
    ("collection key without a tenant", b"/quartz/collections/c2", _json(COLL2)),
    ("collection record, tenant differs from key", schema.collection_key("acme", "c2"), _json(COLL2)),
    ("collection record, tenant with /", b"/quartz/collections/a/b/c2", _json({**COLL2, "tenant": "a/b"})),
    ("tenant record, name differs from key", schema.tenant_key("t2"), schema.TenantRecord("t3").to_json()),
    ("tenant key with /", b"/quartz/auth/tenants/t/2", schema.TenantRecord("t/2").to_json()),
    ("key record, id differs from key", schema.key_record_key("k2"), KEY1.to_json()),
    (
        "key record, collection with /",
        schema.key_record_key("k3"),
        _json({**asdict(KEY1), "id": "k3", "collections": ["a/b"]}),
    ),
    ("shard record, bad JSON", schema.shard_key("cid2", 0), b"\x00\x01"),
    ("shard record, wrong key", schema.shard_key("cid2", 1), _shard_json()),
    ("shard record, shard not an int", schema.shard_key("cid2", 0), _shard_json(shard="0")),
    ("shard record, negative shard", b"/quartz/shards/cid2/-001", _shard_json(shard=-1)),
    ("shard record, replicas not a list", schema.shard_key("cid2", 0), _shard_json(replicas="n1")),
    ("shard record, replica id with /", schema.shard_key("cid2", 0), _shard_json(replicas=["n1", "a/b"])),
    ("shard record, primary with /", schema.shard_key("cid2", 0), _shard_json(primary="a/b")),
    ("shard record, in_sync not a list", schema.shard_key("cid2", 0), _shard_json(in_sync={"n1": "r"})),
    ("shard record, in_sync entry not an object", schema.shard_key("cid2", 0), _shard_json(in_sync=["n1"])),
    (
        "shard record, in_sync entry missing a field",
        schema.shard_key("cid2", 0),
        _shard_json(in_sync=[{"node": "n1"}]),
    ),
    (
        "shard record, in_sync node with /",
        schema.shard_key("cid2", 0),
        _shard_json(in_sync=[{"node": "a/b", "incarnation": "r"}]),
    ),
    ("shard record, collection id with /", b"/quartz/shards/c/d/0000", _shard_json(collection_id="c/d")),
    ("tombstone key with /", b"/quartz/tombstones/cid0/x", b"{}"),
    ("tombstone key, empty", b"/quartz/tombstones/", b"{}"),
    ("drain key with /", b"/quartz/drain/a/b", b"{}"),
]


@pytest.mark.parametrize(("what", "key", "value"), BAD_RECORDS, ids=[b[0] for b in BAD_RECORDS])
def test_one_bad_record_is_skipped_and_reported_and_the_rest_parsed(what, key, value):
    good = good_kvs()
    expected = _parsed(ClusterView.from_kvs(20, good))
    for at in (0, len(good) // 2, len(good)):  # wherever it sorts in the listing
        kvs = [*good[:at], KV(key, value, 99), *good[at:]]
        v = ClusterView.from_kvs(20, kvs)
        assert _parsed(v) == expected, what
        assert list(v.bad_records) == [key], what
        assert v.bad_records[key].startswith(schema.show_key(key)), what  # names the key


def test_every_bad_record_at_once_is_skipped_and_the_rest_parsed():
    good = good_kvs()
    bad = [KV(key, value, 99 + i) for i, (_, key, value) in enumerate(BAD_RECORDS)]
    kvs = [kv for pair in zip(bad, good * 10, strict=False) for kv in pair]
    v = ClusterView.from_kvs(20, kvs)
    assert _parsed(v) == _parsed(ClusterView.from_kvs(20, good))
    assert set(v.bad_records) == {kv.key for kv in bad}


def test_a_bad_record_is_logged_once_and_again_when_rewritten_still_bad(caplog):
    bad = KV(b"/quartz/replicas/cid1/0000/a/b", ReplicaRecord("a/b", "r").to_json(), 50)
    with caplog.at_level(logging.WARNING, logger="quartz.meta"):
        for _ in range(3):
            ClusterView.from_kvs(20, [*good_kvs(), bad])
        assert len(caplog.records) == 1
        assert caplog.records[0].key == "/quartz/replicas/cid1/0000/a/b"
        ClusterView.from_kvs(21, [*good_kvs(), bad._replace(mod_revision=51)])
        assert len(caplog.records) == 2


def test_records_round_trip_and_from_json_names_the_field():
    for rec in (
        _shard(0),
        _shard(1, in_sync=()),
        COLL,
        NodeRecord("n1", "a:1", "p", 3),
        ReplicaRecord("n1", "r"),
    ):
        assert type(rec).from_json(rec.to_json()) == rec
    assert schema.LeaderRecord.from_json(schema.LeaderRecord("c-1").to_json()) == schema.LeaderRecord("c-1")
    with pytest.raises(schema.BadRecord) as exc:
        ShardRecord.from_json(_json({**SHARD_DICT, "epoch": "1"}), "/quartz/shards/cid2/0000")
    assert str(exc.value).startswith("/quartz/shards/cid2/0000.epoch: must be int")
    with pytest.raises(schema.BadRecord) as exc:
        ShardRecord.from_json(_json({**SHARD_DICT, "in_sync": [{"node": "a/b", "incarnation": "r"}]}))
    assert str(exc.value).startswith("ShardRecord.in_sync[0].node: must match")
