"""The one writer of a shard replica (node/shard/writer.py) and the defects it removes by
construction, against a real RocksDB in a temp dir (no network): a failing checkpoint does not
stop writes, a cancelled follower append cannot run twice, write_consistency is re-checked after
the append, followers checkpoint and trim their log, a checkpoint of another history is never
loaded, and a log tail left by a crash is applied on open."""

from __future__ import annotations

import asyncio
import glob
import os
import threading
import time

import numpy as np
import pytest

from quartz_cluster import validation
from quartz_cluster.errors import FailedPrecondition, Internal, Unavailable
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec
from quartz_cluster.node.shard.pipeline import Pending
from quartz_cluster.node.shard.role import ReplicaRole
from quartz_cluster.proto.quartz.v1 import node_pb2

DIM = 8
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=32, ef=32)
HANG_GUARD_S = 60  # only to turn a hang (the defect) into a failure, never a speed bound


async def settled(r: ShardReplica) -> None:
    """Wait until the writer finished everything queued so far, its after-job steps included."""
    while not r.writer.idle and not r.writer.stopped:
        await asyncio.sleep(0.005)


def batch(ids, seed=0, deletes=()):
    vecs = np.random.default_rng(seed).normal(size=(len(ids), DIM)).astype("<f4")
    blobs = [b'{"n": 1}'] * len(ids)
    return validation.write_batch(ids, vecs.tobytes(), len(ids), DIM, blobs, list(deletes), DIM)


def replica(path, **opts) -> ShardReplica:
    r = ShardReplica(str(path), SPEC, ShardOptions(**opts))
    r.load()
    return r


class FakeReplicator:
    """In-sync set of `size` that shrinks to `after` while a group replicates."""

    def __init__(self, size: int = 2, after: int | None = None) -> None:
        self.size, self.after = size, after
        self.stopped = False

    def in_sync_size(self) -> int:
        return self.size

    def stop(self) -> None:
        self.stopped = True

    async def replicate(self, entries, prev_lsn, prev_epoch) -> None:
        if self.after is not None:
            self.size = self.after


def replicate_request(entries: list[bytes], prev_lsn: int, prev_epoch: int, epoch: int = 1):
    return node_pb2.ReplicateRequest(
        ref=node_pb2.ShardRef(collection_id="c", shard=0),
        epoch=epoch,
        primary="p",
        prev_lsn=prev_lsn,
        prev_epoch=prev_epoch,
        entries=entries,
    )


# ------------------------------------------------------------------ defect 1: failed checkpoints


