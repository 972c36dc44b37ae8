"""Bad input to a real node: a clear status naming the field, and nothing changed."""

from __future__ import annotations

import grpc
import numpy as np
import orjson
import pytest

from quartz_cluster import limits
from quartz_cluster.node.client import pack
from quartz_cluster.proto.quartz.v1 import node_pb2

pytestmark = pytest.mark.integration
DIM = 8
REF = node_pb2.ShardRef(collection_id="bad", shard=0)
GOOD = np.ones((1, DIM), dtype=np.float32)


@pytest.fixture(scope="module")
def node(module_node):
    proc, client = module_node
    client.create_shard("bad", 0, DIM, "cosine")
    rng = np.random.default_rng(0)
    client.upsert(
        "bad", 0, [f"k{i}" for i in range(50)], rng.normal(size=(50, DIM)), [{"i": i} for i in range(50)]
    )
    return proc, client


def state(client):
    s = client.stats("bad", 0)
    got = client.get("bad", 0, [f"k{i}" for i in range(50)] + ["new", "new2"])
    return s.count, s.applied_lsn, {k: (v[0].tobytes(), v[1]) for k, v in got.items()}


def write(ids, vectors, payloads=(), deletes=(), ref=REF):
    return node_pb2.WriteRequest(
        ref=ref, upserts=node_pb2.PointBatch(ids=ids, vectors=vectors, payloads=payloads), delete_ids=deletes
    )


def vecs(rows):
    return pack(np.asarray(rows, dtype=np.float32).reshape(len(rows), -1))


NAN_BATCH = np.ones((2, DIM), dtype=np.float32)
NAN_BATCH[1, 3] = np.nan
BIG_PAYLOAD = orjson.dumps({"x": "y" * limits.PAYLOAD_BYTES_MAX})

WRITE_CASES = {
    "wrong dimension": (write(["new"], vecs(np.ones((1, DIM + 1)))), "INVALID_ARGUMENT", "upserts.vectors"),
    "byte count": (
        write(["new"], node_pb2.Vectors(data=b"\0" * 5, count=1, dim=DIM)),
        "INVALID_ARGUMENT",
        "upserts.vectors",
    ),
    "nan in second row": (write(["new", "new2"], pack(NAN_BATCH)), "INVALID_ARGUMENT", "upserts.vectors[1]"),
    "inf": (write(["new"], vecs(np.full((1, DIM), np.inf))), "INVALID_ARGUMENT", "upserts.vectors[0]"),
    "empty id": (write([""], pack(GOOD)), "INVALID_ARGUMENT", "upserts.ids[0]"),
    "long id": (write(["x" * (limits.ID_BYTES_MAX + 1)], pack(GOOD)), "INVALID_ARGUMENT", "upserts.ids[0]"),
    "duplicate ids": (write(["new", "new"], pack(np.ones((2, DIM)))), "INVALID_ARGUMENT", "upserts.ids[1]"),
    "payload not object": (write(["new"], pack(GOOD), [b"[1,2]"]), "INVALID_ARGUMENT", "upserts.payloads[0]"),
    "payload bad json": (write(["new"], pack(GOOD), [b"{oops"]), "INVALID_ARGUMENT", "upserts.payloads[0]"),
    "payload too big": (write(["new"], pack(GOOD), [BIG_PAYLOAD]), "INVALID_ARGUMENT", "upserts.payloads[0]"),
    "payload count": (
        write(["new", "new2"], pack(np.ones((2, DIM))), [b"{}"]),
        "INVALID_ARGUMENT",
        "upserts.payloads",
    ),
    "upsert and delete same id": (
        write(["new"], pack(GOOD), deletes=["new"]),
        "INVALID_ARGUMENT",
        "delete_ids",
    ),
    "bad delete id": (write([], None, deletes=["k1", ""]), "INVALID_ARGUMENT", "delete_ids[1]"),
    "empty write": (write([], None), "INVALID_ARGUMENT", "upserts"),
    "unknown shard": (
        write(["new"], pack(GOOD), ref=node_pb2.ShardRef(collection_id="nope", shard=0)),
        "NOT_FOUND",
        "ref",
    ),
    "oversize batch": (
        write(
            [f"b{i}" for i in range(limits.BATCH_POINTS_MAX + 1)],
            pack(np.ones((limits.BATCH_POINTS_MAX + 1, DIM))),
        ),
        "INVALID_ARGUMENT",
        "upserts",
    ),
}


