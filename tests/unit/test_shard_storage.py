"""ShardReplica against a real RocksDB in a temp dir (no network): recovery paths produce the
same state, labels are reused, group commit keeps LSNs contiguous."""

import asyncio
import glob
import os

import numpy as np
import pytest

from quartz_cluster import filters, limits, validation
from quartz_cluster.errors import ResourceExhausted
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec
from quartz_cluster.replication.primary import NotCommitted

DIM = 8
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=64, ef=64)


def batch(ids, rng, deletes=(), tag="t"):
    vecs = rng.normal(size=(len(ids), DIM)).astype("<f4")
    blobs = [f'{{"tag": "{tag}", "n": {i}}}'.encode() for i in range(len(ids))]
    return validation.write_batch(ids, vecs.tobytes(), len(ids), DIM, blobs, list(deletes), DIM)


def open_replica(path, **opts):
    r = ShardReplica(str(path), SPEC, ShardOptions(**opts))
    how = r.load()
    return r, how


def snapshot(r):
    q = np.random.default_rng(9).normal(size=(20, DIM)).astype(np.float32)
    hits = r.search(q, 5, 200, None, False)
    flt = filters.parse({"must": [{"key": "tag", "match": "b"}]})
    return {
        "label_of": dict(r.label_of),
        "free": sorted(r.free),
        "next_label": r.next_label,
        "applied": r.applied_lsn,
        "hits": [h.ids for h in hits],
        "filtered": [h.ids for h in r.search(q, 5, 200, flt, False)],
    }


async def write_history(r, rng):
    r.start()
    await r.write(batch([f"a{i}" for i in range(300)], rng, tag="a"))
    await r.write(
        batch([f"b{i}" for i in range(200)], rng, deletes=[f"a{i}" for i in range(0, 300, 3)], tag="b")
    )
    await r.write(batch([f"a{i}" for i in range(0, 90, 3)], rng, tag="b"))  # re-insert some deleted ids
    await r.write(batch([f"a{i}" for i in range(1, 40, 3)], rng, tag="a"))  # update in place
    await r.close(checkpoint=False)


def test_replay_and_rebuild_reach_the_same_state(tmp_path):
    rng = np.random.default_rng(0)

    async def go():
        r, how = open_replica(tmp_path, checkpoint_every_points=250)  # checkpoints mid-history
        assert how == "empty"
        await write_history(r, rng)

    asyncio.run(go())
    assert glob.glob(str(tmp_path / "ckpt" / "*.state"))
    r1, how1 = open_replica(tmp_path)
    assert how1.startswith("checkpoint@")
    s1 = snapshot(r1)
    r1.db.close()

    for f in glob.glob(str(tmp_path / "ckpt" / "*")):
        os.remove(f)
    r2, how2 = open_replica(tmp_path)
    assert how2 == "rebuild"
    s2 = snapshot(r2)
    r2.db.close()
    assert s1 == s2
    assert s1["applied"] == 4
    assert len(s1["label_of"]) == 300 - 100 + 200 + 30


def test_reopening_twice_is_idempotent(tmp_path):
    async def go():
        r, _ = open_replica(tmp_path)
        await write_history(r, np.random.default_rng(1))

    asyncio.run(go())
    states = []
    for _ in range(2):
        r, how = open_replica(tmp_path)
        assert how == "rebuild"  # no checkpoint was ever taken: rows are the source
        states.append(snapshot(r))
        r.db.close()
    assert states[0] == states[1]


def test_deleted_labels_are_reused_and_capacity_does_not_grow(tmp_path):
    rng = np.random.default_rng(2)

    async def go():
        r, _ = open_replica(tmp_path)
        r.start()
        await r.write(batch([f"x{i}" for i in range(1000)], rng))
        cap = r.hnsw.capacity
        for round_ in range(5):
            await r.write(
                batch([], rng, deletes=[f"x{i}" for i in range(500)])
                if round_ == 0
                else batch([], rng, deletes=[f"y{round_ - 1}-{i}" for i in range(500)])
            )
            await r.write(batch([f"y{round_}-{i}" for i in range(500)], rng))
        assert r.next_label == 1000 and r.hnsw.capacity == cap and len(r.label_of) == 1000
        await r.close()

    asyncio.run(go())


def test_group_commit_assigns_contiguous_lsns(tmp_path):
    rng = np.random.default_rng(3)

    async def go():
        r, _ = open_replica(tmp_path, commit_mode="group")
        r.start()
        lsns = await asyncio.gather(
            *(r.write(batch([f"g{j}-{i}" for i in range(10)], rng)) for j in range(40))
        )
        assert sorted(lsns) == list(range(1, 41))
        await r.close(checkpoint=False)

    asyncio.run(go())
    r, _ = open_replica(tmp_path)
    assert r.applied_lsn == 40 and len(r.label_of) == 400
    r.db.close()


def test_full_write_queue_is_refused_not_buffered(tmp_path):
    rng = np.random.default_rng(4)

    async def go():
        r, _ = open_replica(tmp_path)
        r.start()
        from quartz_cluster import limits

        writes = [r.write(batch([f"q{j}"], rng)) for j in range(limits.WRITE_QUEUE_DEPTH_MAX + 5)]
        results = await asyncio.gather(*writes, return_exceptions=True)
        refused = [x for x in results if isinstance(x, ResourceExhausted)]
        assert refused and all(isinstance(x, int | ResourceExhausted) for x in results)
        await r.close(checkpoint=False)

    asyncio.run(go())


