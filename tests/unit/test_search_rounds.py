"""The router's coalesced eventual search rounds (one call per node, per-shard fallback),
against a fake shard map and fake node calls: deadlines, hedges and cancellation without a
network. The real thing runs in tests/integration (test_cluster, test_cluster_partial, chaos)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest

from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.router.service import QuartzService, SearchShape
from quartz_cluster.router.shardmap import ReadGroup, Route

COLL = SimpleNamespace(id="c", name="c", shards=2, metric="l2")
SHAPE = SearchShape(COLL, 10, 0, "", False, 2)


class Failed(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._code.name


def reply(req: node_pb2.SearchRequest, score: float = 1.0) -> node_pb2.SearchResponse:
    shards = [req.ref.shard, *req.also_shards]
    return node_pb2.SearchResponse(
        results=[
            node_pb2.SearchResult(ids=[f"s{s}" for s in shards], scores=[score] * len(shards), plan="hnsw")
        ]
        * req.queries.count,
        searched_shards=shards if len(shards) > 1 else [],
    )


def service(groups, routes, behave):
    """A router whose shard map plans `groups` and whose node calls run `behave`."""
    shardmap = SimpleNamespace(
        read_plan=lambda coll: (groups, {}),
        read_routes=lambda coll, shard, strong: [Route(shard, None, a) for a in routes[shard]],
    )
    svc = QuartzService(shardmap, None, None)
    svc.calls = []

    async def call(address, method, req, timeout_s):
        svc.calls.append((address, [req.ref.shard, *req.also_shards]))
        return await behave(address, req, timeout_s)

    svc._call = call
    return svc


async def one_round(svc, deadline_in_s: float):
    loop = asyncio.get_running_loop()
    query = (b"\0" * 8, 1, loop.time() + deadline_in_s)
    [(merged, _plans, answered, failures)] = await svc._search_eventual(SHAPE, [query])
    return merged, answered, failures


def test_a_hung_node_costs_the_deadline_once_then_its_shards_fail_as_unavailable():
    """No second full timeout on fallback: the shards the hung node was asked for are reported
    UNAVAILABLE, naming them, so allow_partial answers with the rest instead of the whole
    request running past its deadline."""

    async def behave(address, req, timeout_s):
        if address == "A":
            await asyncio.sleep(timeout_s)
            raise Failed(grpc.StatusCode.DEADLINE_EXCEEDED)
        return reply(req)

    svc = service([ReadGroup("A", [0, 1], False)], {0: ["A"], 1: ["B", "A"]}, behave)
    _merged, answered, failures = asyncio.run(one_round(svc, 0.2))
    assert svc.calls == [("A", [0, 1])]  # nothing started after the deadline
    assert answered == 0 and [(s, f.code) for s, f in failures] == [(0, "UNAVAILABLE"), (1, "UNAVAILABLE")]
    assert "shard 0" in str(failures[0][1]) and "shard 1" in str(failures[1][1])


def test_a_failed_node_is_replaced_shard_by_shard_by_the_other_replicas():
    async def behave(address, req, timeout_s):
        if address == "A":
            raise Failed(grpc.StatusCode.UNAVAILABLE)
        return reply(req)

    svc = service([ReadGroup("A", [0, 1], True)], {0: ["B", "A"], 1: ["A", "C"]}, behave)
    merged, answered, failures = asyncio.run(one_round(svc, 5))
    assert answered == 2 and failures == []
    assert merged[0][0] == ["s0", "s1"]
    # the failed node is tried last for each shard, so never again here
    assert sorted(svc.calls[1:]) == [("B", [0]), ("C", [1])]


def test_a_slow_node_is_hedged_to_the_other_replicas_not_back_to_itself():
    async def behave(address, req, timeout_s):
        await asyncio.sleep({"A": 0.5, "B": 0.05, "C": 0.05}[address])
        return reply(req)

    svc = service([ReadGroup("A", [0, 1], True)], {0: ["B", "A"], 1: ["C", "A"]}, behave)
    _merged, answered, failures = asyncio.run(one_round(svc, 5))
    assert answered == 2 and failures == []
    assert [a for a, _ in svc.calls].count("A") == 1  # the hedge did not ask A again
    assert svc.hedges_sent == 1


def test_a_failed_hedge_leaves_no_call_running_behind_the_round():
    states = {}

    async def behave(address, req, timeout_s):
        if address == "A":  # the node answers after its hedge has failed on one shard
            await asyncio.sleep(0.2)
            return reply(req)
        if address == "B":
            raise Failed(grpc.StatusCode.INVALID_ARGUMENT)
        try:
            await asyncio.sleep(1.0)
            states[address] = "completed"
            return reply(req)
        except asyncio.CancelledError:
            states[address] = "cancelled"
            raise

    async def scenario():
        svc = service([ReadGroup("A", [0, 1], True)], {0: ["B", "A"], 1: ["C", "A"]}, behave)
        _, answered, failures = await one_round(svc, 5)
        assert answered == 2 and failures == []
        await asyncio.sleep(0)  # let a cancellation land
        return dict(states)  # before asyncio.run cancels whatever is left at its exit

    assert asyncio.run(scenario()) == {"C": "cancelled"}


def test_a_reply_missing_queries_is_not_taken_at_its_word():
    async def behave(address, req, timeout_s):
        answer = reply(req)
        if address == "A":
            del answer.results[:]  # an answer for no query at all
        return answer

    svc = service([ReadGroup("A", [0, 1], True)], {0: ["B", "A"], 1: ["C", "A"]}, behave)
    merged, answered, failures = asyncio.run(one_round(svc, 5))
    assert answered == 2 and failures == [] and merged[0][0] == ["s0", "s1"]


@pytest.mark.parametrize("order", [[("A", [1]), ("B", [0])], [("B", [0]), ("A", [1])]])
def test_equal_scores_rank_by_shard_whichever_node_answered_first(order):
    async def behave(address, req, timeout_s):
        await asyncio.sleep(0.01 if (address, [req.ref.shard]) == order[0] else 0.05)
        return reply(req, score=0.5)

    groups = [ReadGroup(a, s, False) for a, s in order]
    svc = service(groups, {0: ["B"], 1: ["A"]}, behave)
    merged, answered, _ = asyncio.run(one_round(svc, 5))
    assert answered == 2 and merged[0][0] == ["s0", "s1"]


def test_a_node_that_ignores_also_shards_is_not_taken_at_its_word():
    """A node from before also_shards answers for ref's shard only and echoes nothing: its
    reply must not stand for the whole group (the other shard would silently be missing)."""

    async def behave(address, req, timeout_s):
        if address == "A":
            old = reply(node_pb2.SearchRequest(ref=req.ref, queries=req.queries))  # ref's shard only
            del old.searched_shards[:]
            return old
        return reply(req)

    svc = service([ReadGroup("A", [0, 1], True)], {0: ["B", "A"], 1: ["C", "A"]}, behave)
    merged, answered, failures = asyncio.run(one_round(svc, 5))
    assert answered == 2 and failures == [] and merged[0][0] == ["s0", "s1"]
    assert sorted(svc.calls[1:]) == [("B", [0]), ("C", [1])]
