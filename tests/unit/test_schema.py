"""The etcd key schema and its records: exact keys (other processes and older releases read
them) and JSON round trips."""

import orjson
import pytest

from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import (
    CollectionRecord,
    InSync,
    KeyRecord,
    LeaderRecord,
    NodeRecord,
    ReplicaRecord,
    ShardRecord,
    TenantRecord,
    Tombstone,
)


def test_prefixes_are_fixed():
    assert schema.ROOT == b"/quartz/"
    assert schema.NODES == b"/quartz/nodes/"
    assert schema.COORDINATORS == b"/quartz/coordinators/"
    assert schema.coordinator_key("c-1") == b"/quartz/coordinators/c-1"
    assert schema.COLLECTIONS == b"/quartz/collections/"
    assert schema.SHARDS == b"/quartz/shards/"
    assert schema.REPLICAS == b"/quartz/replicas/"
    assert schema.TOMBSTONES == b"/quartz/tombstones/"
    assert schema.REPLICA_TOMBSTONES == b"/quartz/replica-tombstones/"
    assert schema.DRAINING == b"/quartz/drain/"
    assert schema.LEADER == b"/quartz/coordinator/leader"
    assert schema.TENANTS == b"/quartz/auth/tenants/"
    assert schema.KEYS == b"/quartz/auth/keys/"
    assert schema.DEFAULT_TENANT == "default"


def test_keys_are_exact():
    assert schema.node_key("n1") == b"/quartz/nodes/n1"
    assert schema.collection_key("default", "docs") == b"/quartz/collections/default/docs"
    assert schema.collection_key("acme", "docs") == b"/quartz/collections/acme/docs"
    assert schema.qualified("acme", "docs") == "acme/docs"
    assert schema.tenant_key("acme") == b"/quartz/auth/tenants/acme"
    assert schema.key_record_key("0123abcd") == b"/quartz/auth/keys/0123abcd"
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
        schema.COLLECTIONS: schema.collection_key("default", "x"),
        schema.SHARDS: schema.shard_key("x", 0),
        schema.REPLICAS: schema.replica_key("x", 0, "n"),
        schema.REPLICA_TOMBSTONES: schema.replica_tombstone_key("x", 0, "n"),
        schema.DRAINING: schema.drain_key("x"),
        schema.TOMBSTONES: schema.tombstone_key("x"),
        schema.LEADER: schema.LEADER,
        schema.TENANTS: schema.tenant_key("x"),
        schema.KEYS: schema.key_record_key("x"),
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
        CollectionRecord("docs", "cid", 8, "cosine", 4, 2, 16, 200, 64, tenant="acme"),
        SHARD,
        ReplicaRecord("n1", "r1", state="creating"),
        ReplicaRecord("n1", "r1"),
        Tombstone("docs", "cid"),
        LeaderRecord("c1"),
        TenantRecord("acme", created_at=1700000000),
        KeyRecord("k1", "acme", "read-only", "h" * 64, ("docs", "faq"), 1, 2, "ci"),
        KeyRecord("k1", "acme", "admin", "h" * 64),
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
        "memory_bytes_max": 0,
    }
    # a record written before memory_bytes_max existed still reads, as "not reported"
    assert NodeRecord.from_json(b'{"id": "n1", "address": "a:1", "incarnation": "i"}').memory_bytes_max == 0
    assert LeaderRecord.from_json(b'{"id": "c1"}') == LeaderRecord("c1", "")
    assert orjson.loads(SHARD.to_json())["in_sync"] == [
        {"node": "n1", "incarnation": "i1"},
        {"node": "n2", "incarnation": "i2"},
    ]
    assert ReplicaRecord.from_json(b'{"node": "n", "incarnation": "r"}').state == "ready"
    # a collection written before tenants existed belongs to the bootstrap tenant
    coll = orjson.loads(CollectionRecord("docs", "cid", 8, "l2", 1, 1, 16, 200, 64).to_json())
    assert coll["tenant"] == "default"
    del coll["tenant"]
    old = CollectionRecord.from_json(orjson.dumps(coll))
    assert old.tenant == "default" and old.qualified == "default/docs"
    assert orjson.loads(KeyRecord("k1", "t", "admin", "h").to_json()) == {
        "id": "k1",
        "tenant": "t",
        "role": "admin",
        "hash": "h",
        "collections": [],
        "created_at": 0,
        "expires_at": 0,
        "description": "",
        "rate_limits": [],
    }
    # a tenant written before plans existed is on the free plan, with no overrides
    tenant = TenantRecord.from_json(b'{"name": "acme", "created_at": 5}')
    assert (tenant.plan, tenant.rate_limits, tenant.stripe_customer, tenant.webhook_url) == (
        "free",
        (),
        "",
        "",
    )
    assert TenantRecord.from_json(tenant.to_json()) == tenant
    assert KeyRecord.from_json(KeyRecord("k1", "t", "admin", "h", ("a",)).to_json()).collections == ("a",)


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


