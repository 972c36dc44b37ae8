"""The SDK's request builders and reply parsers (client/_common.py): bad arguments raise the
documented typed errors naming the argument (they were bare ValueError/TypeError from protobuf
or orjson), and read results say which shards answered. No network."""

import grpc
import numpy as np
import pytest

from quartz_cluster import errors, limits
from quartz_cluster.client import _common as c
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2
from tests.unit.test_rpc_status import FakeRpcError

Q = np.ones(4, np.float32)


def search(**kw):
    args = {
        "collection": "docs",
        "query": Q,
        "k": 10,
        "filter": None,
        "ef": None,
        "consistency": "eventual",
        "with_payload": True,
        "allow_partial": False,
    }
    return c.search_request(**{**args, **kw})


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"k": -1}, "k"),
        ({"k": 2**40}, "k"),
        ({"k": 0}, "k"),
        ({"k": limits.K_MAX + 1}, "k"),
        ({"k": 2.5}, "k"),
        ({"k": True}, "k"),
        ({"ef": -3}, "ef"),
        ({"ef": limits.EF_MAX + 1}, "ef"),
        ({"filter": {"must": [{"key": "a", "match": {"any": {1, 2}}}]}}, "filter"),
        ({"query": ["a", "b"]}, "query"),
        ({"query": np.ones((2, 2, 2))}, "query"),
        ({"collection": 7}, "collection"),
        ({"consistency": "someday"}, "consistency"),
    ],
)
def test_bad_search_arguments_raise_invalid_argument_naming_them(kw, field):
    with pytest.raises(errors.InvalidArgument) as err:
        search(**kw)
    assert err.value.field == field


def test_k_and_ef_at_their_bounds_are_accepted():
    req, single = search(k=limits.K_MAX, ef=limits.EF_MAX)
    assert (req.k, req.ef, single) == (limits.K_MAX, limits.EF_MAX, True)
    assert search(k=np.int64(1), ef=0)[0].k == 1


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"payloads": [{"tags": {"a", "b"}}]}, "payloads[0]"),
        ({"payloads": [{}, {"x": object()}]}, "payloads[1]"),
        ({"ids": ["a", 2.5]}, "ids[1]"),
        ({"ids": "abc"}, "ids"),
        ({"ids": [None]}, "ids[0]"),
        ({"vectors": "not numbers"}, "vectors"),
        ({"write_consistency": "most"}, "write_consistency"),
    ],
)
def test_bad_upsert_arguments_raise_invalid_argument_naming_them(kw, field):
    args = {
        "collection": "docs",
        "ids": ["a", "b"][: len(kw.get("payloads", [0, 0]))],
        "vectors": np.ones((2, 4))[: len(kw.get("payloads", [0, 0]))],
        "payloads": None,
        "write_consistency": "majority",
    }
    with pytest.raises(errors.InvalidArgument) as err:
        c.upsert_request(**{**args, **kw})
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"dim": -1}, "dim"),
        ({"dim": 2**33}, "dim"),
        ({"shards": 0}, "shards"),
        ({"replication_factor": -2}, "replication_factor"),
        ({"m": -4}, "m"),
        ({"name": None}, "name"),
        ({"metric": "cos"}, "metric"),
    ],
)
def test_bad_collection_arguments_raise_invalid_argument_naming_them(kw, field):
    args = {
        "name": "docs",
        "dim": 4,
        "metric": "l2",
        "shards": 1,
        "replication_factor": None,
        "m": None,
        "ef_construction": None,
        "ef": None,
        "wait": True,
    }
    with pytest.raises(errors.InvalidArgument) as err:
        c.create_collection_request(**{**args, **kw})
    assert err.value.field == field


def test_an_unset_replication_factor_is_sent_as_zero_for_the_clusters_default():
    req = c.create_collection_request("d", 4, "l2", 2, None, None, None, None, True)
    assert req.config.replication_factor == 0 and req.config.shards == 2
    assert c.create_collection_request("d", 4, "l2", 2, 3, 8, 0, 0, True).config.replication_factor == 3


def test_search_results_say_which_shards_answered():
    resp = quartz_pb2.SearchPointsResponse(
        results=[node_pb2.SearchResult(ids=["a"], scores=[0.5], payloads=[b'{"n":1}'])],
        shards=quartz_pb2.ShardsAnswered(
            total=3,
            answered=2,
            failed=[quartz_pb2.ShardFailure(shard=1, code="UNAVAILABLE", message="shard 1: down")],
        ),
    )
    hits = c.parse_hits(resp, single=True, with_payload=True)
    assert hits == [c.Hit("a", 0.5, {"n": 1})] and isinstance(hits, list)
    assert hits.partial and hits.shards == c.ShardsAnswered(
        3, 2, (c.ShardFailure(1, "UNAVAILABLE", "shard 1: down"),)
    )
    whole = c.parse_hits(
        quartz_pb2.SearchPointsResponse(results=[], shards=quartz_pb2.ShardsAnswered(total=2, answered=2)),
        single=False,
        with_payload=False,
    )
    assert whole == [] and not whole.partial and whole.shards.failed == ()


def test_get_and_count_results_say_which_shards_answered():
    shards = quartz_pb2.ShardsAnswered(
        total=2, answered=1, failed=[quartz_pb2.ShardFailure(shard=0, code="UNAVAILABLE", message="m")]
    )
    count = c.parse_count(quartz_pb2.CountResponse(count=7, shards=shards))
    assert count == 7 and count + 1 == 8 and count.partial and count.shards.failed[0].shard == 0
    points = c.parse_points(quartz_pb2.GetPointsResponse(points=[], shards=shards), True, True)
    assert points == [] and points.partial
    assert c.count_request("d", True).allow_partial and not c.count_request("d").allow_partial
    assert c.get_request("d", ["a"], True, True, "eventual", True).allow_partial


REFUSED = FakeRpcError(
    grpc.StatusCode.UNAVAILABLE,
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:7999: "
    "Failed to connect to remote host: Connection refused",
)
SHARD_DOWN = FakeRpcError(grpc.StatusCode.UNAVAILABLE, "shard 2 of 'docs' has no live in-sync replica")


def test_a_router_never_reached_fails_fast_and_names_the_address():
    assert c.unreachable(REFUSED) and not c.unreachable(SHARD_DOWN)
    assert not c.retryable(REFUSED, ever_connected=False)  # nothing listens: do not wait it out
    assert c.retryable(REFUSED, ever_connected=True)  # a router restarting: retry
    assert c.retryable(SHARD_DOWN, ever_connected=False)
    err = c.to_error(REFUSED, "127.0.0.1:7999", ever_connected=False)
    assert isinstance(err, errors.Unavailable)
    assert "127.0.0.1:7999" in str(err) and "QUARTZ_ROUTER" in str(err)


def test_a_deadline_names_the_router():
    err = c.to_error(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), "10.0.0.1:7000")
    assert (
        isinstance(err, errors.Unavailable)
        and str(err) == "router 10.0.0.1:7000: DEADLINE_EXCEEDED: Deadline Exceeded"
    )
    nf = c.to_error(FakeRpcError(grpc.StatusCode.NOT_FOUND, "collection: 'x' does not exist"), "a:1")
    assert isinstance(nf, errors.NotFound) and str(nf) == "collection: 'x' does not exist"
