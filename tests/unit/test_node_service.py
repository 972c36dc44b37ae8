"""The node's gRPC servicer (node/service.py) called directly, without a server: a real
ShardRegistry in a temp dir and a fake context whose `abort` raises what the `@rpc` decorator
(rpc/status.py) maps a domain error to. The also_shards checks, the happy paths of
Write/Get/Search/Stats, Replicate's bound, and InstallSnapshot streams that are refused or end
early."""

from __future__ import annotations

import asyncio
import os
import re

import grpc
import numpy as np
import orjson
import pytest

from quartz_cluster import limits, validation
from quartz_cluster.node import service as service_mod
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.service import NodeService, _session_wait, spec_from_proto, spec_to_proto
from quartz_cluster.node.shard import ShardOptions
from quartz_cluster.proto.quartz.v1 import node_pb2

DIM = 4
Code = grpc.StatusCode


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code, self.details = code, details


class Context:
    """What the servicer uses of grpc.aio.ServicerContext."""

    def __init__(self, remaining: float | None = None) -> None:
        self.remaining = remaining

    def time_remaining(self) -> float | None:
        return self.remaining

    async def abort(self, code: grpc.StatusCode, details: str):
        raise Aborted(code, details)


def ref(shard: int = 0, collection: str = "c") -> node_pb2.ShardRef:
    return node_pb2.ShardRef(collection_id=collection, shard=shard)


def spec(shard: int = 0, metric=node_pb2.L2, dim: int = DIM, ef: int = 0) -> node_pb2.ShardSpec:
    return node_pb2.ShardSpec(
        ref=ref(shard), dim=dim, metric=metric, hnsw=node_pb2.HnswParams(m=8, ef_construction=32, ef=ef)
    )


def vectors(rows) -> node_pb2.Vectors:
    arr = np.asarray(rows, dtype="<f4").reshape(-1, DIM)
    return node_pb2.Vectors(data=arr.tobytes(), count=len(arr), dim=DIM)