# --- strict reading: every refusal is a BadRecord naming the key and field, with its reason ----

NAME = r"must match [A-Za-z0-9_-]{1,64}"
NODE_JSON = {"id": "n1", "address": "a:1", "incarnation": "i"}
SHARD_JSON = orjson.loads(SHARD.to_json())


def bad(fn, field: str, message: str) -> None:
    with pytest.raises(schema.BadRecord) as err:
        fn()
    assert err.value.field == field
    assert str(err.value) == f"{field}: {message}"


def test_bad_record_is_an_internal_error():
    from quartz_cluster.errors import Internal

    assert issubclass(schema.BadRecord, Internal)


def test_records_refuse_what_is_not_a_record_naming_where():
    bad(lambda: NodeRecord.from_json(b"[1]", "K"), "K", "must be a JSON object, got list")
    bad(lambda: NodeRecord.from_json(b"3", "K"), "K", "must be a JSON object, got int")
    extra = {**NODE_JSON, "zz": 1, "aa": 2}
    bad(lambda: NodeRecord.from_json(orjson.dumps(extra), "K"), "K", "unknown field 'aa'")
    bad(lambda: NodeRecord.from_json(b'{"id": "n1", "address": "x"}', "K"), "K.incarnation", "missing")
    with pytest.raises(schema.BadRecord) as err:
        NodeRecord.from_json(b"{nope", "K")
    assert err.value.field == "K" and str(err.value).startswith("K: not valid JSON (")
    with pytest.raises(schema.BadRecord) as err:  # without a key: the record type is named
        NodeRecord.from_json(b"{nope")
    assert err.value.field == "NodeRecord"


@pytest.mark.parametrize(
    ("cls", "fields", "field", "value"),
    [
        (NodeRecord, NODE_JSON, "id", "a/b"),
        (
            CollectionRecord,
            orjson.loads(CollectionRecord("d", "c", 1, "l2", 1, 1, 2, 3, 4).to_json()),
            "name",
            "a b",
        ),
        (
            CollectionRecord,
            orjson.loads(CollectionRecord("d", "c", 1, "l2", 1, 1, 2, 3, 4).to_json()),
            "id",
            "",
        ),
        (ShardRecord, SHARD_JSON, "collection", "x/y"),
        (ShardRecord, SHARD_JSON, "collection_id", "x y"),
        (ShardRecord, SHARD_JSON, "primary", "n/1"),
        (
            CollectionRecord,
            orjson.loads(CollectionRecord("d", "c", 1, "l2", 1, 1, 2, 3, 4).to_json()),
            "tenant",
            "a/b",
        ),
        (ReplicaRecord, {"node": "n1", "incarnation": "r"}, "node", "n 1"),
        (TenantRecord, {"name": "t"}, "name", "t/1"),
        (KeyRecord, {"id": "k", "tenant": "t", "role": "admin", "hash": "h"}, "id", "k/1"),
        (KeyRecord, {"id": "k", "tenant": "t", "role": "admin", "hash": "h"}, "tenant", ""),
        (Tombstone, {"name": "d", "collection_id": "c"}, "name", "d/"),
        (Tombstone, {"name": "d", "collection_id": "c"}, "collection_id", "c" * 65),
    ],
)
def test_names_in_records_must_be_key_segments(cls, fields, field, value):
    raw = orjson.dumps({**fields, field: value})
    bad(lambda: cls.from_json(raw, "K"), f"K.{field}", f"{NAME}, got {value!r}")


def test_shard_record_fields_are_checked_by_type_and_shape():
    def shard_with(**changes):
        return lambda: ShardRecord.from_json(orjson.dumps({**SHARD_JSON, **changes}), "K")

    bad(shard_with(replicas="ab"), "K.replicas", "must be tuple[str, ...], got 'ab'")
    bad(shard_with(replicas=["n1", 2]), "K.replicas", "must be tuple[str, ...], got ['n1', 2]")
    bad(shard_with(replicas=["n1", "n/2"]), "K.replicas[1]", f"{NAME}, got 'n/2'")
    bad(shard_with(in_sync={}), "K.in_sync", "must be a list, got {}")
    bad(shard_with(in_sync=[{"node": "n/1", "incarnation": "i"}]), "K.in_sync[0].node", f"{NAME}, got 'n/1'")
    bad(shard_with(in_sync=[{"node": "n1"}]), "K.in_sync[0].incarnation", "missing")
    bad(shard_with(in_sync=["n1"]), "K.in_sync[0]", "must be a JSON object, got str")
    bad(shard_with(epoch="1"), "K.epoch", "must be int, got '1'")
    bad(shard_with(epoch=True), "K.epoch", "must be int, got True")
    bad(shard_with(metric=1), "K.metric", "must be str, got 1")
    bad(shard_with(shard=1024), "K.shard", "must be a shard number in [0, 1023], got 1024")
    bad(shard_with(shard=-1), "K.shard", "must be a shard number in [0, 1023], got -1")
    assert ShardRecord.from_json(orjson.dumps({**SHARD_JSON, "shard": 1023}), "K").shard == 1023
    assert ShardRecord.from_json(orjson.dumps({**SHARD_JSON, "shard": 0}), "K").shard == 0


