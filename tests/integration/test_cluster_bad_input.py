"""Bad input through the router: refused whole, before any fan-out, with the same statuses and
field-naming messages as on a node; plus NOT_FOUND and ALREADY_EXISTS for collections."""

from __future__ import annotations

import grpc
import numpy as np
import orjson
import pytest

from quartz_cluster import QuartzClient, limits
from quartz_cluster.client._common import pack
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2, quartz_pb2_grpc
from tests.integration.conftest import bearer, with_metadata

pytestmark = pytest.mark.integration
DIM = 8


@pytest.fixture(scope="module")
def router(module_cluster):
    address = module_cluster.routers[0].address
    with module_cluster.client() as c:
        c.create_collection("badin", dim=DIM, shards=4)
        c.upsert(
            "badin",
            [f"k{i}" for i in range(40)],
            np.random.default_rng(0).normal(size=(40, DIM)),
            [{"i": i} for i in range(40)],
        )
    channel = grpc.insecure_channel(address)
    # raw stubs send the admin key like any client: refusals must come from the input checks
    yield quartz_pb2_grpc.QuartzStub(with_metadata(channel, bearer(module_cluster.admin_key))), module_cluster
    channel.close()


def state(cluster):
    with cluster.client() as c:
        got = c.get("badin", [f"k{i}" for i in range(40)] + ["new0", "new1", "new2"])
        return c.count("badin"), [(p.id, p.vector.tobytes(), p.payload) for p in got]


def upsert(ids, rows, payloads=(), collection="badin"):
    vectors, _ = pack(np.asarray(rows, dtype=np.float32))
    return quartz_pb2.UpsertRequest(
        collection=collection, points=node_pb2.PointBatch(ids=ids, vectors=vectors, payloads=payloads)
    )


GOOD = np.ones((3, DIM))
NAN = np.ones((3, DIM))
NAN[2, 0] = np.nan
UPSERT_CASES = {
    # three ids that land on different shards: nothing may be written on any of them
    "wrong dimension": (
        upsert(["new0", "new1", "new2"], np.ones((3, DIM + 2))),
        "INVALID_ARGUMENT",
        "upserts.vectors",
    ),
    "nan in last row": (upsert(["new0", "new1", "new2"], NAN), "INVALID_ARGUMENT", "upserts.vectors[2]"),
    "empty id": (upsert(["new0", "", "new2"], GOOD), "INVALID_ARGUMENT", "upserts.ids[1]"),
    "long id": (upsert(["new0", "new1", "x" * 300], GOOD), "INVALID_ARGUMENT", "upserts.ids[2]"),
    "duplicate ids": (upsert(["new0", "new1", "new0"], GOOD), "INVALID_ARGUMENT", "upserts.ids[2]"),
    "payload not object": (
        upsert(["new0", "new1", "new2"], GOOD, [b"{}", b"3", b"{}"]),
        "INVALID_ARGUMENT",
        "upserts.payloads[1]",
    ),
    "payload too big": (
        upsert(
            ["new0", "new1", "new2"],
            GOOD,
            [b"{}", b"{}", orjson.dumps({"x": "y" * limits.PAYLOAD_BYTES_MAX})],
        ),
        "INVALID_ARGUMENT",
        "upserts.payloads[2]",
    ),
    "unknown collection": (upsert(["new0"], GOOD[:1], collection="nope"), "NOT_FOUND", "collection"),
}


@pytest.mark.parametrize("case", sorted(UPSERT_CASES))
def test_bad_upserts_are_refused_whole(router, case):
    stub, cluster = router
    request, code, field = UPSERT_CASES[case]
    before = state(cluster)
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()
    assert state(cluster) == before


def search(**kw):
    base = {"collection": "badin", "queries": pack(np.ones((1, DIM), np.float32))[0], "k": 5}
    return quartz_pb2.SearchPointsRequest(**{**base, **kw})