def test_a_failing_checkpoint_is_reported_and_retried_while_writes_go_on(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=5, checkpoint_retry_s_min=0.0)
        r.start()
        real_save = r.checkpoints.save
        failures = {"left": 1_000}

        def save(*args):
            if failures["left"]:
                failures["left"] -= 1
                raise OSError(28, "No space left on device")
            return real_save(*args)

        monkeypatch.setattr(r.checkpoints, "save", save)
        lsns = []
        for i in range(3):
            lsns.append(
                await asyncio.wait_for(r.write(batch([f"a{i}-{j}" for j in range(5)], i)), HANG_GUARD_S)
            )
            await settled(r)
            assert "checkpoint failing" in r.health() and "No space left" in r.health()
            assert r.checkpoint_failures >= i + 1 and not r.broken
        assert lsns == [1, 2, 3] and r.checkpoint_lsn == 0
        failures["left"] = 0
        # the fault clears: the next retry succeeds and the health is ok again
        await asyncio.wait_for(r.write(batch(["b"], 9)), HANG_GUARD_S)
        await settled(r)
        assert r.health() == "ok" and r.checkpoint_lsn == 4 and len(r.label_of) == 16
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_checkpoint_retries_back_off(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, checkpoint_retry_s_min=3600.0)
        r.start()
        calls = []

        def save(*args):
            calls.append(1)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.checkpoints, "save", save)
        for i in range(4):
            await asyncio.wait_for(r.write(batch([f"x{i}"], i)), HANG_GUARD_S)
            await settled(r)
        assert len(calls) == 1  # the next try waits for the backoff, not the next write
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_shard_that_cannot_append_refuses_at_once(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path)
        r.start()

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.store, "write", full)
        for i in range(3):
            with pytest.raises(Unavailable, match="storage write failed"):
                await asyncio.wait_for(r.write(batch([f"x{i}"], i)), HANG_GUARD_S)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_shard_whose_apply_failed_is_out_of_service_and_says_so_at_once(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path)
        r.start()

        def boom(group):
            raise RuntimeError("hnsw exploded")

        monkeypatch.setattr(r.pipeline, "apply_committed", boom)
        with pytest.raises(Internal, match="apply failed"):
            await asyncio.wait_for(r.write(batch(["x"])), HANG_GUARD_S)
        assert r.broken and "out of service" in r.health()
        with pytest.raises(Unavailable, match="out of service"):
            await asyncio.wait_for(r.write(batch(["y"])), HANG_GUARD_S)
        with pytest.raises(Unavailable, match="out of service"):
            r.search(np.zeros((1, DIM), np.float32), 1, 0, None, False)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_the_writer_loop_never_dies_silently(tmp_path, monkeypatch):
    """An unexpected error of the loop itself: queued and later writes are refused, not left waiting."""

    async def go():
        r = replica(tmp_path, commit_mode="batch")  # one batch per group: x, then y
        r.start()

        async def loop_bug():
            raise RuntimeError("bug in after_job")

        monkeypatch.setattr(r.writer, "_after_job", loop_bug)
        first = asyncio.ensure_future(r.write(batch(["x"])))
        second = asyncio.ensure_future(r.write(batch(["y"])))
        results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), HANG_GUARD_S)
        assert results[0] == 1  # committed before the loop failed
        assert isinstance(results[1], Unavailable) and "out of service" in str(results[1])
        with pytest.raises(Unavailable, match="out of service"):
            await r.write(batch(["z"]))

    asyncio.run(go())


# ------------------------------------------------------------------ defect 3: consistency after append