@pytest.mark.parametrize("case", sorted(WRITE_CASES))
def test_bad_writes_are_refused_whole(node, case):
    _, client = node
    request, code, field = WRITE_CASES[case]
    before = state(client)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Write(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()
    assert state(client) == before


def search(queries=None, k=10, ef=0, flt="", ref=REF):
    return node_pb2.SearchRequest(
        ref=ref, queries=queries if queries is not None else pack(GOOD), k=k, ef=ef, filter=flt
    )


def also(shards, **fields):
    """A search of shard 0 and, in the same call, these shards (one call per node)."""
    request = search()
    request.also_shards.extend(shards)
    for name, value in fields.items():
        setattr(request, name, value)
    return request


SEARCH_CASES = {
    "wrong dimension": (search(vecs(np.ones((1, DIM - 1)))), "INVALID_ARGUMENT", "queries"),
    "nan query": (search(vecs(np.full((1, DIM), np.nan))), "INVALID_ARGUMENT", "queries[0]"),
    "no queries": (search(node_pb2.Vectors(data=b"", count=0, dim=DIM)), "INVALID_ARGUMENT", "queries"),
    "k zero": (search(k=0), "INVALID_ARGUMENT", "k"),
    "k too big": (search(k=limits.K_MAX + 1), "INVALID_ARGUMENT", "k"),
    "ef too big": (search(ef=limits.EF_MAX + 1), "INVALID_ARGUMENT", "ef"),
    "filter not json": (search(flt="{must"), "INVALID_ARGUMENT", "filter"),
    "filter bad clause": (
        search(flt='{"must": [{"key": "i", "range": {"gt": "a"}}]}'),
        "INVALID_ARGUMENT",
        "filter.must[0].range.gt",
    ),
    "filter unknown op": (
        search(flt='{"must": [{"key": "i", "like": 1}]}'),
        "INVALID_ARGUMENT",
        "filter.must[0]",
    ),
    "unknown shard": (search(ref=node_pb2.ShardRef(collection_id="bad", shard=9)), "NOT_FOUND", "ref"),
    "also_shards unknown": (also([9]), "NOT_FOUND", "also_shards[0]"),
    "also_shards repeats ref": (also([0]), "INVALID_ARGUMENT", "also_shards"),
    "also_shards repeats itself": (also([1, 1]), "INVALID_ARGUMENT", "also_shards"),
    "also_shards too many": (
        also(list(range(1, limits.SHARDS_PER_COLLECTION_MAX + 1))),
        "INVALID_ARGUMENT",
        "also_shards",
    ),
    "also_shards with strong": (also([1], strong=True), "INVALID_ARGUMENT", "also_shards"),
    "also_shards with min_lsn": (also([1], min_lsn=1), "INVALID_ARGUMENT", "also_shards"),
}


@pytest.mark.parametrize("case", sorted(SEARCH_CASES))
def test_bad_searches_are_refused(node, case):
    _, client = node
    request, code, field = SEARCH_CASES[case]
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Search(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()


def spec(collection_id="ok", dim=DIM, metric=node_pb2.COSINE, m=0, shard=0):
    return node_pb2.CreateShardRequest(
        spec=node_pb2.ShardSpec(
            ref=node_pb2.ShardRef(collection_id=collection_id, shard=shard),
            dim=dim,
            metric=metric,
            hnsw=node_pb2.HnswParams(m=m),
        )
    )


CREATE_CASES = {
    "bad name": (spec(collection_id="a/b"), "INVALID_ARGUMENT", "spec.ref.collection_id"),
    "zero dim": (spec(dim=0), "INVALID_ARGUMENT", "spec.dim"),
    "huge dim": (spec(dim=limits.DIM_MAX + 1), "INVALID_ARGUMENT", "spec.dim"),
    "no metric": (spec(metric=node_pb2.METRIC_UNSPECIFIED), "INVALID_ARGUMENT", "spec.metric"),
    "bad m": (spec(m=1000), "INVALID_ARGUMENT", "spec.hnsw.m"),
    "shard number": (spec(shard=limits.SHARD_NUMBER_MAX + 1), "INVALID_ARGUMENT", "spec.ref.shard"),
    "exists with other spec": (spec(collection_id="bad", dim=DIM + 1), "ALREADY_EXISTS", "spec"),
}


@pytest.mark.parametrize("case", sorted(CREATE_CASES))
def test_bad_shard_creation_is_refused(node, case):
    _, client = node
    request, code, field = CREATE_CASES[case]
    before = state(client)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.CreateShard(request, timeout=10)
    assert err.value.code().name == code
    assert err.value.details().startswith(field), err.value.details()
    assert state(client) == before
    assert not any(
        s.spec.ref.collection_id == "ok" for s in client.stub.ListShards(node_pb2.ListShardsRequest()).shards
    )


def test_bad_get_ids_are_refused(node):
    _, client = node
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Get(node_pb2.GetRequest(ref=REF, ids=["k1", ""]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("ids[1]")


def test_node_survives_everything_above(node):
    proc, client = node
    assert proc.alive()
    assert client.stats("bad", 0).count == 50