def one_hot(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0 + i // DIM
    return v


async def refused(call, request, context: Context | None = None) -> Aborted:
    with pytest.raises(Aborted) as info:
        await call(request, context or Context())
    return info.value


async def node(tmp_path, shards=(0, 1, 2)) -> tuple[NodeService, ShardRegistry]:
    registry = ShardRegistry(str(tmp_path), ShardOptions(threads=1))
    await registry.open_all()
    svc = NodeService(registry)
    for shard in shards:
        resp = await svc.CreateShard(node_pb2.CreateShardRequest(spec=spec(shard)), Context())
        assert resp.created
    return svc, registry


async def write(svc, shard: int, ids: list[str], rows, payloads=None, **kw) -> node_pb2.WriteResponse:
    req = node_pb2.WriteRequest(
        ref=ref(shard),
        upserts=node_pb2.PointBatch(ids=ids, vectors=vectors(rows), payloads=payloads or []),
        **kw,
    )
    return await svc.Write(req, Context())


def search_request(shard=0, k=3, also=(), queries=None, **kw) -> node_pb2.SearchRequest:
    return node_pb2.SearchRequest(
        ref=ref(shard),
        queries=vectors([one_hot(0)] if queries is None else queries),
        k=k,
        also_shards=list(also),
        **kw,
    )


def run(coro_fn, tmp_path, shards=(0, 1, 2)):
    async def go():
        svc, registry = await node(tmp_path, shards)
        try:
            await coro_fn(svc, registry)
        finally:
            await registry.close()

    asyncio.run(go())


# ------------------------------------------------------------------ also_shards


def test_also_shards_repeating_the_requests_own_shard_is_refused(tmp_path):
    async def go(svc, registry):
        for also in ([0], [1, 0], [2, 0, 1]):
            err = await refused(svc.Search, search_request(0, also=also))
            assert err.code == Code.INVALID_ARGUMENT
            assert err.details.startswith("also_shards: ") and "repeat" in err.details
        err = await refused(svc.Search, search_request(1, also=[2, 1]))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("also_shards: ")

    run(go, tmp_path)


def test_also_shards_with_duplicates_is_refused(tmp_path):
    async def go(svc, registry):
        for also in ([1, 1], [1, 2, 1]):
            err = await refused(svc.Search, search_request(0, also=also))
            assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("also_shards: ")

    run(go, tmp_path)


def test_an_unknown_also_shards_entry_is_named(tmp_path):
    async def go(svc, registry):
        err = await refused(svc.Search, search_request(0, also=[1, 7, 2]))
        assert err.code == Code.NOT_FOUND and err.details.startswith("also_shards[1]: ")
        assert "c/7" in err.details
        err = await refused(svc.Search, search_request(0, also=[9]))
        assert err.code == Code.NOT_FOUND and err.details.startswith("also_shards[0]: ")

    run(go, tmp_path)


@pytest.mark.parametrize("read", [{"strong": True}, {"min_lsn": 1}])
def test_also_shards_is_for_eventual_reads_only(tmp_path, read):
    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        err = await refused(svc.Search, search_request(0, also=[1], **read))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("also_shards: ")
        assert "eventual" in err.details
        resp = await svc.Search(search_request(0, **read), Context())  # alone, it is fine
        assert list(resp.results[0].ids) == ["a"]

    run(go, tmp_path)


def test_also_shards_holds_fewer_than_the_shards_per_collection_bound(tmp_path):
    async def go(svc, registry):
        bound = limits.SHARDS_PER_COLLECTION_MAX
        err = await refused(svc.Search, search_request(0, also=range(1, bound + 1)))
        assert err.code == Code.INVALID_ARGUMENT and f"< {bound}" in err.details
        # one fewer passes that check and fails on the first shard this node does not hold
        err = await refused(svc.Search, search_request(0, also=range(1, bound)))
        assert err.code == Code.NOT_FOUND and err.details.startswith("also_shards[2]: ")

    run(go, tmp_path)


# ------------------------------------------------------------------ write, get, search, stats


def test_write_get_and_search_one_shard(tmp_path):
    async def go(svc, registry):
        pays = [orjson.dumps({"n": i}) for i in range(4)]
        resp = await write(svc, 0, ["a", "b", "c", "d"], [one_hot(i) for i in range(4)], pays)
        assert (resp.lsn, resp.epoch) == (1, 0)
        resp = await write(svc, 0, ["e"], [one_hot(5)], min_in_sync=0)  # 0 means 1
        assert resp.lsn == 2
        got = await svc.Get(
            node_pb2.GetRequest(ref=ref(0), ids=["b", "zz", "a"], with_vectors=True, with_payload=True),
            Context(),
        )
        assert [p.id for p in got.points] == ["b", "a"]  # request order; unknown ids omitted
        assert got.points[0].vector == np.asarray(one_hot(1), "<f4").tobytes()
        assert got.points[0].payload == pays[1]
        bare = await svc.Get(node_pb2.GetRequest(ref=ref(0), ids=["a"]), Context())
        assert bare.points[0].vector == b"" and bare.points[0].payload == b""
        found = await svc.Search(search_request(0, k=2, queries=[one_hot(2), one_hot(0)]), Context())
        assert [r.ids[0] for r in found.results] == ["c", "a"]  # the second hits tie
        assert [len(r.ids) for r in found.results] == [2, 2]
        assert found.results[0].scores[0] == pytest.approx(0.0)
        assert list(found.searched_shards) == [0]
        assert all(r.payloads == [] for r in found.results)
        assert found.results[0].plan == "hnsw"
        with_pay = await svc.Search(search_request(0, k=1, with_payload=True), Context())
        assert list(with_pay.results[0].payloads) == [pays[0]]
        flt = await svc.Search(
            search_request(0, k=4, filter=orjson.dumps({"must": [{"key": "n", "match": 3}]}).decode()),
            Context(),
        )
        assert list(flt.results[0].ids) == ["d"]
        deleted = await svc.Write(node_pb2.WriteRequest(ref=ref(0), delete_ids=["a"]), Context())
        assert deleted.lsn == 3
        after = await svc.Get(node_pb2.GetRequest(ref=ref(0), ids=["a", "b"]), Context())
        assert [p.id for p in after.points] == ["b"]

    run(go, tmp_path)


def test_one_search_over_several_shards_merges_them(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a0", "b0"], [one_hot(0), one_hot(9)])
        await write(svc, 1, ["a1", "b1"], [one_hot(1), one_hot(0)])
        await write(svc, 2, ["a2"], [one_hot(2)])
        resp = await svc.Search(search_request(0, k=2, also=[1, 2], queries=[one_hot(0)]), Context())
        assert list(resp.searched_shards) == [0, 1, 2]
        assert sorted(resp.results[0].ids) == ["a0", "b1"]  # both at distance 0, from two shards
        resp = await svc.Search(search_request(2, k=1, also=[0], queries=[one_hot(2)]), Context())
        assert list(resp.searched_shards) == [2, 0] and list(resp.results[0].ids) == ["a2"]

    run(go, tmp_path)


def test_stats_and_list_shards(tmp_path):
    async def go(svc, registry):
        await write(svc, 1, ["a", "b"], [one_hot(0), one_hot(1)])
        stats = await svc.Stats(node_pb2.StatsRequest(ref=ref(1)), Context())
        assert stats.health == "ok" and stats.role == "standalone"
        assert (stats.count, stats.applied_lsn, stats.log_end) == (2, 1, 1)
        assert stats.spec.ref.shard == 1 and stats.spec.dim == DIM and stats.spec.metric == node_pb2.L2
        assert stats.spec.hnsw.m == 8 and stats.rss_bytes > 0
        listed = await svc.ListShards(node_pb2.ListShardsRequest(), Context())
        assert sorted(s.spec.ref.shard for s in listed.shards) == [0, 1, 2]
        assert {s.spec.ref.shard: s.count for s in listed.shards} == {0: 0, 1: 2, 2: 0}

    run(go, tmp_path)


def test_a_shard_out_of_service_says_so_in_its_stats(tmp_path):
    async def go(svc, registry):
        registry.get("c", 0).writer.stop_for_good("disk gone")
        stats = await svc.Stats(node_pb2.StatsRequest(ref=ref(0)), Context())
        assert stats.health == "out of service: disk gone"
        err = await refused(svc.Write, node_pb2.WriteRequest(ref=ref(0), delete_ids=["x"]))
        assert err.code == Code.UNAVAILABLE and "disk gone" in err.details

    run(go, tmp_path)


def test_requests_for_a_shard_not_hosted_here_are_not_found(tmp_path):
    async def go(svc, registry):
        for call, req in (
            (svc.Stats, node_pb2.StatsRequest(ref=ref(5))),
            (svc.Get, node_pb2.GetRequest(ref=ref(0, "other"), ids=["a"])),
            (svc.Search, search_request(5)),
            (svc.Write, node_pb2.WriteRequest(ref=ref(5), delete_ids=["a"])),
            (svc.Replicate, node_pb2.ReplicateRequest(ref=ref(5))),
        ):
            err = await refused(call, req)
            assert err.code == Code.NOT_FOUND and err.details.startswith("ref: ")

    run(go, tmp_path, shards=(0,))


def test_bad_requests_are_refused_naming_the_field(tmp_path):
    async def go(svc, registry):
        err = await refused(
            svc.Write,
            node_pb2.WriteRequest(
                ref=ref(0),
                upserts=node_pb2.PointBatch(
                    ids=["a"], vectors=node_pb2.Vectors(data=b"\0" * 12, count=1, dim=3)
                ),
            ),
        )
        assert err.code == Code.INVALID_ARGUMENT
        err = await refused(svc.Search, search_request(0, queries=[]))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("queries: ")
        too_many = [one_hot(0)] * (limits.QUERIES_PER_REQUEST_MAX + 1)
        err = await refused(svc.Search, search_request(0, queries=too_many))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("queries: ")
        resp = await svc.Search(search_request(0, queries=too_many[:-1]), Context())
        assert len(resp.results) == limits.QUERIES_PER_REQUEST_MAX
        err = await refused(svc.Search, search_request(0, k=0))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("k: ")
        err = await refused(svc.Search, search_request(0, ef=limits.EF_MAX + 1))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("ef: ")
        err = await refused(svc.Search, search_request(0, filter="{not json"))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("filter: ")
        ids = [f"id{i}" for i in range(limits.GET_IDS_MAX + 1)]
        err = await refused(svc.Get, node_pb2.GetRequest(ref=ref(0), ids=ids))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("ids: ")
        assert (await svc.Get(node_pb2.GetRequest(ref=ref(0), ids=ids[:-1]), Context())).points == []
        err = await refused(svc.Get, node_pb2.GetRequest(ref=ref(0), ids=["a", "a"]))
        assert err.code == Code.INVALID_ARGUMENT

    run(go, tmp_path, shards=(0,))


def test_write_consistency_is_passed_to_the_shard(tmp_path):
    async def go(svc, registry):
        err = await refused(svc.Write, node_pb2.WriteRequest(ref=ref(0), delete_ids=["a"], min_in_sync=2))
        assert err.code == Code.UNAVAILABLE and "write_consistency" in err.details
        resp = await svc.Write(node_pb2.WriteRequest(ref=ref(0), delete_ids=["a"], min_in_sync=1), Context())
        assert resp.lsn == 1
        err = await refused(svc.Write, node_pb2.WriteRequest(ref=ref(0), delete_ids=["a"], epoch=3))
        assert err.code == Code.FAILED_PRECONDITION and "epoch 3" in err.details

    run(go, tmp_path, shards=(0,))


# ------------------------------------------------------------------ session and strong reads


def test_session_reads_wait_at_most_half_the_time_left():
    assert _session_wait(Context(None)) == limits.SESSION_WAIT_S_MAX
    assert _session_wait(Context(0.5)) == 0.25
    assert _session_wait(Context(10 * limits.SESSION_WAIT_S_MAX)) == limits.SESSION_WAIT_S_MAX


def test_a_session_read_ahead_of_this_replica_is_refused(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        got = await svc.Get(node_pb2.GetRequest(ref=ref(0), ids=["a"], min_lsn=1), Context())
        assert [p.id for p in got.points] == ["a"]
        resp = await svc.Search(search_request(0, min_lsn=1), Context())
        assert list(resp.results[0].ids) == ["a"]
        for call, req in (
            (svc.Get, node_pb2.GetRequest(ref=ref(0), ids=["a"], min_lsn=2)),
            (svc.Search, search_request(0, min_lsn=2)),
        ):
            err = await refused(call, req, Context(0.01))
            assert err.code == Code.UNAVAILABLE and err.details.startswith("session: ")

    run(go, tmp_path, shards=(0,))


def test_strong_reads_only_on_a_primary_with_a_live_lease(tmp_path):
    class Replicator:
        stopped = False

        def in_sync_size(self):
            return 1

        def stop(self):
            self.stopped = True

    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        get = node_pb2.GetRequest(ref=ref(0), ids=["a"], strong=True, epoch=2)
        shard = registry.get("c", 0)
        shard.become_primary(2, Replicator())
        assert [p.id for p in (await svc.Get(get, Context())).points] == ["a"]
        assert list(
            (await svc.Search(search_request(0, strong=True, epoch=2), Context())).results[0].ids
        ) == ["a"]
        stale = node_pb2.GetRequest(ref=ref(0), ids=["a"], strong=True, epoch=1)
        err = await refused(svc.Get, stale)
        assert err.code == Code.UNAVAILABLE and err.details.startswith("consistency: ")
        shard.set_lease_check(lambda: False)
        for call, req in ((svc.Get, get), (svc.Search, search_request(0, strong=True, epoch=2))):
            err = await refused(call, req)
            assert err.code == Code.UNAVAILABLE and "lease" in err.details
        # the lease lapses while the read runs: checked again after it
        calls = []

        def lease_ok():
            calls.append(1)
            return len(calls) == 1

        shard.set_lease_check(lease_ok)
        err = await refused(svc.Get, get)
        assert err.code == Code.UNAVAILABLE and "lease" in err.details and len(calls) == 2
        calls.clear()
        err = await refused(svc.Search, search_request(0, strong=True, epoch=2))
        assert err.code == Code.UNAVAILABLE and "lease" in err.details and len(calls) == 2
        shard.become_follower(3, "n2")
        err = await refused(svc.Get, get)
        assert err.code == Code.UNAVAILABLE and "follower" in err.details
        eventual = await svc.Get(node_pb2.GetRequest(ref=ref(0), ids=["a"]), Context())
        assert [p.id for p in eventual.points] == ["a"]

    run(go, tmp_path, shards=(0,))


# ------------------------------------------------------------------ create and drop


def test_create_and_drop_shards(tmp_path):
    async def go(svc, registry):
        again = await svc.CreateShard(node_pb2.CreateShardRequest(spec=spec(0)), Context())
        assert again.created is False
        err = await refused(svc.CreateShard, node_pb2.CreateShardRequest(spec=spec(0, dim=8)))
        assert err.code == Code.ALREADY_EXISTS and err.details.startswith("spec: ")
        err = await refused(
            svc.CreateShard, node_pb2.CreateShardRequest(spec=spec(1, metric=node_pb2.METRIC_UNSPECIFIED))
        )
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("spec.metric: ")
        err = await refused(svc.CreateShard, node_pb2.CreateShardRequest(spec=spec(1, dim=0)))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("spec.dim: ")
        assert (await svc.DropShard(node_pb2.DropShardRequest(ref=ref(0)), Context())).dropped
        assert not (await svc.DropShard(node_pb2.DropShardRequest(ref=ref(0)), Context())).dropped
        err = await refused(svc.Stats, node_pb2.StatsRequest(ref=ref(0)))
        assert err.code == Code.NOT_FOUND

    run(go, tmp_path, shards=(0,))


@pytest.mark.parametrize("metric", [node_pb2.COSINE, node_pb2.L2, node_pb2.IP])
def test_specs_round_trip(metric):
    msg = spec(7, metric=metric, ef=50)
    parsed = spec_from_proto(msg)
    assert (parsed.collection_id, parsed.shard, parsed.dim) == ("c", 7, DIM)
    assert (parsed.m, parsed.ef_construction, parsed.ef) == (8, 32, 50)
    assert spec_to_proto(parsed) == msg
    assert spec_from_proto(spec(0)).ef == limits.DEFAULT_EF  # zero: the default


def test_an_unexpected_error_is_internal_not_a_crash(tmp_path, monkeypatch, caplog):
    async def go(svc, registry):
        def boom(*args):
            raise RuntimeError("disk on fire at /secret/path")

        monkeypatch.setattr(registry.get("c", 0), "get", boom)
        with caplog.at_level("ERROR", logger="quartz.rpc"):
            err = await refused(svc.Get, node_pb2.GetRequest(ref=ref(0), ids=["a"]))
        # the caller gets an error id, never the internal text; the log has both
        assert err.code == Code.INTERNAL and "disk on fire" not in err.details
        error_id = re.fullmatch(
            r"internal error \(error id ([0-9a-f]{12}); see the server log\)", err.details
        )
        assert error_id is not None
        (record,) = [r for r in caplog.records if r.getMessage() == "unhandled error"]
        assert record.error_id == error_id.group(1) and "disk on fire" in str(record.exc_info[1])

    run(go, tmp_path, shards=(0,))


# ------------------------------------------------------------------ replication


def test_replicate_applies_a_primarys_entries_and_bounds_a_call(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a", "b"], [one_hot(0), one_hot(1)])
        await write(svc, 0, ["c"], [one_hot(2)])
        entries = registry.get("c", 0).read_log(1, 10)
        req = node_pb2.ReplicateRequest(ref=ref(1), epoch=1, primary="n1", prev_lsn=0, entries=entries)
        resp = await svc.Replicate(req, Context())
        assert resp.status == node_pb2.REPLICATE_OK and resp.log_end == 2
        assert resp.incarnation == registry.get("c", 1).incarnation != ""
        assert set(registry.get("c", 1).label_of) == {"a", "b", "c"}
        bound = (
            limits.REPLICATION_ENTRIES_PER_CALL_MAX
            + limits.INLINE_CATCHUP_ENTRIES_MAX
            + limits.GROUP_COMMIT_BATCHES_MAX
        )
        over = node_pb2.ReplicateRequest(ref=ref(1), epoch=1, prev_lsn=2, entries=[b""] * (bound + 1))
        err = await refused(svc.Replicate, over)
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("entries: ")
        at = node_pb2.ReplicateRequest(ref=ref(1), epoch=1, prev_lsn=2, entries=[b""] * bound)
        err = await refused(svc.Replicate, at)  # accepted in size; refused by the follower's check
        assert err.code == Code.FAILED_PRECONDITION and "entry 0 has LSN 0" in err.details

    run(go, tmp_path, shards=(0, 1))


async def chunks_of(shard, epoch=1, later=None):
    """A replica's snapshot as the stream a primary sends to shard 1; `later` changes every chunk
    after the first."""
    for lsn, lsn_epoch, next_label, rows in shard.snapshot_chunks():
        fields = {
            "ref": ref(1),
            "epoch": epoch,
            "lsn": lsn,
            "lsn_epoch": lsn_epoch,
            "next_label": next_label,
            "keys": [k for k, _ in rows],
            "values": [v for _, v in rows],
        }
        fields.update(later if rows and later else {})
        yield node_pb2.SnapshotChunk(**fields)


def staging_dirs(registry) -> list[str]:
    path = registry.get("c", 1).path
    return [d for d in os.listdir(path) if d.startswith("db.incoming")]


def test_install_snapshot_of_a_stream(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a", "b"], [one_hot(0), one_hot(1)])
        await write(svc, 0, ["c"], [one_hot(2)])
        resp = await svc.InstallSnapshot(chunks_of(registry.get("c", 0)), Context())
        assert resp.status == node_pb2.REPLICATE_OK and resp.log_end == 2
        follower = registry.get("c", 1)
        assert follower.label_of == registry.get("c", 0).label_of and follower.applied_lsn == 2
        assert staging_dirs(registry) == []

    run(go, tmp_path, shards=(0, 1))


@pytest.mark.parametrize("field", ["lsn", "epoch", "ref"])
def test_install_snapshot_chunks_that_disagree_are_refused(tmp_path, field):
    async def go(svc, registry):
        await write(svc, 0, ["a", "b"], [one_hot(0), one_hot(1)])
        other = {"lsn": 9, "epoch": 2, "ref": ref(2)}[field]
        err = await refused(svc.InstallSnapshot, chunks_of(registry.get("c", 0), later={field: other}))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("chunks: ")
        assert "same shard, epoch, lsn" in err.details
        follower = registry.get("c", 1)
        assert follower.label_of == {} and staging_dirs(registry) == []
        resp = await svc.InstallSnapshot(chunks_of(registry.get("c", 0)), Context())  # the next one works
        assert resp.status == node_pb2.REPLICATE_OK and set(follower.label_of) == {"a", "b"}

    run(go, tmp_path, shards=(0, 1, 2))


def test_an_empty_snapshot_stream_is_refused(tmp_path):
    async def go(svc, registry):
        async def nothing():
            return
            yield

        err = await refused(svc.InstallSnapshot, nothing())
        assert err.code == Code.INVALID_ARGUMENT and err.details == "chunks: an empty snapshot stream"

    run(go, tmp_path, shards=(0, 1))


def test_an_interrupted_snapshot_stream_releases_its_staging(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a", "b"], [one_hot(0), one_hot(1)])
        source = registry.get("c", 0)

        async def broken():
            async for chunk in chunks_of(source):
                yield chunk
            raise grpc.aio.AioRpcError(Code.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")

        for _ in range(3):
            err = await refused(svc.InstallSnapshot, broken())
            assert err.code == Code.INTERNAL and "error id" in err.details
            assert staging_dirs(registry) == []
        resp = await svc.InstallSnapshot(chunks_of(source), Context())
        assert resp.status == node_pb2.REPLICATE_OK and set(registry.get("c", 1).label_of) == {"a", "b"}

    run(go, tmp_path, shards=(0, 1))


def test_a_cancelled_snapshot_stream_releases_its_staging(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        source = registry.get("c", 0)
        started = asyncio.Event()

        async def stalls():
            async for chunk in chunks_of(source):
                yield chunk
            started.set()
            await asyncio.Event().wait()  # the primary goes quiet; gRPC cancels the handler

        call = asyncio.ensure_future(svc.InstallSnapshot(stalls(), Context()))
        await started.wait()
        assert len(staging_dirs(registry)) == 1
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        assert staging_dirs(registry) == []
        resp = await svc.InstallSnapshot(chunks_of(source), Context())
        assert resp.status == node_pb2.REPLICATE_OK

    run(go, tmp_path, shards=(0, 1))


def test_a_snapshot_of_a_fenced_epoch_is_refused(tmp_path):
    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        registry.get("c", 1).become_follower(5, "n2")
        err = await refused(svc.InstallSnapshot, chunks_of(registry.get("c", 0), epoch=4))
        assert err.code == Code.FAILED_PRECONDITION and "fenced" in err.details
        assert staging_dirs(registry) == [] and registry.get("c", 1).label_of == {}

    run(go, tmp_path, shards=(0, 1))


def test_search_results_carry_payloads_only_when_asked():
    merged = [(["a"], [0.5], [b"{}"])]
    assert service_mod.search_results(merged, ["exact"], False)[0].payloads == []
    res = service_mod.search_results(merged, ["exact"], True)[0]
    assert list(res.payloads) == [b"{}"] and list(res.ids) == ["a"] and res.plan == "exact"


# ------------------------------------------------------------------ search budgets (issue 12)


def test_a_search_over_the_hits_or_work_budget_is_refused_before_any_work(tmp_path, monkeypatch):
    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])

        def no_work(*args, **kw):
            raise AssertionError("searched although the request was over budget")

        monkeypatch.setattr(registry.get("c", 0), "search", no_work)
        many = [one_hot(0)] * 32
        # 32 x 1024 = 32,768 hits > SEARCH_HITS_MAX (the probe used 1,024 x 1,024)
        err = await refused(svc.Search, search_request(k=1024, queries=many))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("k: 32 queries x k 1024 = 32768")
        assert "SEARCH_HITS_MAX" in err.details
        # 32 x ef 8,192 = 262,144 is exactly the work budget; 33 queries are over it
        err = await refused(svc.Search, search_request(k=1, ef=8192, queries=[one_hot(0)] * 33))
        assert err.code == Code.INVALID_ARGUMENT and err.details.startswith("ef: 33 queries x ef 8192")

    run(go, tmp_path, shards=(0,))


def test_a_reply_whose_payloads_exceed_the_budget_is_refused(tmp_path, monkeypatch):
    async def go(svc, registry):
        blob = orjson.dumps({"text": "x" * 1000})
        await write(svc, 0, ["a", "b", "c"], [one_hot(0), one_hot(1), one_hot(2)], [blob] * 3)
        monkeypatch.setattr(limits, "SEARCH_REPLY_BYTES_MAX", 3 * len(blob))
        ok = await svc.Search(search_request(k=3, with_payload=True), Context())
        assert len(ok.results[0].payloads) == 3  # exactly at the budget: answered
        two = search_request(k=3, with_payload=True, queries=[one_hot(0), one_hot(1)])
        err = await refused(svc.Search, two)  # the same 3 payloads twice: 6 > 3
        assert err.code == Code.RESOURCE_EXHAUSTED and err.details.startswith("with_payload: ")
        assert "SEARCH_REPLY_BYTES_MAX" in err.details
        without = await svc.Search(search_request(k=3, queries=[one_hot(0), one_hot(1)]), Context())
        assert [len(r.ids) for r in without.results] == [3, 3]  # ids only: no payload budget

    run(go, tmp_path, shards=(0,))


def test_a_write_beyond_the_nodes_memory_budget_is_refused_and_changes_nothing(tmp_path):
    from quartz_cluster.node.memory import NodeBudget

    async def go(svc, registry):
        await write(svc, 0, ["a"], [one_hot(0)])
        svc.budget = NodeBudget("n1", memory_bytes_max=10**9, fds_max=10**6)
        svc.budget.rss = lambda: 10**9 - 2 * DIM * 4 * 2  # room for exactly 2 rows, no payload
        ok = await write(svc, 0, ["b", "c"], [one_hot(1), one_hot(2)])
        err = await refused(
            svc.Write,
            node_pb2.WriteRequest(
                ref=ref(0),
                upserts=node_pb2.PointBatch(ids=["d", "e", "f"], vectors=vectors([one_hot(3)] * 3)),
            ),
        )
        assert err.code == Code.RESOURCE_EXHAUSTED and err.details.startswith("upserts: node n1 uses")
        assert "--memory-max" in err.details
        assert set(registry.get("c", 0).label_of) == {"a", "b", "c"} and ok.lsn == 2
        deleted = await svc.Write(node_pb2.WriteRequest(ref=ref(0), delete_ids=["a"]), Context())
        assert deleted.lsn == 3  # deletes free memory: never refused

    run(go, tmp_path, shards=(0,))


def test_a_search_over_several_shards_attaches_each_winners_own_payload(tmp_path, monkeypatch):
    """Payloads are read after the merge, from the shard each winner came from; the budget
    counts the merged reply only (3 shards x 2 hits of 1 KB fit a budget of 2 hits' worth)."""

    async def go(svc, registry):
        for s in (0, 1, 2):
            ids = [f"s{s}a", f"s{s}b"]
            blobs = [orjson.dumps({"id": pid, "pad": "x" * 1000}) for pid in ids]
            await write(svc, s, ids, [one_hot(s), one_hot(s + 3)], blobs)
        size = len(orjson.dumps({"id": "s0a", "pad": "x" * 1000}))
        monkeypatch.setattr(limits, "SEARCH_REPLY_BYTES_MAX", 2 * size)
        req = search_request(k=2, also=(1, 2), queries=[one_hot(1)], with_payload=True)
        reply = await svc.Search(req, Context())
        (result,) = reply.results
        assert len(result.ids) == 2 and result.ids[0] == "s1a"
        for pid, blob in zip(result.ids, result.payloads, strict=True):
            assert orjson.loads(blob)["id"] == pid
        three = search_request(k=3, also=(1, 2), queries=[one_hot(1)], with_payload=True)
        err = await refused(svc.Search, three)
        assert err.code == Code.RESOURCE_EXHAUSTED

    run(go, tmp_path)


def test_attach_payloads_drops_a_hit_deleted_since_the_graph_search(tmp_path):
    from quartz_cluster.node.shard.search import SearchHits, attach_payloads

    class Store:
        def __init__(self, blobs):
            self.blobs = blobs

        def payloads(self, ids):
            return [self.blobs.get(i) for i in ids]

    per_shard = [[SearchHits(["a", "b"], [0.1, 0.2], [], "hnsw")], [SearchHits(["c"], [0.15], [], "hnsw")]]
    merged = [(["a", "c", "b"], [0.1, 0.15, 0.2], [])]
    stores = [Store({"a": b'{"n":1}'}), Store({"c": b'{"n":3}'})]  # "b" was deleted meanwhile
    out = attach_payloads(stores, per_shard, merged, validation.ReplyBudget(100))
    assert out == [(["a", "c"], [0.1, 0.15], [b'{"n":1}', b'{"n":3}'])]


def test_a_write_that_would_double_the_index_counts_the_doubling(tmp_path):
    from quartz_cluster.node.memory import NodeBudget

    async def go(svc, registry):
        replica = registry.get("c", 0)
        cap = replica.state.hnsw.capacity
        rows = np.zeros((cap - 1, DIM), np.float32)
        rows[np.arange(cap - 1), np.arange(cap - 1) % DIM] = 1.0
        await write(svc, 0, [f"p{i}" for i in range(cap - 1)], rows)
        assert replica.growth_bytes(1) == 0 and replica.growth_bytes(2) > 0
        doubled = replica.growth_bytes(2)
        assert doubled >= 2 * cap * DIM * 4  # at least the doubled float32 mirror
        svc.budget = NodeBudget("n1", memory_bytes_max=10**10, fds_max=10**6)
        svc.budget.rss = lambda: 10**10 - doubled  # room for the doubling, not for the rows too
        await write(svc, 0, ["last"], [one_hot(0)])  # fits: no doubling
        err = await refused(
            svc.Write,
            node_pb2.WriteRequest(
                ref=ref(0), upserts=node_pb2.PointBatch(ids=["x", "y"], vectors=vectors([one_hot(1)] * 2))
            ),
        )
        assert err.code == Code.RESOURCE_EXHAUSTED and "this write needs" in err.details
        assert replica.state.hnsw.capacity == cap  # nothing was resized

    run(go, tmp_path, shards=(0,))