SEARCH_CASES = {
    "wrong dimension": (search(queries=pack(np.ones((1, 3), np.float32))[0]), "INVALID_ARGUMENT", "queries"),
    "inf query": (
        search(queries=pack(np.full((1, DIM), np.inf, np.float32))[0]),
        "INVALID_ARGUMENT",
        "queries[0]",
    ),
    "k zero": (search(k=0), "INVALID_ARGUMENT", "k"),
    "malformed filter": (
        search(filter='{"must": [{"key": "i", "range": {"gt": "x"}}]}'),
        "INVALID_ARGUMENT",
        "filter.must[0].range.gt",
    ),
    "filter not json": (search(filter="{"), "INVALID_ARGUMENT", "filter"),
    "unknown collection": (search(collection="nope"), "NOT_FOUND", "collection"),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_bad_searches_are_refused(router, case):
    stub, _ = router
    request, code, field = SEARCH_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()


def test_unknown_collection_is_not_found_everywhere(router):
    stub, _ = router
    calls = [
        (stub.Get, quartz_pb2.GetPointsRequest(collection="nope", ids=["a"])),
        (stub.Delete, quartz_pb2.DeleteRequest(collection="nope", ids=["a"])),
        (stub.Count, quartz_pb2.CountRequest(collection="nope")),
        (stub.DescribeCollection, quartz_pb2.DescribeCollectionRequest(name="nope")),
        (stub.DropCollection, quartz_pb2.DropCollectionRequest(name="nope")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as err:
            method(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, method


def config(**kw):
    base = {"name": "fresh", "dim": DIM, "metric": node_pb2.COSINE, "shards": 2, "replication_factor": 1}
    return quartz_pb2.CreateCollectionRequest(config=quartz_pb2.CollectionConfig(**{**base, **kw}))


CREATE_CASES = {
    "duplicate name": (config(name="badin"), "ALREADY_EXISTS", "config.name"),
    "bad name": (config(name="has space"), "INVALID_ARGUMENT", "config.name"),
    "zero dim": (config(dim=0), "INVALID_ARGUMENT", "config.dim"),
    "no metric": (config(metric=node_pb2.METRIC_UNSPECIFIED), "INVALID_ARGUMENT", "config.metric"),
    "too many shards": (
        config(shards=limits.SHARDS_PER_COLLECTION_MAX + 1),
        "INVALID_ARGUMENT",
        "config.shards",
    ),
    "more replicas than nodes": (
        config(replication_factor=4),
        "FAILED_PRECONDITION",
        "config.replication_factor",
    ),
    "bad hnsw m": (config(hnsw=node_pb2.HnswParams(m=1)), "INVALID_ARGUMENT", "config.hnsw.m"),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_bad_collection_definitions_are_refused(router, case):
    stub, _ = router
    request, code, field = CREATE_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateCollection(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()
    names = [c.config.name for c in stub.ListCollections(quartz_pb2.ListCollectionsRequest()).collections]
    assert "fresh" not in names and "has space" not in names


def test_sdk_raises_typed_errors(router):
    from quartz_cluster.errors import AlreadyExists, InvalidArgument, NotFound

    _, cluster = router
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key) as c:
        with pytest.raises(NotFound):
            c.search("nope", np.ones(DIM))
        with pytest.raises(AlreadyExists):
            c.create_collection("badin", dim=DIM)
        with pytest.raises(InvalidArgument, match=r"^upserts\.vectors\[0\]"):
            c.upsert("badin", ["z"], np.full((1, DIM), np.nan))
        with pytest.raises(InvalidArgument, match=r"^write_consistency"):
            c.upsert("badin", ["z"], np.ones((1, DIM)), write_consistency="some")


def raw_call(cluster, method: str, data: bytes):
    """Send hand-made wire bytes, as a client with a broken or hostile encoder would."""
    with grpc.insecure_channel(cluster.router_address) as channel:
        call = channel.unary_unary(f"/quartz.v1.Quartz/{method}")
        return call(data, timeout=10, metadata=bearer(cluster.admin_key))


@pytest.mark.parametrize(
    ("method", "message", "field"),
    [
        ("Delete", quartz_pb2.DeleteRequest(collection="badin", ids=["k1", "QQ"]), "ids[1]"),
        ("Get", quartz_pb2.GetPointsRequest(collection="badin", ids=["QQ"]), "ids[0]"),
        ("Search", search(filter="QQ"), "filter"),
        ("Upsert", upsert(["new0", "QQ"], GOOD[:2]), "points.ids[1]"),
    ],
)
def test_invalid_utf8_is_invalid_argument_naming_the_field(router, method, message, field):
    # it was UNKNOWN "DecodeError": protobuf refuses the request before any handler runs
    _, cluster = router
    before = state(cluster)
    data = message.SerializeToString()
    assert data.count(b"QQ") == 1
    with pytest.raises(grpc.RpcError) as err:
        raw_call(cluster, method, data.replace(b"QQ", b"\xff\xfe"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"{field}: not valid UTF-8"
    assert state(cluster) == before


def test_a_10kb_name_is_refused_as_invalid_argument_with_the_name_cut(router):
    # the whole name echoed in the status overflowed gRPC metadata: RESOURCE_EXHAUSTED
    stub, _ = router
    for call in (
        lambda: stub.CreateCollection(config(name="n" * 10_000), timeout=10),
        lambda: stub.Search(search(collection="n" * 10_000), timeout=10),
        lambda: stub.DropCollection(quartz_pb2.DropCollectionRequest(name="é" * 10_000), timeout=10),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
        assert len(err.value.details()) < 300 and "chars)" in err.value.details()


def test_zero_shards_is_refused_not_turned_into_one(router):
    stub, _ = router
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateCollection(config(shards=0), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("config.shards: must be an integer in [1, ")


def test_vectors_whose_distances_would_overflow_are_refused(router):
    # l2 vectors near 1e38 were accepted and scored inf
    stub, cluster = router
    huge = np.full((3, DIM), 1e19, np.float32)
    before = state(cluster)
    with pytest.raises(grpc.RpcError) as err:
        stub.Upsert(upsert(["new0", "new1", "new2"], huge), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("upserts.vectors[0]: squared norm")
    assert state(cluster) == before
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(search(queries=pack(huge[:1])[0]), timeout=10)
    assert err.value.details().startswith("queries[0]: squared norm")