def test_shard_numbers_are_ints_not_bools_in_range():
    bad(lambda: schema._shard_number(True, "W"), "W", "must be a shard number in [0, 1023], got True")
    bad(lambda: schema._shard_number(1.0, "W"), "W", "must be a shard number in [0, 1023], got 1.0")
    assert schema._shard_number(1023, "W") == 1023


def test_a_field_of_an_unknown_kind_is_a_programming_error():
    with pytest.raises(TypeError, match=r"^W: no decoder for bytes$"):
        schema._typed(b"x", "bytes", "W")


def test_float_fields_take_numbers_but_not_bools_or_strings():
    assert schema._typed(1.5, "float", "W") == 1.5
    assert schema._typed(2, "float", "W") == 2  # JSON writes 2.0 as 2
    bad(lambda: schema._typed(True, "float", "W"), "W", "must be float, got True")
    bad(lambda: schema._typed("1.5", "float", "W"), "W", "must be float, got '1.5'")
    bad(lambda: schema._typed(None, "float", "W"), "W", "must be float, got None")


def test_collection_keys_parse_to_tenant_and_name():
    assert schema.parse_collection_key(schema.collection_key("acme", "docs")) == ("acme", "docs")
    k = "/quartz/collections/docs"  # the key shape before tenants
    bad(
        lambda: schema.parse_collection_key(k.encode()),
        k,
        "key must have 2 segment(s) after /quartz/collections/, got 1",
    )
    k = "/quartz/collections/a b/docs"
    bad(lambda: schema.parse_collection_key(k.encode()), k, f"{NAME}, got 'a b'")
    k = "/quartz/collections/acme/d%"
    bad(lambda: schema.parse_collection_key(k.encode()), k, f"{NAME}, got 'd%'")


def test_name_keys_parse_to_their_one_name():
    assert schema.parse_name_key(schema.node_key("n1"), schema.NODES) == "n1"
    assert schema.parse_name_key(schema.tombstone_key("cid"), schema.TOMBSTONES) == "cid"
    key = b"/quartz/nodes/a/b"
    bad(
        lambda: schema.parse_name_key(key, schema.NODES),
        "/quartz/nodes/a/b",
        "key must have 1 segment(s) after /quartz/nodes/, got 2",
    )
    bad(
        lambda: schema.parse_name_key(b"/quartz/nodes/\xff", schema.NODES),
        "/quartz/nodes/\\xff",
        "key is not UTF-8",
    )
    bad(
        lambda: schema.parse_name_key(b"/quartz/nodes/a b", schema.NODES),
        "/quartz/nodes/a b",
        f"{NAME}, got 'a b'",
    )
    assert schema.is_name("n-1_A") and not schema.is_name("n.1") and not schema.is_name(1)
    assert schema.show_key(b"/quartz/\xfe") == "/quartz/\\xfe"


def test_replica_keys_parse_to_collection_shard_and_node():
    assert schema.parse_replica_key(schema.replica_key("cid", 7, "n1")) == ("cid", 7, "n1")
    assert schema.parse_replica_key(schema.replica_key("cid", 1023, "n1")) == ("cid", 1023, "n1")
    tomb = schema.replica_tombstone_key("cid", 0, "n2")
    assert schema.parse_replica_key(tomb, schema.REPLICA_TOMBSTONES) == ("cid", 0, "n2")
    k = "/quartz/replicas/c/12/n1"
    bad(lambda: schema.parse_replica_key(k.encode()), k, "shard must be 4 digits, got '12'")
    k = "/quartz/replicas/c/1024/n1"
    bad(lambda: schema.parse_replica_key(k.encode()), k, "must be a shard number in [0, 1023], got 1024")
    k = "/quartz/replicas/c/0001/n%1"
    bad(lambda: schema.parse_replica_key(k.encode()), k, f"{NAME}, got 'n%1'")
    k = "/quartz/replicas/c%/0001/n1"
    bad(lambda: schema.parse_replica_key(k.encode()), k, f"{NAME}, got 'c%'")
    k = "/quartz/replicas/c/0001"
    bad(
        lambda: schema.parse_replica_key(k.encode()),
        k,
        "key must have 3 segment(s) after /quartz/replicas/, got 2",
    )