def test_write_consistency_is_rechecked_after_in_sync_shrinks(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        rep = FakeReplicator(size=2, after=1)  # a follower is dropped while the group replicates
        r.become_primary(1, rep)
        with pytest.raises(Unavailable, match="not enough replicas after append") as err:
            await r.write(batch(["p1", "p2"]), epoch=1, min_in_sync=2)
        assert "p1, p2" in str(err.value) and err.value.field == "write_consistency"
        # the entry was committed on the replicas left (it is in the log and applied) ...
        assert r.applied_lsn == 1 and set(r.label_of) == {"p1", "p2"}
        # ... and a write that asks for no more than is left is acknowledged
        assert await r.write(batch(["p3"]), epoch=1, min_in_sync=1) == 2
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_write_refused_before_append_when_in_sync_is_too_small(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        r.become_primary(1, FakeReplicator(size=1))
        with pytest.raises(Unavailable, match="has 1 in-sync replicas; the write needs 2"):
            await r.write(batch(["p1"]), epoch=1, min_in_sync=2)
        assert r.log_end == 0
        await r.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ defect 4: cancelled follower appends


def primary_log(path, n: int, points: int = 4) -> list[bytes]:
    """n log entries written by a standalone replica (what a primary would send)."""

    async def go():
        p = replica(path)
        p.start()
        for i in range(n):
            await p.write(batch([f"e{i}-{j}" for j in range(points)], i))
        entries = p.read_log(1, n)
        await p.close(checkpoint=False)
        return entries

    return asyncio.run(go())


def test_a_cancelled_append_finishes_before_the_retry_runs(tmp_path, monkeypatch):
    """The primary's deadline cancels a follower's Replicate handler while the entries are being
    applied; the retry must see the finished append (no second apply of the same LSN)."""
    entries = primary_log(tmp_path / "p", 3)

    async def go():
        f = replica(tmp_path / "f")
        f.start()
        f.become_follower(1, "p")
        import quartz_cluster.node.shard.follower as follower_mod

        real = follower_mod.commit_entries
        running, overlaps, applied = [0], [0], []
        release = threading.Event()

        def slow_commit(state, store, new, *args):
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
            release.wait(HANG_GUARD_S)
            try:
                applied.extend(e.lsn for e in new)
                return real(state, store, new, *args)
            finally:
                running[0] -= 1

        monkeypatch.setattr(follower_mod, "commit_entries", slow_commit)
        first = asyncio.ensure_future(f.append_replicated(replicate_request(entries, 0, 0)))
        await asyncio.sleep(0.05)
        first.cancel()  # the deadline passes while the thread applies
        retry = asyncio.ensure_future(f.append_replicated(replicate_request(entries, 0, 0)))
        await asyncio.sleep(0.05)
        release.set()
        resp = await asyncio.wait_for(retry, HANG_GUARD_S)
        assert resp.status == node_pb2.REPLICATE_OK and resp.log_end == 3
        assert overlaps[0] == 1 and applied == [1, 2, 3]  # applied once, never concurrently
        assert f.applied_lsn == 3 and len(f.label_of) == 12
        await f.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ defect 6: followers checkpoint


def test_followers_checkpoint_and_trim_their_log(tmp_path):
    entries = primary_log(tmp_path / "p", 200, points=1)

    async def go():
        f = replica(
            tmp_path / "f", checkpoint_every_points=50, log_retention_entries=10, follower_checkpoint_jitter=0
        )
        f.start()
        f.become_follower(1, "p")
        for i, raw in enumerate(entries):
            resp = await f.append_replicated(replicate_request([raw], i, 0))
            assert resp.status == node_pb2.REPLICATE_OK
        await settled(f)
        assert f.checkpoint_lsn == 200
        kept = [k for k, _ in f.store.scan(b"g/")]
        assert len(kept) <= 10 + 1
        await f.close(checkpoint=False)

    asyncio.run(go())
    assert glob.glob(str(tmp_path / "f" / "ckpt" / "*.state"))
    f = replica(tmp_path / "f")
    assert f.applied_lsn == 200 and len(f.label_of) == 200
    f.store.close()


# ------------------------------------------------------------------ defect 7: one history per checkpoint


def test_a_checkpoint_of_another_history_is_never_loaded(tmp_path):
    """A crash after a snapshot replaced the database but before the old checkpoint files were
    gone must not load them: they describe another history at the same LSN."""
    primary_entries = primary_log(tmp_path / "p", 2)

    async def go():
        f = replica(tmp_path / "f", checkpoint_every_points=1)
        f.start()
        for i in range(2):  # its own history: 2 local points, checkpointed at LSN 2
            await f.write(batch([f"old{i}"], i))
        await settled(f)
        assert f.checkpoint_lsn == 2
        saved = {}
        for path in glob.glob(str(tmp_path / "f" / "ckpt" / "*")):
            with open(path, "rb") as fh:
                saved[path] = fh.read()
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(replicate_request(primary_entries, 0, 0))
        staging = f.begin_snapshot(1, 2, 0, src.next_label)  # a primary's state, also at LSN 2
        for _, _, _, rows in src.snapshot_chunks():
            if rows:
                staging.write([k for k, _ in rows], [v for _, v in rows])
        await f.install_snapshot(staging)
        assert set(f.label_of) == set(src.label_of) and len(f.label_of) == 8
        await src.close(checkpoint=False)
        await f.close(checkpoint=False)
        for path, data in saved.items():  # the crash window: old checkpoint files still there
            with open(path, "wb") as fh:
                fh.write(data)

    asyncio.run(go())
    f = replica(tmp_path / "f")
    assert not any(pid.startswith("old") for pid in f.label_of)
    assert len(f.label_of) == 8 and f.applied_lsn == 2
    f.store.close()


def test_checkpoint_and_install_never_overlap(tmp_path, monkeypatch):
    """Both are writer jobs: an install waits for a running checkpoint to finish."""
    primary_entries = primary_log(tmp_path / "p", 1)

    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(replicate_request(primary_entries, 0, 0))
        f = replica(tmp_path / "f", checkpoint_every_points=1)
        f.start()
        events = []
        real_save = f.checkpoints.save

        def slow_save(*args):
            events.append("ckpt-start")
            time.sleep(0.3)
            events.append("ckpt-end")
            return real_save(*args)

        monkeypatch.setattr(f.checkpoints, "save", slow_save)
        import quartz_cluster.node.shard.snapshot as snapshot_mod

        real_install = snapshot_mod.install

        def install(*args):
            events.append("install")
            return real_install(*args)

        monkeypatch.setattr(snapshot_mod, "install", install)
        write = asyncio.ensure_future(f.write(batch(["w"])))
        while "ckpt-start" not in events:
            await asyncio.sleep(0.01)
        staging = f.begin_snapshot(1, 1, 0, src.next_label)
        for _, _, _, rows in src.snapshot_chunks():
            if rows:
                staging.write([k for k, _ in rows], [v for _, v in rows])
        await f.install_snapshot(staging)
        await write
        assert events[:3] == ["ckpt-start", "ckpt-end", "install"]
        await src.close(checkpoint=False)
        await f.close(checkpoint=False)

    asyncio.run(go())


def test_an_aborted_snapshot_stream_releases_everything(tmp_path):
    async def go():
        f = replica(tmp_path / "f")
        f.start()
        for _ in range(5):
            staging = f.begin_snapshot(1, 1, 0, 1)
            staging.write([b"v/x"], [b"\0" * 8 + b"\0" * 4 * DIM])
            staging.abort()
            assert not os.path.exists(staging.path)
        older = f.begin_snapshot(1, 1, 0, 1)
        newer = f.begin_snapshot(1, 1, 0, 1)  # supersedes the older stream
        with pytest.raises(FailedPrecondition, match="superseded"):
            older.write([b"v/x"], [b"\0" * 8 + b"\0" * 4 * DIM])
        newer.write([b"v/x"], [b"\0" * 8 + b"\0" * 4 * DIM])
        await f.install_snapshot(newer)
        assert set(f.label_of) == {"x"} and f.applied_lsn == 1
        assert [d for d in os.listdir(tmp_path / "f") if d.startswith("db.incoming")] == []
        with pytest.raises(FailedPrecondition, match="not a row"):
            f.begin_snapshot(1, 1, 0, 1).write([b"m/epoch"], [b"\0" * 8])
        await f.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ recovery


def test_a_log_tail_left_by_a_crash_is_applied_on_open(tmp_path):
    """A primary that crashed between append and apply: the entries are in the log only."""

    async def go():
        r = replica(tmp_path)
        r.start()
        await r.write(batch(["a"]))
        pending = Pending(batch(["b", "c"], 1), asyncio.get_running_loop().create_future())
        r.pipeline.append([pending], 0)  # durable in the log, never applied
        assert r.log_end == 2 and r.applied_lsn == 1
        await r.close(checkpoint=False)

    asyncio.run(go())
    r = replica(tmp_path)
    assert r.applied_lsn == r.log_end == 2 and set(r.label_of) == {"a", "b", "c"}
    assert [pid for pid, _, _ in r.get(["b", "c"], False, False)] == ["b", "c"]
    r.store.close()
    r2 = ShardReplica(str(tmp_path), SPEC, ShardOptions())
    assert r2.load() == "rebuild"  # the tail was committed: nothing left to apply
    r2.store.close()


# ------------------------------------------------------------------ role and epoch decisions


def role(epoch=5, lease=True) -> ReplicaRole:
    r = ReplicaRole("c/0", epoch, lambda e: None)
    r.lease_ok = lambda: lease
    return r


def test_writes_for_any_other_epoch_are_refused():
    r = role(epoch=5)
    r.become_primary(5, FakeReplicator(size=1))
    assert r.write_refusal(5, 1) is None and r.write_refusal(0, 1) is None
    assert isinstance(r.write_refusal(4, 1), FailedPrecondition)
    assert isinstance(r.write_refusal(6, 1), FailedPrecondition)  # newer than this replica knows


def test_a_follower_refuses_writes_and_strong_reads_naming_the_primary():
    r = role()
    r.become_follower(6, "n2")
    refusal = r.write_refusal(6, 1)
    assert isinstance(refusal, FailedPrecondition) and "n2" in str(refusal)
    with pytest.raises(Unavailable, match="follower"):
        r.check_strong_read(6)


def test_strong_reads_need_a_live_lease_and_the_current_epoch():
    r = role(lease=True)
    r.become_primary(5, FakeReplicator(size=1))
    r.check_strong_read(5)
    r.check_strong_read(0)
    with pytest.raises(Unavailable, match="epoch 4"):
        r.check_strong_read(4)
    lapsed = role(lease=False)
    lapsed.become_primary(5, FakeReplicator(size=1))
    with pytest.raises(Unavailable, match="lease"):
        lapsed.check_strong_read(5)
    assert "lease" in str(lapsed.write_refusal(5, 1))
    role(lease=False).check_strong_read(5)  # standalone: no cluster, no lease


def test_epochs_are_made_durable_before_they_are_accepted():
    persisted = []
    r = ReplicaRole("c/0", 3, persisted.append)
    r.accept_epoch(2)
    r.accept_epoch(3)
    assert persisted == [] and r.epoch == 3
    r.become_follower(4, "n1")
    assert persisted == [4] and r.epoch == 4
    assert r.fenced(3) is not None and r.fenced(4) is None


def test_a_newer_primary_demotes_an_old_one_and_stops_its_replicator():
    r = role(epoch=5)
    rep = FakeReplicator(size=2)
    r.become_primary(5, rep)
    r.heard_from_primary(5)
    assert r.role == "primary" and not rep.stopped
    r.heard_from_primary(6)
    assert r.role == "follower" and rep.stopped and r.replicator is None
    s = role()
    s.following("n3")
    assert s.role == "follower" and s.primary_hint == "n3"


# ------------------------------------------------------------------ review findings


def test_a_cancelled_internal_call_fails_its_job_not_the_writer(tmp_path):
    """grpc.aio raises CancelledError in a caller whose channel another caller closed: that job
    fails, the writer goes on."""

    async def go():
        r = replica(tmp_path)
        r.start()

        async def interrupted():
            raise asyncio.CancelledError()

        with pytest.raises(Unavailable, match="cancelled"):
            await asyncio.wait_for(r.exclusive("probe", interrupted), HANG_GUARD_S)
        assert not r.broken
        assert await r.write(batch(["a"])) == 1

        class CancelledReplicator(FakeReplicator):
            async def replicate(self, entries, prev_lsn, prev_epoch):
                raise asyncio.CancelledError()

        r.become_primary(1, CancelledReplicator(size=1))
        with pytest.raises(Unavailable):
            await asyncio.wait_for(r.write(batch(["b"]), epoch=1), HANG_GUARD_S)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_an_unexpected_replication_failure_never_reuses_an_lsn(tmp_path):
    """Only NotCommitted (the epoch is over) truncates; anything else takes the shard out of
    service, so the same LSN cannot be written twice in one epoch with other contents."""

    async def go():
        r = replica(tmp_path)
        r.start()

        class Buggy(FakeReplicator):
            async def replicate(self, entries, prev_lsn, prev_epoch):
                raise ValueError("Value out of range")

        r.become_primary(1, Buggy(size=1))
        with pytest.raises(Unavailable, match="not committed"):
            await r.write(batch(["a"]), epoch=1)
        assert r.log_end == 1 and r.applied_lsn == 0  # kept in the log, not truncated
        assert r.broken and "replication failed" in r.broken
        with pytest.raises(Unavailable, match="out of service"):
            await r.write(batch(["b"]), epoch=1)

    asyncio.run(go())


def test_big_batches_are_not_grouped_past_the_byte_bound(tmp_path, monkeypatch):
    from quartz_cluster import limits

    async def go():
        r = replica(tmp_path)
        monkeypatch.setattr(limits, "GROUP_COMMIT_BYTES_MAX", 600)
        r.start()
        r.writer._group_bytes_max = 600
        groups = []
        real = r.pipeline.append

        def append(group, epoch):
            groups.append(len(group))
            return real(group, epoch)

        r.pipeline.append = append
        # 10 points x 8 dims x 4 bytes = 320 bytes of vectors each: two do not fit in 600
        lsns = await asyncio.gather(*(r.write(batch([f"g{j}-{i}" for i in range(10)], j)) for j in range(4)))
        assert sorted(lsns) == [1, 2, 3, 4] and max(groups) == 1
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_read_log_refuses_when_the_entry_before_was_trimmed(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, log_retention_entries=3)
        r.start()
        for i in range(10):
            await r.write(batch([f"t{i}"], i))
        await settled(r)
        held = [int.from_bytes(k[2:], "big") for k, _ in r.store.scan(b"g/")]
        first = min(held)
        assert r.read_log(first, 5) is None  # its predecessor is gone: its epoch is unknown
        assert r.read_log(first + 1, 5) is not None
        assert r.read_log(first + 1, 5, upto=first + 2) is not None
        assert len(r.read_log(first + 1, 5, upto=first + 2)) == 2
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_swap_while_a_reader_holds_the_old_database(tmp_path):
    """A reader's snapshot keeps the old RocksDB instance alive past the swap: the new database
    lives in a directory of its own, so it opens, and the old instance can never write into it."""
    primary_entries = primary_log(tmp_path / "p", 2)

    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(replicate_request(primary_entries, 0, 0))
        f = replica(tmp_path / "f")
        f.start()
        await f.write(batch(["old"]))
        held = f.store.db.snapshot()  # e.g. a demoted primary still streaming a snapshot
        staging = f.begin_snapshot(1, 2, 0, src.next_label)
        for _, _, _, rows in src.snapshot_chunks():
            if rows:
                staging.write([k for k, _ in rows], [v for _, v in rows])
        await f.install_snapshot(staging)
        assert len(f.label_of) == 8 and "old" not in f.label_of
        f.roles.role = "standalone"
        assert await f.write(batch(["new"])) == 3
        del held
        await src.close(checkpoint=False)
        await f.close(checkpoint=False)

    asyncio.run(go())
    f = replica(tmp_path / "f")
    assert len(f.label_of) == 9 and "new" in f.label_of and f.applied_lsn == 3
    f.store.close()


def test_closing_a_primary_stops_its_replicator(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        rep = FakeReplicator(size=1)
        r.become_primary(1, rep)
        await r.close(checkpoint=False)
        assert rep.stopped

    asyncio.run(go())


def test_the_item_being_grouped_is_answered_if_grouping_fails(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()

        class Unsizable:
            def __init__(self) -> None:
                self.future = asyncio.get_running_loop().create_future()

            def size_bytes(self) -> int:
                raise RuntimeError("cannot size")

        item = Unsizable()
        r.writer.enqueue_write(item)
        with pytest.raises(Unavailable, match="out of service"):
            await asyncio.wait_for(item.future, HANG_GUARD_S)
        assert r.broken

    asyncio.run(go())