@pytest.mark.parametrize("metric", ["cosine", "l2", "ip"])
def test_exact_and_graph_plans_agree_on_scores(tmp_path, metric, monkeypatch):
    rng = np.random.default_rng(5)
    monkeypatch.setattr(limits, "GRAPH_FILTER_SELECTIVITY_MIN", 1.01)  # a match-all filter brute-forces
    spec = ShardSpec("c", 0, DIM, metric, m=16, ef_construction=200, ef=200)

    async def go():
        r = ShardReplica(str(tmp_path), spec, ShardOptions())
        r.load()
        r.start()
        await r.write(batch([f"p{i}" for i in range(500)], rng))
        q = rng.normal(size=(10, DIM)).astype(np.float32)
        graph = r.search(q, 5, 400, None, False)
        exact = r.search(q, 5, 0, filters.parse({"must": [{"key": "tag", "match": "t"}]}), False)
        assert [h.plan for h in graph] == ["hnsw"] * 10 and [h.plan for h in exact] == ["exact"] * 10
        for g, e in zip(graph, exact, strict=True):
            assert np.allclose(g.scores, e.scores, atol=1e-4), (g.scores, e.scores)
            # the same points, except where two scores tie within float rounding
            gaps = np.diff(e.scores)
            if np.all(np.abs(gaps) > 1e-4):
                assert g.ids == e.ids
        await r.close()

    asyncio.run(go())


def test_exact_search_in_chunks_equals_one_pass(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    flt = filters.parse({"must": [{"key": "tag", "match": "t"}]})

    monkeypatch.setattr(limits, "GRAPH_FILTER_SELECTIVITY_MIN", 1.01)  # a match-all filter brute-forces

    async def go():
        r, _ = open_replica(tmp_path)
        r.start()
        await r.write(batch([f"p{i}" for i in range(700)], rng))
        q = rng.normal(size=(7, DIM)).astype(np.float32)
        one_pass = r.search(q, 10, 0, flt, False)
        monkeypatch.setattr(limits, "EXACT_CHUNK_ROWS", 64)  # 11 chunks
        fetched: list[int] = []
        real_vectors = r.hnsw.vectors
        monkeypatch.setattr(
            r.hnsw, "vectors", lambda labels: fetched.append(len(labels)) or real_vectors(labels)
        )
        chunked = r.search(q, 10, 0, flt, False)
        assert max(fetched) == 64 and sum(fetched) == 700
        assert [h.plan for h in one_pass] == [h.plan for h in chunked] == ["exact"] * 7
        assert [h.ids for h in chunked] == [h.ids for h in one_pass]
        assert np.allclose([h.scores for h in chunked], [h.scores for h in one_pass])
        await r.close()

    asyncio.run(go())


def test_close_with_writes_in_flight_resolves_every_write(tmp_path):
    rng = np.random.default_rng(7)

    async def go():
        r, _ = open_replica(tmp_path)
        r.start()
        writes = [
            asyncio.ensure_future(r.write(batch([f"w{j}-{i}" for i in range(20)], rng))) for j in range(30)
        ]
        await asyncio.sleep(0)  # let them queue
        await r.close()
        late = r.write(batch(["late"], rng))
        results = await asyncio.gather(*writes, late, return_exceptions=True)
        acked = [x for x in results if isinstance(x, int)]
        assert len(acked) == 30  # queued before close: all completed
        assert isinstance(results[-1], Exception) and "closing" in str(results[-1])
        return len(acked)

    acked = asyncio.run(go())
    r, _ = open_replica(tmp_path)
    assert len(r.label_of) == acked * 20
    r.db.close()


class _FakeReplicator:
    """Stands in for replication: commits unless stopped (a demotion stops it)."""

    def __init__(self) -> None:
        self.stopped = False
        self.calls = 0

    def in_sync_size(self) -> int:
        return 1

    def stop(self) -> None:
        self.stopped = True

    async def replicate(self, entries, prev_lsn, prev_epoch) -> None:
        self.calls += 1
        if self.stopped:
            raise NotCommitted("no longer the primary")


def test_primary_demoted_mid_group_does_not_acknowledge(tmp_path, monkeypatch):
    """The map may demote a primary while a group is in flight: the group must not commit
    (a drain once lost acknowledged writes this way: the old primary applied without replicating)."""
    rng = np.random.default_rng(8)

    async def go():
        r, _ = open_replica(tmp_path)
        r.start()
        first = _FakeReplicator()
        r.become_primary(1, first)
        assert await r.write(batch(["a"], rng), epoch=1) == 1
        real_append = r.pipeline.append

        def append_then_demoted(*args):
            r.become_follower(2, "n9")  # the membership task runs while the append is in a thread
            return real_append(*args)

        monkeypatch.setattr(r.pipeline, "append", append_then_demoted)
        try:
            await r.write(batch(["b"], rng), epoch=1)
        except Exception as exc:
            failed = exc
        else:
            failed = None
        assert failed is not None and "not committed" in str(failed)
        assert first.calls == 2 and r.applied_lsn == r.log_end == 1
        assert r.get(["b"], True, True) == [] and "b" not in r.label_of
        monkeypatch.setattr(r.pipeline, "append", real_append)
        with pytest.raises(Exception, match="follower"):
            await r.write(batch(["c"], rng), epoch=2)
        await r.close(checkpoint=False)

    asyncio.run(go())
