"""The etcd key schema and its records: exact keys (other processes and older releases read
them) and JSON round trips."""

import orjson
import pytest

from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import (
    CollectionRecord,
    InSync,
    LeaderRecord,
    NodeRecord,
    ReplicaRecord,
    ShardRecord,
    Tombstone,
)


def test_prefixes_are_fixed():
    assert schema.ROOT == b"/quartz/"
    assert schema.NODES == b"/quartz/nodes/"
    assert schema.COLLECTIONS == b"/quartz/collections/"
    assert schema.SHARDS == b"/quartz/shards/"
    assert schema.REPLICAS == b"/quartz/replicas/"
    assert schema.TOMBSTONES == b"/quartz/tombstones/"
    assert schema.REPLICA_TOMBSTONES == b"/quartz/replica-tombstones/"
    assert schema.DRAINING == b"/quartz/drain/"
    assert schema.LEADER == b"/quartz/coordinator/leader"


def test_keys_are_exact():
    assert schema.node_key("n1") == b"/quartz/nodes/n1"
    assert schema.collection_key("docs") == b"/quartz/collections/docs"
    assert schema.shard_key("cid", 7) == b"/quartz/shards/cid/0007"
    assert schema.shard_key("cid", 1023) == b"/quartz/shards/cid/1023"
    assert schema.replica_key("cid", 3, "n2") == b"/quartz/replicas/cid/0003/n2"
    assert schema.replica_tombstone_key("cid", 12, "n2") == b"/quartz/replica-tombstones/cid/0012/n2"
    assert schema.drain_key("n3") == b"/quartz/drain/n3"
    assert schema.tombstone_key("cid") == b"/quartz/tombstones/cid"


def test_shard_keys_sort_in_shard_order():
    keys = [schema.shard_key("c", s) for s in (0, 1, 2, 9, 10, 100, 1023)]
    assert keys == sorted(keys)


def test_key_families_do_not_shadow_each_other():
    # a reader dispatches on prefixes: no key of one family may start with another's prefix
    samples = {
        schema.NODES: schema.node_key("x"),
        schema.COLLECTIONS: schema.collection_key("x"),
        schema.SHARDS: schema.shard_key("x", 0),
        schema.REPLICAS: schema.replica_key("x", 0, "n"),
        schema.REPLICA_TOMBSTONES: schema.replica_tombstone_key("x", 0, "n"),
        schema.DRAINING: schema.drain_key("x"),
        schema.TOMBSTONES: schema.tombstone_key("x"),
        schema.LEADER: schema.LEADER,
    }
    for prefix, key in samples.items():
        assert [p for p in samples if key.startswith(p)] == [prefix]


SHARD = ShardRecord(
    collection="docs",
    collection_id="cid",
    shard=2,
    dim=8,
    metric="l2",
    m=16,
    ef_construction=200,
    ef=64,
    epoch=5,
    primary="n1",
    replicas=("n1", "n2"),
    in_sync=(InSync("n1", "i1"), InSync("n2", "i2")),
    primary_incarnation="p1",
)


@pytest.mark.parametrize(
    "record",
    [
        NodeRecord("n1", "127.0.0.1:7001", "inc", shards=3),
        NodeRecord("n1", "127.0.0.1:7001", "inc"),
        CollectionRecord("docs", "cid", 8, "cosine", 4, 2, 16, 200, 64),
        SHARD,
        ReplicaRecord("n1", "r1", state="creating"),
        ReplicaRecord("n1", "r1"),
        Tombstone("docs", "cid"),
        LeaderRecord("c1"),
    ],
)
def test_records_round_trip_through_json(record):
    raw = record.to_json()
    assert isinstance(raw, bytes)
    back = type(record).from_json(raw)
    assert back == record and type(back) is type(record)


def test_record_json_is_a_plain_object_of_its_fields():
    assert orjson.loads(NodeRecord("n1", "a:1", "i").to_json()) == {
        "id": "n1",
        "address": "a:1",
        "incarnation": "i",
        "shards": 0,
    }
    assert orjson.loads(SHARD.to_json())["in_sync"] == [
        {"node": "n1", "incarnation": "i1"},
        {"node": "n2", "incarnation": "i2"},
    ]
    assert ReplicaRecord.from_json(b'{"node": "n", "incarnation": "r"}').state == "ready"


def test_shard_record_decodes_lists_as_tuples_and_defaults_missing_fields():
    back = ShardRecord.from_json(SHARD.to_json())
    assert isinstance(back.replicas, tuple) and isinstance(back.in_sync, tuple)
    assert all(isinstance(i, InSync) for i in back.in_sync)
    hash(back)  # usable as a key: nothing mutable inside
    d = orjson.loads(SHARD.to_json())
    del d["in_sync"], d["primary_incarnation"]  # written by an older release
    old = ShardRecord.from_json(orjson.dumps(d))
    assert old.in_sync == () and old.primary_incarnation == "" and old.replicas == ("n1", "n2")


def test_a_shard_is_ready_once_its_primary_is_in_sync():
    assert SHARD.ready
    assert not ShardRecord(**{**_fields(SHARD), "in_sync": ()}).ready
    assert not ShardRecord(**{**_fields(SHARD), "in_sync": (InSync("n2", "i2"),)}).ready
    assert ShardRecord(**{**_fields(SHARD), "primary": "n2", "in_sync": (InSync("n2", "i2"),)}).ready


def _fields(rec):
    return {f: getattr(rec, f) for f in rec.__dataclass_fields__}
