"""Tests written against mutants of the shard replica (node/shard/*) and the replicator that the
rest of the unit suite let survive (scripts/mutation.sh, docs/mutation.md): exact refusals (a
message names its field first, and the router and operators read them), positions and bounds
of the log, checkpoints and snapshots. Real RocksDB in a temp dir; no network."""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import threading
import time

import numpy as np
import orjson
import pytest
import rocksdict

from quartz_cluster import filters, limits, validation
from quartz_cluster.errors import FailedPrecondition, ResourceExhausted, Unavailable
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec
from quartz_cluster.node.shard import pipeline as pipeline_mod
from quartz_cluster.node.shard import snapshot as snapshot_mod
from quartz_cluster.node.shard import state as state_mod
from quartz_cluster.node.shard import storage as storage_mod
from quartz_cluster.node.shard import writer as writer_mod
from quartz_cluster.node.shard.pipeline import Pending
from quartz_cluster.node.shard.role import ReplicaRole
from quartz_cluster.node.shard.storage import (
    K_APPLIED,
    K_EPOCH,
    K_LAST_EPOCH,
    K_LOG_END,
    K_NEXT_LABEL,
    P_LOG,
    log_key,
)
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication.primary import NotCommitted

# ------------------------------------------------------------------ role.py


class OneInSync:
    def in_sync_size(self) -> int:
        return 1

    def stop(self) -> None:
        pass


def test_every_refusal_of_the_role_is_exact():
    r = ReplicaRole("c/0", 5, lambda e: None)
    assert (r.name, r.role, r.epoch, r.primary_hint, r.replicator) == ("c/0", "standalone", 5, "", None)
    r.become_primary(5, OneInSync())
    assert r.primary_hint == ""
    r.lease_ok = lambda: False
    refusal = r.write_refusal(5, 1)
    assert type(refusal) is Unavailable
    assert str(refusal) == "epoch: the primary of shard c/0 cannot renew its lease"
    with pytest.raises(Unavailable) as info:
        r.check_strong_read(5)
    assert (
        str(info.value)
        == "consistency: the primary of shard c/0 cannot renew its lease; strong reads wait for it"
    )
    r.lease_ok = lambda: True
    refusal = r.write_refusal(4, 1)
    assert type(refusal) is FailedPrecondition
    assert str(refusal) == "epoch: epoch 4 is not the current epoch 5 of shard c/0"
    refusal = r.write_refusal(5, 2)
    assert type(refusal) is Unavailable
    assert str(refusal) == "write_consistency: shard c/0 has 1 in-sync replicas; the write needs 2"
    with pytest.raises(Unavailable) as info:
        r.check_strong_read(4)
    assert str(info.value) == "consistency: strong read for epoch 4, but shard c/0 is in epoch 5"
    fenced = r.fenced(4)
    assert type(fenced) is FailedPrecondition
    assert str(fenced) == "epoch: epoch 4 is fenced: shard c/0 accepted epoch 5"
    r.heard_from_primary(6)  # demoted by a newer primary it does not know the name of yet
    refusal = r.write_refusal(0, 1)
    assert type(refusal) is FailedPrecondition
    assert str(refusal) == "epoch: this replica of shard c/0 is a follower in epoch 5; the primary is unknown"
    with pytest.raises(Unavailable) as info:
        r.check_strong_read(0)
    assert str(info.value) == (
        "consistency: this replica of shard c/0 is a follower in epoch 5; "
        "strong reads are served by the primary"
    )
    r.following("n7")
    assert str(r.write_refusal(0, 1)).endswith("; the primary is n7")
    r.become_primary(6, OneInSync())
    assert r.primary_hint == "" and r.role == "primary"


# ------------------------------------------------------------------ helpers

DIM = 4
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=32, ef=32)


def vec(i: int) -> list[float]:
    v = [0.0] * DIM
    v[i % DIM] = 1.0 + i // DIM
    return v


def batch(ids, deletes=(), start=0, payloads=None):
    vecs = np.asarray([vec(start + i) for i in range(len(ids))], dtype="<f4").reshape(-1, DIM)
    blobs = payloads if payloads is not None else [orjson.dumps({"i": start + i}) for i in range(len(ids))]
    return validation.write_batch(ids, vecs.tobytes(), len(ids), DIM, blobs, list(deletes), DIM)


def replica(path, **opts) -> ShardReplica:
    r = ShardReplica(str(path), SPEC, ShardOptions(threads=1, **opts))
    r.how = r.load()
    return r


async def settled(r: ShardReplica) -> None:
    while not r.writer.idle:
        await asyncio.sleep(0.002)


def request(entries, prev_lsn, prev_epoch, epoch=1, primary="p") -> node_pb2.ReplicateRequest:
    return node_pb2.ReplicateRequest(
        ref=node_pb2.ShardRef(collection_id="c", shard=0),
        epoch=epoch,
        primary=primary,
        prev_lsn=prev_lsn,
        prev_epoch=prev_epoch,
        entries=entries,
    )


def entry(lsn: int, epoch: int, ids=(), labels=(), deletes=(), delete_labels=(), start=0) -> bytes:
    vecs = np.asarray([vec(start + i) for i in range(len(ids))], dtype="<f4").reshape(-1, DIM)
    return node_pb2.LogEntry(
        lsn=lsn,
        epoch=epoch,
        ids=list(ids),
        labels=np.asarray(labels, dtype="<u8").tobytes(),
        vectors=node_pb2.Vectors(data=vecs.tobytes(), count=len(ids), dim=DIM),
        payloads=[orjson.dumps({"i": start + i}) for i in range(len(ids))],
        delete_ids=list(deletes),
        delete_labels=np.asarray(delete_labels, dtype="<u8").tobytes(),
    ).SerializeToString()


def log_lsns(r: ShardReplica) -> list[int]:
    return [int.from_bytes(k[2:], "big") for k, _ in r.store.scan(P_LOG)]


# ------------------------------------------------------------------ follower.py


def test_a_follower_takes_entries_and_answers_exactly(tmp_path):
    async def go():
        f = replica(tmp_path)
        f.incarnation = "inc-f"
        f.start()
        writes = []
        real_write = f.store.write

        def spy(wb, sync):
            writes.append(sync)
            return real_write(wb, sync)

        f.store.write = spy
        entries = [
            entry(1, 2, ["a", "b", "c"], [0, 1, 2]),
            entry(2, 3, ["d"], [3], deletes=["a"], delete_labels=[0], start=3),
        ]
        resp = await f.append_replicated(request(entries, 0, 0, epoch=3, primary="n1"))
        assert (resp.status, resp.log_end, resp.last_epoch, resp.incarnation) == (
            node_pb2.REPLICATE_OK,
            2,
            3,
            "inc-f",
        )
        assert f.points_since_checkpoint == 5  # 4 upserts and a delete
        assert f.role == "follower" and f.primary_hint == "n1" and f.epoch == 3
        assert set(f.label_of) == {"b", "c", "d"} and f.free == {0: None}
        assert f.store.meta(K_EPOCH) == 3 and f.store.meta(K_LOG_END) == 2
        assert writes == [True]  # durable before it answers: one synced batch
        assert f.read_log(1, 10) == entries and log_lsns(f) == [1, 2]  # the log, as received
        # the same entries again (a retry): nothing applied twice
        again = await f.append_replicated(request(entries, 0, 0, epoch=3, primary="n1"))
        assert (again.status, again.log_end) == (node_pb2.REPLICATE_OK, 2)
        assert f.points_since_checkpoint == 5
        # a probe of a newer epoch: accepted durably, nothing appended
        probe = await f.append_replicated(request([], 2, 3, epoch=4, primary="n2"))
        assert probe.status == node_pb2.REPLICATE_OK and f.epoch == 4 and f.primary_hint == "n2"
        assert f.store.meta(K_EPOCH) == 4
        # entries of the same epoch as accepted: appended, the epoch stays
        same = await f.append_replicated(request([entry(3, 4, ["e"], [0], start=5)], 2, 3, epoch=4))
        assert (same.log_end, same.last_epoch) == (3, 4) and f.store.meta(K_EPOCH) == 4
        await f.close(checkpoint=False)

    asyncio.run(go())
    f = replica(tmp_path)
    assert f.store.meta(K_EPOCH) == 4 and f.applied_lsn == 3 and set(f.label_of) == {"b", "c", "d", "e"}
    f.store.close()


def test_a_follower_says_behind_diverged_or_fenced(tmp_path):
    async def go():
        f = replica(tmp_path)
        f.incarnation = "inc-f"
        f.start()
        await f.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0, epoch=1))
        behind = await f.append_replicated(request([entry(5, 1, ["x"], [1])], 4, 1, epoch=1))
        assert (behind.status, behind.log_end, behind.last_epoch) == (node_pb2.REPLICATE_BEHIND, 1, 1)
        diverged = await f.append_replicated(request([entry(2, 2, ["x"], [1])], 1, 2, epoch=2))
        assert (diverged.status, diverged.log_end) == (node_pb2.REPLICATE_DIVERGED, 1)
        assert diverged.incarnation == "inc-f" and f.applied_lsn == 1
        await f.append_replicated(request([], 1, 1, epoch=2))  # epoch 2 accepted
        with pytest.raises(FailedPrecondition) as info:
            await f.append_replicated(request([], 1, 1, epoch=1))
        assert str(info.value) == "epoch: epoch 1 is fenced: shard c/0 accepted epoch 2"
        with pytest.raises(FailedPrecondition) as info:
            await f.append_replicated(request([entry(2, 2, ["x"], [1]), entry(4, 2)], 1, 1, epoch=2))
        assert str(info.value) == "entries: entry 1 has LSN 4, expected 3"
        await f.close(checkpoint=False)

    asyncio.run(go())


def test_a_primary_hearing_from_a_newer_primary_steps_down(tmp_path):
    async def go():
        f = replica(tmp_path)
        f.start()

        class Rep:
            stopped = False

            def in_sync_size(self):
                return 1

            def stop(self):
                self.stopped = True

        rep = Rep()
        f.become_primary(1, rep)
        await f.append_replicated(request([], 0, 0, epoch=1, primary="q"))
        assert f.role == "primary" and not rep.stopped  # its own epoch: not a newer primary
        await f.append_replicated(request([], 0, 0, epoch=2, primary="q"))
        assert f.role == "follower" and rep.stopped and f.primary_hint == "q"
        await f.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ checkpoint.py


def test_recovery_says_how_it_got_there(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=2)
        assert r.how == "empty"
        r.start()
        await r.write(batch(["a", "b"]))  # 2 points: a checkpoint at LSN 1
        await settled(r)
        await r.write(batch(["c"], start=2))
        await r.write(batch(["d"], start=3))  # 2 more: a checkpoint at LSN 3
        await settled(r)
        await r.write(batch(["e"], start=4))
        await settled(r)
        assert r.checkpoint_lsn == 3
        await r.close(checkpoint=False)

    asyncio.run(go())
    ckpt = os.path.join(str(tmp_path), "ckpt")
    files = sorted(os.listdir(ckpt))
    assert f"ckpt-{3:020d}.hnsw" in files and f"ckpt-{3:020d}.state" in files
    assert all(name.startswith(f"ckpt-{3:020d}.") for name in files)  # older ones removed
    r = replica(tmp_path)
    assert r.how == "checkpoint@3+replay1"
    assert (r.applied_lsn, r.log_end, r.last_epoch, r.checkpoint_lsn) == (4, 4, 0, 3)
    assert set(r.label_of) == {"a", "b", "c", "d", "e"} and r.next_label == 5
    r.store.close()
    open(os.path.join(ckpt, "ckpt-x.state.tmp"), "wb").close()  # a save that crashed
    os.remove(os.path.join(ckpt, f"ckpt-{3:020d}.hnsw"))  # an incomplete checkpoint is not used
    r = replica(tmp_path)
    assert r.how == "rebuild" and set(r.label_of) == {"a", "b", "c", "d", "e"}
    assert not os.path.exists(os.path.join(ckpt, "ckpt-x.state.tmp"))
    r.store.close()


def test_a_checkpoint_keeps_exactly_the_retained_log(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, log_retention_entries=3)
        r.start()
        for i in range(8):
            await r.write(batch([f"p{i}"], start=i))
            await settled(r)
        assert r.checkpoint_lsn == 8 and r.last_checkpoint_s > 0
        assert log_lsns(r) == [5, 6, 7, 8]
        assert len(r.read_log(6, 10)) == 3 and r.read_log(4, 10) is None
        saved = r.checkpoints.save(r.state, r.store, 3)
        assert saved == 0.0  # nothing new to save
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_checkpoint_beyond_what_was_applied_is_not_loaded(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1)
        r.start()
        await r.write(batch(["a"]))
        await settled(r)
        await r.write(batch(["b"], start=1))
        await settled(r)
        assert r.checkpoint_lsn == 2
        await r.close(checkpoint=False)

    asyncio.run(go())
    r = replica(tmp_path)
    assert r.checkpoints.newest(2) == 2 and r.checkpoints.newest(1) is None
    assert r.checkpoints.newest(3) == 2
    r.store.close()


def test_an_unreadable_checkpoint_is_rebuilt_from_rows(tmp_path, caplog):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1)
        r.start()
        await r.write(batch(["a", "b"]))
        await settled(r)
        await r.close(checkpoint=False)

    asyncio.run(go())
    state = os.path.join(str(tmp_path), "ckpt", f"ckpt-{1:020d}.state")
    with open(state, "wb") as f:
        f.write(b"not a pickle")
    with caplog.at_level(logging.ERROR, logger="quartz.shard"):
        r = replica(tmp_path)
    assert r.how == "rebuild" and set(r.label_of) == {"a", "b"}
    unreadable = [x for x in caplog.records if x.getMessage() == "checkpoint unreadable; rebuilding"]
    assert len(unreadable) == 1 and unreadable[0].lsn == 1 and unreadable[0].exc_info
    hits = r.search(np.asarray([vec(1)], "<f4"), 1, 0, None, False)
    assert hits[0].ids == ["b"]
    r.store.close()


def test_replay_that_cannot_reach_applied_rebuilds(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, log_retention_entries=0)
        r.start()
        await r.write(batch(["a"]))
        await settled(r)
        r.options.checkpoint_every_points = 100
        for i in range(3):
            await r.write(batch([f"b{i}"], start=1 + i))
        await settled(r)
        assert r.checkpoint_lsn == 1 and log_lsns(r) == [1, 2, 3, 4]
        r.store.db.delete(log_key(3))  # a hole between the checkpoint and applied_lsn
        await r.close(checkpoint=False)

    asyncio.run(go())
    r = replica(tmp_path)
    assert r.how == "rebuild" and set(r.label_of) == {"a", "b0", "b1", "b2"} and r.applied_lsn == 4
    r.store.close()


def test_recovery_applies_a_tail_exactly_once_and_keeps_its_epoch(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1)
        r.start()
        r.become_primary(2, None)
        r.roles.role = "standalone"  # epoch 2, no replicator
        await r.write(batch(["a"]))
        await settled(r)
        pending = [Pending(batch(["b", "c"], start=1), None), Pending(batch(["d"], ["a"], start=3), None)]
        r.pipeline.append(pending, 2)  # durable in the log, never applied: a crash here
        assert r.log_end == 3 and r.applied_lsn == 1
        await r.close(checkpoint=False)

    asyncio.run(go())
    r = replica(tmp_path)
    assert r.how == "checkpoint@1+replay0+tail2"
    assert (r.applied_lsn, r.log_end, r.last_epoch) == (3, 3, 2)
    assert set(r.label_of) == {"b", "c", "d"} and r.free == {0: None}
    assert r.label_of == {"b": 1, "c": 2, "d": 3}  # a label freed in a group is reused by a later one
    assert r.store.meta(K_APPLIED) == 3
    r.store.close()
    r = replica(tmp_path)
    assert r.how == "checkpoint@1+replay2"
    r.store.close()


# ------------------------------------------------------------------ snapshot.py


async def filled(path, n=5, deletes=(), **opts) -> ShardReplica:
    r = replica(path, **opts)
    r.start()
    await r.write(batch([f"s{i}" for i in range(n)]))
    if deletes:
        await r.write(batch([], deletes))
    await settled(r)
    return r


def test_snapshot_chunks_carry_the_position_then_every_row_in_bounded_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(snapshot_mod, "SNAPSHOT_CHUNK_KEYS", 3)

    async def go():
        r = await filled(tmp_path, 4, deletes=["s1"])
        r.become_primary(7, None)  # the epoch of later entries; the snapshot is of what was applied
        chunks = list(r.snapshot_chunks())
        assert chunks[0] == (2, 0, 4, [])
        assert {c[:3] for c in chunks} == {(2, 0, 4)}
        assert [len(c[3]) for c in chunks[1:]] == [3, 3, 1]
        keys = [k for c in chunks for k, _ in c[3]]
        assert keys == [
            b"v/s0",
            b"v/s2",
            b"v/s3",
            b"p/s0",
            b"p/s2",
            b"p/s3",
            b"f/" + (1).to_bytes(8, "big"),
        ]
        values = dict(kv for c in chunks for kv in c[3])
        assert values[b"p/s2"] == orjson.dumps({"i": 2}) and values[b"v/s2"][:8] == (2).to_bytes(8, "little")
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_snapshot_of_an_empty_shard_is_its_position_alone(tmp_path):
    r = replica(tmp_path)
    assert list(r.snapshot_chunks()) == [(0, 0, 0, [])]
    r.store.close()


def stage(f: ShardReplica, src: ShardReplica, epoch: int = 1):
    chunks = list(src.snapshot_chunks())
    lsn, lsn_epoch, next_label, _ = chunks[0]
    staging = f.begin_snapshot(epoch, lsn, lsn_epoch, next_label)
    for _, _, _, rows in chunks[1:]:
        staging.write([k for k, _ in rows], [v for _, v in rows])
    return staging


def test_installing_a_snapshot_replaces_the_state_and_positions(tmp_path):
    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(
            request([entry(1, 2, ["a", "b"], [0, 1]), entry(2, 3, ["c"], [2], start=2)], 0, 0, epoch=3)
        )
        f = await filled(tmp_path / "f", 3, checkpoint_every_points=1)
        assert f.checkpoint_lsn == 1
        history = f.store.history()
        staging = stage(f, src, epoch=3)
        f._checkpoint_retry_at = time.monotonic() + 3600  # no checkpoint right after the install
        assert staging.rows == 6 and staging.state == "streaming"
        resp = await f.install_snapshot(staging)
        assert (resp.status, resp.log_end, resp.last_epoch) == (node_pb2.REPLICATE_OK, 2, 3)
        assert staging.state == "installed" and not os.path.exists(staging.path)
        assert (f.applied_lsn, f.log_end, f.last_epoch, f.epoch) == (2, 2, 3, 3)
        assert (f.store.log_start, f.store.log_start_epoch) == (2, 3)
        assert f.store.meta(K_EPOCH) == 3 and f.store.history() not in (b"", history)
        assert f.checkpoint_lsn == 0 and os.listdir(os.path.join(str(tmp_path / "f"), "ckpt")) == []
        assert f.label_of == {"a": 0, "b": 1, "c": 2} and f.next_label == 3
        assert f.entry_epoch(2) == 3 and f.read_log(2, 5) is None and f.read_log(3, 5) == []
        assert f.points_since_checkpoint == f.options.checkpoint_every_points  # checkpoint it soon
        assert next(iter(f.snapshot_chunks()))[:3] == (2, 3, 3)  # its own snapshot starts there
        # the primary's next entry attaches to the snapshot's position
        nxt = await f.append_replicated(request([entry(3, 3, ["d"], [3], start=3)], 2, 3, epoch=3))
        assert (nxt.status, nxt.log_end) == (node_pb2.REPLICATE_OK, 3)
        await f.close(checkpoint=False)
        await src.close(checkpoint=False)

    asyncio.run(go())
    f = replica(tmp_path / "f")
    assert (f.applied_lsn, f.store.log_start, f.store.log_start_epoch) == (3, 2, 3)
    assert set(f.label_of) == {"a", "b", "c", "d"}
    f.store.close()


def test_an_empty_snapshot_installs_an_empty_state(tmp_path):
    async def go():
        src = replica(tmp_path / "src")
        f = await filled(tmp_path / "f", 2)
        f.options.checkpoint_every_points = 7
        await f.install_snapshot(stage(f, src, epoch=0))
        assert f.label_of == {} and f.applied_lsn == 0 and f.points_since_checkpoint == 0
        await f.close(checkpoint=False)
        src.store.close()

    asyncio.run(go())


def test_snapshot_installs_that_cannot_go_ahead(tmp_path):
    async def go():
        f = replica(tmp_path)
        f.start()
        f.become_follower(3, "p")
        with pytest.raises(FailedPrecondition) as info:
            f.begin_snapshot(2, 1, 1, 1)
        assert str(info.value) == "epoch: epoch 2 is fenced: shard c/0 accepted epoch 3"
        staging = f.begin_snapshot(3, 1, 3, 1)
        staging.abort()
        with pytest.raises(Unavailable) as info:
            await f.install_snapshot(staging)
        assert str(info.value) == "the snapshot stream was aborted before it could be installed"
        staging = f.begin_snapshot(3, 1, 3, 1)
        f.become_follower(4, "q")  # a newer epoch while it streamed
        with pytest.raises(FailedPrecondition) as info:
            await f.install_snapshot(staging)
        assert "epoch 3 is fenced" in str(info.value)
        assert staging.state == "aborted" and not os.path.exists(staging.path)
        assert f._staging is None and f.epoch == 4
        await f.close(checkpoint=False)

    asyncio.run(go())


def test_a_staging_database_refuses_what_is_not_a_row(tmp_path):
    staging = snapshot_mod.Staging(str(tmp_path), 1, 1, 1, 1)
    with pytest.raises(FailedPrecondition) as info:
        staging.write([b"v/a"], [])
    assert str(info.value) == "chunks: a snapshot chunk has keys and values of different lengths"
    with pytest.raises(FailedPrecondition) as info:
        staging.write([b"v/a", b"g/" + bytes(8)], [b"x", b"y"])
    assert str(info.value) == "chunks: a snapshot chunk carries a key that is not a row"
    staging.write([b"v/a", b"p/a", b"f/" + bytes(8)], [b"x", b"{}", b""])
    assert staging.rows == 3
    assert staging.claim() is True and staging.state == "installing"
    assert staging.claim() is False
    staging.abort()  # the writer took it: not aborted under it
    assert staging.state == "installing" and os.path.isdir(staging.path)
    with pytest.raises(FailedPrecondition) as info:
        staging.write([b"v/b"], [b"x"])
    assert str(info.value) == "chunks: this snapshot install was superseded or aborted"
    staging.failed()
    assert staging.state == "aborted" and not os.path.exists(staging.path)
    staging.abort()  # idempotent
    other = snapshot_mod.Staging(str(tmp_path), 1, 1, 1, 1)
    other.abort()
    assert other.claim() is False and other.rows == 0
    other.failed()  # cleaning up twice is harmless
    assert other.state == "aborted"


def open_files_under(path: str) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(path):
            out.append(target)
    return out


def test_an_aborted_staging_database_holds_no_file_open(tmp_path):
    staging = snapshot_mod.Staging(str(tmp_path), 1, 1, 1, 1)
    staging.write([b"v/a"], [b"x"])
    assert open_files_under(staging.path)  # RocksDB holds its LOCK, log and manifest
    staging.abort()
    assert open_files_under(staging.path) == [] and not os.path.exists(staging.path)


# ------------------------------------------------------------------ state.py


def test_state_grows_past_its_initial_capacity_and_counts_exactly(tmp_path):
    n = limits.INITIAL_CAPACITY + 5

    async def go():
        r = replica(tmp_path)
        r.start()
        ids = [f"g{i}" for i in range(n)]
        vecs = np.random.default_rng(1).normal(size=(n, DIM)).astype("<f4")
        await r.write(validation.write_batch(ids, vecs.tobytes(), n, DIM, [b"{}"] * n, [], DIM))
        await r.write(batch([], ["g0", "g3"]))
        stats = r.state.stats()
        assert stats["count"] == n - 2 and stats["applied_lsn"] == 2 and stats["free_labels"] == 2
        assert stats["capacity"] == 2 * limits.INITIAL_CAPACITY and stats["index_bytes"] > 0
        assert len(r.state.ids_by_label) == 2 * limits.INITIAL_CAPACITY
        assert r.state.ids_by_label[n - 1] == f"g{n - 1}" and r.state.ids_by_label[5] == "g5"
        assert r.state.ids_by_label[0] is None and r.state.ids_by_label[3] is None
        hits = r.search(vecs[n - 1 : n], 1, 64, None, False)
        assert hits[0].ids == [f"g{n - 1}"]
        await r.write(batch(["new"]))  # reuses the first freed label
        assert r.label_of["new"] == 0 and r.free == {3: None} and r.next_label == n
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_rebuilding_in_chunks_gives_the_same_state(tmp_path, monkeypatch):
    n = limits.INITIAL_CAPACITY + 3

    async def go():
        r = replica(tmp_path)
        r.start()
        ids = [f"g{i}" for i in range(n)]
        vecs = np.random.default_rng(2).normal(size=(n, DIM)).astype("<f4")
        pays = [orjson.dumps({"k": i % 3}) for i in range(n)]
        await r.write(validation.write_batch(ids, vecs.tobytes(), n, DIM, pays, [], DIM))
        await r.write(batch([], ["g1"]))
        await r.close(checkpoint=False)

    asyncio.run(go())
    flt = filters.parse({"must": [{"key": "k", "match": 2}]})

    def state_of(r):
        q = np.random.default_rng(3).normal(size=(3, DIM)).astype(np.float32)
        return (
            dict(r.label_of),
            r.state.ids_by_label.tolist(),
            sorted(r.free),
            r.next_label,
            r.hnsw.capacity,
            [h.ids for h in r.search(q, 5, 0, flt, True)],
        )

    whole = replica(tmp_path)
    assert whole.how == "rebuild" and whole.hnsw.capacity == 2 * limits.INITIAL_CAPACITY
    expected = state_of(whole)
    whole.store.close()
    monkeypatch.setattr(state_mod, "REBUILD_CHUNK_ROWS", 100)
    chunked = replica(tmp_path)
    assert state_of(chunked) == expected
    assert len(chunked.label_of) == n - 1 and chunked.free == {1: None}
    chunked.store.close()


def test_entries_decode_their_vectors_and_payloads():
    raw = node_pb2.LogEntry.FromString(entry(1, 1, ["a", "b"], [0, 1]))
    assert state_mod.entry_vectors(raw, DIM).tolist() == [vec(0), vec(1)]
    raw.payloads[1] = b""
    assert state_mod.entry_payloads(raw) == [{"i": 0}, {}]


# ------------------------------------------------------------------ search.py


def test_search_runs_at_the_ef_asked_never_below_k(tmp_path):
    async def go():
        r = await filled(tmp_path, 8)
        q = np.asarray([vec(0)], "<f4")
        for ef, k, tag in ((0, 3, SPEC.ef), (0, 50, 50), (100, 3, 100), (10, 20, 20)):
            r.search(q, k, ef, None, False)
            assert r.state.lock._tag == tag
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_search_hits_payloads_and_plans(tmp_path):
    async def go():
        r = await filled(tmp_path, 6, deletes=["s5"])
        q = np.asarray([vec(2), vec(4)], "<f4")
        plain = r.search(q, 2, 0, None, False)
        assert [h.ids[0] for h in plain] == ["s2", "s4"] and [len(h.ids) for h in plain] == [2, 2]
        assert [h.plan for h in plain] == ["hnsw", "hnsw"] and plain[0].payloads == []
        assert plain[0].scores[0] == pytest.approx(0.0)
        full = r.search(q, 10, 0, None, True)
        assert [len(h.ids) for h in full] == [5, 5]  # k above the live count: every live point
        assert full[0].payloads[0] == orjson.dumps({"i": 2})
        assert "s5" not in full[0].ids
        flt = filters.parse({"must": [{"key": "i", "range": {"gte": 3}}]})
        filtered = r.search(q, 10, 0, flt, False)
        assert [sorted(h.ids) for h in filtered] == [["s3", "s4"]] * 2
        assert filtered[0].plan == "exact" and filtered[0].payloads == []
        none = r.search(q, 3, 0, filters.parse({"must": [{"key": "i", "match": 99}]}), True)
        assert [(h.ids, h.plan) for h in none] == [([], "empty")] * 2
        r.store.db.delete(b"p/s2")  # the row went away after the graph search saw it
        gone = r.search(q[:1], 3, 0, None, True)
        assert "s2" not in gone[0].ids and len(gone[0].ids) == 2
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_an_empty_shard_answers_every_query_with_nothing(tmp_path):
    r = replica(tmp_path)
    hits = r.search(np.zeros((3, DIM), "<f4"), 5, 0, None, True)
    assert [(h.ids, h.scores, h.payloads, h.plan) for h in hits] == [([], [], [], "empty")] * 3
    r.store.close()


def test_a_filter_admitting_many_points_walks_the_graph_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "EXACT_SEARCH_ALWAYS_CANDIDATES_MAX", 0)
    monkeypatch.setattr(limits, "GRAPH_FILTER_SELECTIVITY_MIN", 0.0)

    async def go():
        r = await filled(tmp_path, 12)
        q = np.asarray([vec(5)], "<f4")
        flt = filters.parse({"must": [{"key": "i", "range": {"lte": 6}}]})
        graph = r.search(q, 3, 64, flt, False)
        assert graph[0].plan == "hnsw-filtered"
        assert set(graph[0].ids) <= {f"s{i}" for i in range(7)} and graph[0].ids[0] == "s5"
        assert graph[0].scores[0] == pytest.approx(0.0)
        exact = r.search(q, 3, 64, flt, False)
        monkeypatch.setattr(limits, "EXACT_SEARCH_ALWAYS_CANDIDATES_MAX", 1000)
        exact = r.search(q, 3, 64, flt, False)
        assert exact[0].plan == "exact" and exact[0].ids == graph[0].ids
        assert exact[0].scores == pytest.approx(graph[0].scores)
        one = r.search(q, 3, 64, filters.parse({"must": [{"key": "i", "match": 9}]}), False)
        monkeypatch.setattr(limits, "EXACT_SEARCH_ALWAYS_CANDIDATES_MAX", 0)
        one_graph = r.search(q, 3, 64, filters.parse({"must": [{"key": "i", "match": 9}]}), False)
        assert one[0].ids == one_graph[0].ids == ["s9"]
        await r.close(checkpoint=False)

    asyncio.run(go())


class Failing:
    """hnswlib's index, whose searches fail the way they do when too few points qualify."""

    def __init__(self, index) -> None:
        self.index = index

    def __getattr__(self, name):
        return getattr(self.index, name)

    def knn_query(self, *args, **kwargs):
        raise RuntimeError("Cannot return the results in a contiguous 2D array")


def test_a_graph_search_that_fails_is_answered_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "EXACT_SEARCH_ALWAYS_CANDIDATES_MAX", 0)
    monkeypatch.setattr(limits, "GRAPH_FILTER_SELECTIVITY_MIN", 0.0)

    async def go():
        r = await filled(tmp_path, 6, deletes=["s1"])
        r.state.hnsw.index = Failing(r.state.hnsw.index)
        q = np.asarray([vec(3), vec(0)], "<f4")
        hits = r.search(q, 3, 0, None, False)
        assert [h.plan for h in hits] == ["exact", "exact"]
        assert [h.ids[0] for h in hits] == ["s3", "s0"] and all("s1" not in h.ids for h in hits)
        assert [len(h.ids) for h in hits] == [3, 3]
        flt = filters.parse({"must": [{"key": "i", "range": {"gte": 2}}]})
        hits = r.search(q, 3, 0, flt, False)
        assert [h.plan for h in hits] == ["exact", "exact"] and hits[0].ids[0] == "s3"
        assert all(set(h.ids) <= {"s2", "s3", "s4", "s5"} for h in hits)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_search_threads_never_exceed_the_queries(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path)
        r.options.threads = 4
        r.start()
        await r.write(batch(["a", "b", "c"]))
        seen = []
        real = r.state.hnsw.search

        def spy(queries, k, threads):
            seen.append((len(queries), k, threads))
            return real(queries, k, threads)

        r.state.hnsw.search = spy
        r.search(np.zeros((2, DIM), "<f4"), 5, 0, None, False)
        r.search(np.zeros((9, DIM), "<f4"), 2, 0, None, False)
        assert seen == [(2, 3, 2), (9, 2, 4)]
        await r.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ pipeline.py


class SizedReplicator:
    """A replicator whose in_sync has `size` members (`after` once a group replicated), or that
    raises NotCommitted (the map moved on)."""

    def __init__(self, size: int = 1, after: int | None = None, fail: bool = False) -> None:
        self.size, self.after, self.fail = size, after, fail
        self.calls: list[tuple[int, int, int]] = []
        self.stopped = False

    def in_sync_size(self) -> int:
        return self.size

    def stop(self) -> None:
        self.stopped = True

    async def replicate(self, entries, prev_lsn, prev_epoch) -> None:
        self.calls.append((len(entries), prev_lsn, prev_epoch))
        if self.fail:
            raise NotCommitted("no longer the primary of epoch 2")
        if self.after is not None:
            self.size = self.after


def test_points_are_named_up_to_a_bound():
    assert pipeline_mod.name_points([f"p{i}" for i in range(pipeline_mod.IDS_NAMED_MAX)]) == ", ".join(
        f"p{i}" for i in range(10)
    )
    assert (
        pipeline_mod.name_points([f"p{i}" for i in range(12)])
        == ", ".join(f"p{i}" for i in range(10)) + " and 2 more"
    )
    assert Pending(batch(["a", "b"], ["c"]), None).points() == 3


def decoded_log(r: ShardReplica) -> list[node_pb2.LogEntry]:
    return [node_pb2.LogEntry.FromString(raw) for _, raw in r.store.scan(P_LOG)]


def test_a_group_is_appended_with_its_labels_epoch_and_positions(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        rep = SizedReplicator()
        r.become_primary(2, rep)
        assert await r.write(batch(["a", "b", "c"]), epoch=2) == 1
        assert await r.write(batch([], ["b", "zz"]), epoch=2) == 2  # an absent id is no delete
        # one group: "d" takes the label b freed in an earlier group, "a" keeps its label, "c" is
        # deleted then written again in the same group: a new label (its own is freed by this group)
        writes = [
            asyncio.ensure_future(r.write(batch(["d", "a"], start=3), epoch=2)),
            asyncio.ensure_future(r.write(batch([], ["c"]), epoch=2)),
            asyncio.ensure_future(r.write(batch(["c"], start=5), epoch=2)),
        ]
        assert await asyncio.gather(*writes) == [3, 4, 5]
        assert rep.calls == [(1, 0, 0), (1, 1, 2), (3, 2, 2)]
        log = decoded_log(r)
        assert [(e.lsn, e.epoch) for e in log] == [(1, 2), (2, 2), (3, 2), (4, 2), (5, 2)]
        labels = [np.frombuffer(e.labels, "<u8").tolist() for e in log]
        deletes = [(list(e.delete_ids), np.frombuffer(e.delete_labels, "<u8").tolist()) for e in log]
        assert labels == [[0, 1, 2], [], [1, 0], [], [3]]
        assert deletes == [([], []), (["b"], [1]), ([], []), (["c"], [2]), ([], [])]
        assert (log[2].vectors.count, log[2].vectors.dim) == (2, DIM)
        assert np.frombuffer(log[2].vectors.data, "<f4").tolist() == vec(3) + vec(4)
        assert list(log[2].payloads) == [orjson.dumps({"i": 3}), orjson.dumps({"i": 4})]
        assert r.label_of == {"a": 0, "c": 3, "d": 1} and r.free == {2: None} and r.next_label == 4
        assert (r.store.meta(K_LOG_END), r.store.meta(K_LAST_EPOCH)) == (5, 2)
        assert (r.store.meta(K_APPLIED), r.store.meta(K_NEXT_LABEL)) == (5, 4)
        assert r.points_since_checkpoint == 3 + 2 + 2 + 1 + 1
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_group_that_is_not_committed_is_truncated_and_refused_exactly(tmp_path, caplog):
    async def go():
        r = replica(tmp_path)
        r.start()
        r.become_primary(2, SizedReplicator())
        await r.write(batch(["a"]), epoch=2)
        r.become_primary(3, SizedReplicator(fail=True))
        with pytest.raises(Unavailable) as info, caplog.at_level(logging.WARNING, logger="quartz.shard"):
            await r.write(batch(["b"]), epoch=3)
        truncated = [x for x in caplog.records if x.getMessage() == "truncating uncommitted entries"]
        assert len(truncated) == 1
        assert (truncated[0].__dict__["from"], truncated[0].to, truncated[0].epoch) == (2, 2, 3)
        assert str(info.value) == "write not committed on shard c/0: no longer the primary of epoch 2"
        assert (r.log_end, r.last_epoch, r.applied_lsn) == (1, 2, 1)
        assert (r.store.meta(K_LOG_END), r.store.meta(K_LAST_EPOCH)) == (1, 2)
        assert log_lsns(r) == [1] and "b" not in r.label_of
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_refusals_of_the_pipeline_are_exact(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path)
        r.start()
        r.roles.role = "primary"  # the map made it primary; its replicator is not there yet
        with pytest.raises(Unavailable) as info:
            await r.write(batch(["a"]))
        assert str(info.value) == "epoch: shard c/0 is changing primary" and r.log_end == 0
        rep = SizedReplicator(size=3, after=1)
        r.become_primary(1, rep)
        with pytest.raises(Unavailable) as info:
            await r.write(batch([f"p{i}" for i in range(11)], ["x"]), epoch=1, min_in_sync=2)
        assert str(info.value) == (
            "write_consistency: not enough replicas after append: shard c/0 has 1 in-sync "
            "replica(s) now, the write asked for 2; it is stored on those, not acknowledged at that "
            "consistency (points p0, p1, p2, p3, p4, p5, p6, p7, p8, p9 and 2 more); retrying is safe"
        )
        rep.size, rep.after = 2, None
        assert await r.write(batch(["q"]), epoch=1, min_in_sync=2) == 2  # exactly enough

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.store, "write", full)
        with pytest.raises(Unavailable) as info:
            await r.write(batch(["z"]), epoch=1)
        assert str(info.value) == "storage write failed on shard c/0: [Errno 28] No space left on device"
        assert r.log_end == 2 and not r.broken
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_refusal_inside_a_group_leaves_the_rest_of_it(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        rep = SizedReplicator(size=2)
        r.become_primary(1, rep)
        strict = asyncio.ensure_future(r.write(batch(["s"]), epoch=1, min_in_sync=2))
        loose = asyncio.ensure_future(r.write(batch(["l"], start=1), epoch=1))
        await asyncio.sleep(0)  # both queued; the writer has not run yet
        rep.size = 1  # a follower left in_sync before the group was appended
        results = await asyncio.gather(strict, loose, return_exceptions=True)
        assert isinstance(results[0], Unavailable) and "the write needs 2" in str(results[0])
        assert results[1] == 1 and set(r.label_of) == {"l"} and r.log_end == 1
        assert rep.calls == [(1, 0, 0)]
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_batch_mode_commits_one_batch_per_group(tmp_path):
    async def go():
        r = replica(tmp_path, commit_mode="batch")
        r.start()
        rep = SizedReplicator()
        r.become_primary(1, rep)
        writes = [asyncio.ensure_future(r.write(batch([f"b{i}"], start=i), epoch=1)) for i in range(3)]
        assert await asyncio.gather(*writes) == [1, 2, 3]
        assert [n for n, _, _ in rep.calls] == [1, 1, 1]
        await r.close(checkpoint=False)
        g = replica(tmp_path / "g")
        g.start()
        rep = SizedReplicator()
        g.become_primary(1, rep)
        writes = [asyncio.ensure_future(g.write(batch([f"b{i}"], start=i), epoch=1)) for i in range(3)]
        assert await asyncio.gather(*writes) == [1, 2, 3]
        assert [n for n, _, _ in rep.calls] == [3]
        await g.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ writer.py


def test_writer_jobs_run_in_order_and_a_caller_who_gave_up_is_skipped(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        ran, gate = [], asyncio.Event()

        async def first():
            ran.append("first")
            await gate.wait()
            return 1

        async def second():
            ran.append("second")
            return 2

        async def third():
            ran.append("third")
            raise ValueError("job failed")

        a = asyncio.ensure_future(r.exclusive("a", first))
        b = asyncio.ensure_future(r.exclusive("b", second))
        c = asyncio.ensure_future(r.exclusive("c", third))
        await asyncio.sleep(0.01)
        assert ran == ["first"] and r.writer.busy and not r.writer.idle
        a.cancel()  # the job started: it still runs to its end
        b.cancel()  # not started: skipped
        await asyncio.sleep(0)
        gate.set()
        with pytest.raises(ValueError, match="job failed"):
            await c
        assert ran == ["first", "third"]
        await settled(r)
        assert r.writer.idle and not r.writer.busy and not r.broken
        assert await r.exclusive("d", second) == 2
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_writer_queues_are_bounded_and_refusals_exact(tmp_path):
    async def go():
        r = replica(tmp_path)
        with pytest.raises(Unavailable) as info:
            await r.write(batch(["a"]))
        assert str(info.value) == "shard c/0 is not started"
        r.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()

        blocker = asyncio.ensure_future(r.exclusive("hold", hold))
        await asyncio.sleep(0.01)
        jobs = [
            asyncio.ensure_future(r.exclusive(f"j{i}", hold)) for i in range(limits.WRITER_JOBS_QUEUED_MAX)
        ]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted) as info:
            await r.exclusive("one too many", hold)
        assert str(info.value) == "shard c/0 has 64 jobs queued for its writer"
        writes = [
            asyncio.ensure_future(r.write(batch([f"w{i}"], start=i)))
            for i in range(limits.WRITE_QUEUE_DEPTH_MAX)
        ]
        await asyncio.sleep(0)
        with pytest.raises(ResourceExhausted) as info:
            await r.write(batch(["x"]))
        assert str(info.value) == "write queue of shard c/0 is full (64 batches)"
        gate.set()
        await asyncio.gather(blocker, *jobs)
        assert sorted(await asyncio.gather(*writes)) == list(range(1, 65))
        await r.close(checkpoint=False)
        with pytest.raises(Unavailable) as info:
            await r.exclusive("late", hold)
        assert str(info.value) == "shard c/0 is closing"

    asyncio.run(go())


def test_a_writer_stopped_for_good_refuses_what_is_queued_and_what_comes(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()

        blocker = asyncio.ensure_future(r.exclusive("hold", hold))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(r.write(batch(["a"])))
        job = asyncio.ensure_future(r.exclusive("later", hold))
        await asyncio.sleep(0)
        r.writer.stop_for_good("disk gone")
        for fut in (queued, job):
            with pytest.raises(Unavailable) as info:
                await fut
            assert str(info.value) == "shard c/0 is out of service: disk gone"
        with pytest.raises(Unavailable) as info:
            await r.write(batch(["b"]))
        assert str(info.value) == "shard c/0 is out of service: disk gone"
        with pytest.raises(Unavailable) as info:
            await r.exclusive("after", hold)
        assert str(info.value) == "shard c/0 is out of service: disk gone"
        assert r.health() == "out of service: disk gone"
        with pytest.raises(Unavailable) as info:
            r.search(np.zeros((1, DIM), "<f4"), 1, 0, None, False)
        assert str(info.value) == "shard c/0 is out of service: disk gone"
        gate.set()
        await blocker
        await r.close()  # no checkpoint of a broken shard
        assert r.checkpoint_lsn == 0

    asyncio.run(go())


# ------------------------------------------------------------------ storage.py


def test_the_key_layout_is_fixed():
    assert storage_mod.u64(1) == b"\x00" * 7 + b"\x01" and storage_mod.u64(258) == bytes(6) + b"\x01\x02"
    assert storage_mod.log_key(3) == b"g/" + bytes(7) + b"\x03"
    assert (storage_mod.P_LOG, storage_mod.P_VEC, storage_mod.P_PAY, storage_mod.P_FREE) == (
        b"g/",
        b"v/",
        b"p/",
        b"f/",
    )
    assert (K_APPLIED, K_NEXT_LABEL, K_LOG_END, K_LAST_EPOCH, K_EPOCH) == (
        b"m/applied_lsn",
        b"m/next_label",
        b"m/log_end",
        b"m/last_epoch",
        b"m/epoch",
    )
    assert (storage_mod.K_LOG_START, storage_mod.K_LOG_START_EPOCH, storage_mod.K_HISTORY) == (
        b"m/log_start",
        b"m/log_start_epoch",
        b"m/history",
    )
    assert len(storage_mod.new_history()) == 16 and storage_mod.new_history() != storage_mod.new_history()


def test_log_positions_reads_and_truncation(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        for i, epoch in enumerate((1, 1, 2, 3, 3)):
            await r.append_replicated(
                request([entry(i + 1, epoch, [f"e{i}"], [i], start=i)], i, r.last_epoch, epoch=epoch)
            )
        s = r.store
        assert (s.log_end, s.last_epoch, s.log_start) == (5, 3, 0)
        assert [s.entry_epoch(n) for n in range(7)] == [0, 1, 1, 2, 3, 3, -1]
        sizes = [len(raw) for raw in s.read_log(1, 10)]
        assert len(sizes) == 5
        assert s.read_log(2, 2) == s.read_log(2, 10)[:2]
        assert len(s.read_log(1, 10, sizes[0] + sizes[1])) == 2  # bytes_max reached
        assert len(s.read_log(1, 10, sizes[0] + sizes[1] - 1)) == 1
        assert len(s.read_log(1, 10, 1)) == 1  # the first entry always goes
        assert s.read_log(6, 10) == [] and s.read_log(0, 10) is None
        assert [node_pb2.LogEntry.FromString(x).lsn for x in s.read_log(4, 10)] == [4, 5]
        assert s.meta(b"m/none") == 0 and s.history() == b""
        s.truncate_after(3)
        assert (s.log_end, s.last_epoch) == (3, 2) and log_lsns(r) == [1, 2, 3]
        assert (s.meta(K_LOG_END), s.meta(K_LAST_EPOCH)) == (3, 2)
        s.trim_log_before(1)
        assert log_lsns(r) == [1, 2, 3]
        s.trim_log_before(2)
        assert log_lsns(r) == [2, 3]
        s.trim_log_before(3)
        assert log_lsns(r) == [3]
        assert s.read_log(2, 10) is None  # no longer reaches back
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_get_returns_what_exists_in_request_order(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        await r.write(batch(["a", "b"], payloads=[b'{"x": 1}', b""]))
        got = r.get(["b", "nope", "a"], True, True)
        assert got == [
            ("b", np.asarray(vec(1), "<f4").tobytes(), b""),
            ("a", np.asarray(vec(0), "<f4").tobytes(), b'{"x": 1}'),
        ]
        assert r.get(["a"], False, False) == [("a", b"", b"")]
        assert r.get(["a"], False, True) == [("a", b"", b'{"x": 1}')]
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_rows_of_an_entry(tmp_path):
    s = storage_mod.ShardStore(str(tmp_path))
    e = node_pb2.LogEntry.FromString(entry(1, 1, ["a", "b"], [4, 2], deletes=["c"], delete_labels=[7]))
    e.ClearField("payloads")
    wb = rocksdict.WriteBatch(raw_mode=True)
    assert storage_mod.entry_rows(wb, e, DIM) == 5
    s.write(wb, sync=True)
    assert s.db.get(b"v/a") == (4).to_bytes(8, "little") + np.asarray(vec(0), "<f4").tobytes()
    assert s.db.get(b"v/b")[:8] == (2).to_bytes(8, "little") and s.db.get(b"p/a") == b""
    assert s.db.get(b"f/" + storage_mod.u64(7)) == b"" and s.db.get(b"v/c") is None
    wb = rocksdict.WriteBatch(raw_mode=True)
    only_deletes = node_pb2.LogEntry.FromString(entry(2, 1, deletes=["a"], delete_labels=[4]))
    assert storage_mod.entry_rows(wb, only_deletes, DIM) == 0
    s.write(wb, sync=False)
    assert (
        s.db.get(b"v/a") is None and s.db.get(b"p/a") is None and s.db.get(b"f/" + storage_mod.u64(4)) == b""
    )
    s.close()


def test_leftovers_of_an_interrupted_install_are_removed_on_open(tmp_path):
    os.makedirs(tmp_path / "db.incoming-abc" / "x")
    s = storage_mod.ShardStore(str(tmp_path))
    s.db.put(K_LOG_END, storage_mod.u64(9))
    s.close()
    assert not os.path.exists(tmp_path / "db.incoming-abc")
    os.rename(tmp_path / "db", tmp_path / "db.old")  # a crash between a swap's two renames
    s = storage_mod.ShardStore(str(tmp_path))
    assert s.meta(K_LOG_END) == 9 and not os.path.exists(tmp_path / "db.old")
    s.close()
    os.makedirs(tmp_path / "db.old" / "x")  # a crash after the rename back: both exist, db is the truth
    s = storage_mod.ShardStore(str(tmp_path))
    assert s.meta(K_LOG_END) == 9 and not os.path.exists(tmp_path / "db.old")
    s.close()


# ------------------------------------------------------------------ replica.py


def test_a_replica_shows_its_state(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        r.become_primary(3, SizedReplicator())
        await r.write(batch(["a", "b"]), epoch=3)
        assert (r.role, r.epoch, r.primary_hint, r.log_end, r.last_epoch) == ("primary", 3, "", 1, 3)
        assert (r.applied_lsn, r.checkpoint_lsn, r.next_label) == (1, 0, 2)
        assert r.label_of == {"a": 0, "b": 1} and r.free == {} and r.db is r.store.db
        assert r.hnsw is r.state.hnsw and isinstance(r.replicator, SizedReplicator)
        stats = r.stats()
        assert stats == {
            **r.state.stats(),
            "checkpoint_lsn": 0,
            "epoch": 3,
            "log_end": 1,
            "last_epoch": 3,
            "storage_bytes": r.store.size_bytes(),
            "health": "ok",
        }
        assert stats["count"] == 2 and stats["applied_lsn"] == 1 and stats["storage_bytes"] > 0
        r.become_follower(4, "n2")
        assert (r.role, r.primary_hint, r.replicator) == ("follower", "n2", None)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_failed_checkpoints_back_off_exponentially_up_to_a_bound(tmp_path, monkeypatch):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, checkpoint_retry_s_min=10, checkpoint_retry_s_max=25)
        r.start()

        def fail(*args):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.checkpoints, "save", fail)
        for n, delay in ((1, 10), (2, 20), (3, 25), (4, 25)):
            r._checkpoint_retry_at = 0.0
            await r.write(batch([f"x{n}"], start=n))
            await settled(r)
            assert r.checkpoint_failures == n
            assert r._checkpoint_retry_at - time.monotonic() == pytest.approx(delay, abs=2)
            assert r.health() == (
                f"checkpoint failing ({n} in a row): OSError: [Errno 28] No space left on device"
            )
        await r.write(batch(["y"], start=9))  # before the retry time: not tried again
        await settled(r)
        assert r.checkpoint_failures == 4
        monkeypatch.undo()
        r._checkpoint_retry_at = 0.0
        await r.write(batch(["z"], start=10))
        await settled(r)
        assert (r.checkpoint_failures, r.checkpoint_error, r.health()) == (0, "", "ok")
        assert r.checkpoint_lsn == 6 and r.points_since_checkpoint == 0
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_closing_checkpoints_what_was_applied_since_the_last_one(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        await r.write(batch(["a"]))
        staging = r.begin_snapshot(0, 1, 0, 1)
        await r.close()
        assert r.checkpoint_lsn == 1 and staging.state == "aborted" and not os.path.exists(staging.path)
        r2 = replica(tmp_path)
        assert r2.how == "checkpoint@1+replay0"
        r2.start()
        await r2.close()  # nothing new: no checkpoint
        assert r2.checkpoint_lsn == 1

    asyncio.run(go())


def test_a_session_read_waits_for_its_lsn_then_gives_up_exactly(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        await r.write(batch(["a"]))
        await r.wait_applied(1, 0.0)
        later = asyncio.ensure_future(r.wait_applied(2, 30))
        await asyncio.sleep(0.01)
        assert not later.done()
        await r.write(batch(["b"], start=1))
        await asyncio.wait_for(later, 30)
        with pytest.raises(Unavailable) as info:
            await r.wait_applied(5, 0.005)
        assert str(info.value) == "session: this replica of shard c/0 has applied LSN 2; the session needs 5"
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_newer_snapshot_stream_supersedes_an_older_one(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        older = r.begin_snapshot(1, 1, 1, 1)
        newer = r.begin_snapshot(1, 1, 1, 1)
        assert older.state == "aborted" and newer.state == "streaming" and r._staging is newer
        await r.install_snapshot(newer)
        assert r._staging is None
        await r.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ checkpoint.py, continued


def test_a_checkpoint_of_this_history_is_loaded_and_one_of_another_is_not(tmp_path, caplog):
    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0, epoch=1))
        f = replica(tmp_path / "f", checkpoint_every_points=1)
        f.start()
        await f.install_snapshot(stage(f, src, epoch=1))
        await settled(f)
        assert f.store.history() != b"" and f.checkpoint_lsn == 1
        await f.close(checkpoint=False)
        await src.close(checkpoint=False)

    asyncio.run(go())
    f = replica(tmp_path / "f")
    assert f.how == "checkpoint@1+replay0"  # its own history, after an install
    f.store.close()
    state = os.path.join(str(tmp_path / "f"), "ckpt", f"ckpt-{1:020d}.state")
    with open(state, "rb") as fh:
        saved = pickle.load(fh)
    with open(state, "wb") as fh:
        pickle.dump({**saved, "history": b"another"}, fh)
    with caplog.at_level(logging.WARNING, logger="quartz.shard"):
        f = replica(tmp_path / "f")
    assert f.how == "rebuild" and set(f.label_of) == {"a"}
    warned = [r for r in caplog.records if r.getMessage() == "checkpoint of another history; ignored"]
    assert len(warned) == 1 and warned[0].lsn == 1
    f.store.close()


def test_a_checkpoint_written_before_histories_existed_is_loaded(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1)
        r.start()
        await r.write(batch(["a", "b"]))
        await settled(r)
        await r.close(checkpoint=False)

    asyncio.run(go())
    state = os.path.join(str(tmp_path), "ckpt", f"ckpt-{1:020d}.state")
    with open(state, "rb") as fh:
        saved = pickle.load(fh)
    del saved["history"]
    with open(state, "wb") as fh:
        pickle.dump(saved, fh)
    r = replica(tmp_path)
    assert r.how == "checkpoint@1+replay0" and set(r.label_of) == {"a", "b"}
    r.store.close()


def test_a_replay_that_falls_short_says_where(tmp_path, caplog):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=1)
        r.start()
        await r.write(batch(["a"]))
        await settled(r)
        r.options.checkpoint_every_points = 100
        for i in range(3):
            await r.write(batch([f"b{i}"], start=1 + i))
        r.store.db.delete(log_key(3))
        await r.close(checkpoint=False)

    asyncio.run(go())
    with caplog.at_level(logging.WARNING, logger="quartz.shard"):
        r = replica(tmp_path)
    assert r.how == "rebuild"
    short = [x for x in caplog.records if x.getMessage().startswith("log does not reach")]
    assert len(short) == 1
    assert short[0].getMessage() == "log does not reach from checkpoint to applied_lsn; rebuilding"
    assert (short[0].checkpoint, short[0].reached, short[0].applied) == (1, 2, 4)
    r.store.close()


def test_the_tail_is_applied_from_the_entry_after_applied_only(tmp_path):
    """A log trimmed by a checkpoint starts with a delete whose insert is gone: replaying it again
    would fail. Only the entries after applied_lsn are the tail."""

    async def go():
        r = replica(tmp_path, checkpoint_every_points=1, log_retention_entries=0)
        r.start()
        await r.write(batch(["a"]))
        await r.write(batch(["b"], start=1))
        await r.write(batch([], ["a"]))
        await settled(r)
        assert r.checkpoint_lsn == 3 and log_lsns(r) == [3]
        r.pipeline.append([Pending(batch(["c"], start=2), None)], 0)  # the tail a crash left
        await r.close(checkpoint=False)

    asyncio.run(go())
    r = ShardReplica(str(tmp_path), SPEC, ShardOptions(threads=1))
    syncs = []
    real_write = r.store.write
    r.store.write = lambda wb, sync: (syncs.append(sync), real_write(wb, sync))
    assert r.load() == "checkpoint@3+replay0+tail1"
    assert r.label_of == {"b": 1, "c": 0} and r.applied_lsn == 4
    assert syncs == [False]  # rows of a durable log: not synced again
    r.store.close()


# ------------------------------------------------------------------ review fixes (c4f5d2c)


def test_an_install_makes_a_new_database_generation_named_in_the_current_file(tmp_path):
    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0, epoch=1))
        f = replica(tmp_path / "f")
        f.start()
        await f.write(batch(["old"]))
        await f.install_snapshot(stage(f, src, epoch=1))
        with open(os.path.join(str(tmp_path / "f"), storage_mod.CURRENT_FILE)) as fh:
            name = fh.read()
        assert len(name) == 15 and name.startswith("db-") and f.store.db_path == str(tmp_path / "f" / name)
        dirs = sorted(d for d in os.listdir(tmp_path / "f") if d.startswith("db"))
        assert dirs == sorted([name, storage_mod.CURRENT_FILE])  # the old generation is gone
        await f.close(checkpoint=False)
        await src.close(checkpoint=False)
        return name

    name = asyncio.run(go())
    # leftovers of a crashed swap: the previous generation, another one, a temp current file
    os.makedirs(tmp_path / "f" / "db")
    os.makedirs(tmp_path / "f" / "db-000000000000")
    os.makedirs(tmp_path / "f" / "db.old")
    f = replica(tmp_path / "f")
    assert set(f.label_of) == {"a"} and f.store.db_path.endswith(name)
    assert sorted(d for d in os.listdir(tmp_path / "f") if d.startswith("db")) == sorted(
        [name, storage_mod.CURRENT_FILE]
    )
    f.store.close()
    open(os.path.join(str(tmp_path / "f"), storage_mod.CURRENT_FILE), "w").close()  # empty: "db"
    s = storage_mod.ShardStore(str(tmp_path / "f"))
    assert s.db_path == str(tmp_path / "f" / "db") and not os.path.exists(tmp_path / "f" / name)
    s.close()


def test_read_log_stops_at_upto_and_needs_the_entry_before(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        for i in range(5):
            await r.write(batch([f"e{i}"], start=i))
        s = r.store
        assert [node_pb2.LogEntry.FromString(x).lsn for x in s.read_log(2, 10, None, 3)] == [2, 3]
        assert len(s.read_log(2, 10, None, 99)) == 4 and s.read_log(4, 10, None, 3) == []
        assert len(r.read_log(1, 10, None, 1)) == 1
        r.store.db.delete(log_key(1))  # trimmed up to 1: entry 2 cannot be sent (its prev epoch is gone)
        assert s.read_log(2, 10) is None and len(s.read_log(3, 10)) == 3
        r.store.db.delete(log_key(2))
        assert s.read_log(3, 10) is None and len(s.read_log(4, 10)) == 2
        await r.close(checkpoint=False)

    asyncio.run(go())


class Item:
    def __init__(self, size: int) -> None:
        self.size = size
        self.future = asyncio.get_running_loop().create_future()

    def size_bytes(self) -> int:
        return self.size


def test_a_group_is_bounded_by_bytes_as_well_as_batches():
    async def go():
        groups = []

        async def commit(group):
            groups.append([item.size for item in group])
            for item in group:
                item.future.set_result(None)

        async def nothing():
            pass

        w = writer_mod.ShardWriter("c/0", commit, nothing, 3, logging.getLogger("t"), group_bytes_max=100)
        items = [Item(n) for n in (60, 40, 1, 70, 31, 150, 5, 1, 1, 1, 1)]
        w.start()
        for item in items:
            w.enqueue_write(item)
        await asyncio.gather(*(i.future for i in items))
        assert groups == [[60, 40], [1, 70], [31], [150], [5, 1, 1], [1, 1]]
        await w.close()

    asyncio.run(go())


def test_a_pending_write_knows_its_size():
    b = batch(["ab", "c"], ["defg"], payloads=[b'{"a":1}', b""])
    assert Pending(b, None).size_bytes() == 2 * DIM * 4 + 7 + 3 + 4


def test_cancelling_the_writer_answers_the_work_in_flight_and_queued(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()

        running = asyncio.ensure_future(r.exclusive("hold", hold))
        await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(r.write(batch(["a"])))
        await asyncio.sleep(0)
        r.writer._task.cancel()
        for fut in (running, queued):
            with pytest.raises(Unavailable) as info:
                await fut
            assert str(info.value) == "shard c/0 is shutting down"
        assert r.broken == "the writer was cancelled" and not r.writer.busy
        r.store.close()

    asyncio.run(go())


def test_an_unexpected_replication_failure_takes_the_shard_out_of_service(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()

        class Buggy(SizedReplicator):
            async def replicate(self, entries, prev_lsn, prev_epoch):
                raise ValueError("Value out of range")

        r.become_primary(1, Buggy())
        with pytest.raises(Unavailable) as info:
            await r.write(batch(["a"]), epoch=1)
        assert str(info.value) == "write not committed on shard c/0: Value out of range"
        assert r.broken == "replication failed unexpectedly: ValueError('Value out of range')"
        assert r.log_end == 1 and r.applied_lsn == 0
        r.store.close()

    asyncio.run(go())


def test_a_follower_whose_apply_fails_after_its_durable_write_goes_out_of_service(tmp_path):
    async def go():
        f = replica(tmp_path)
        f.start()

        def boom(entries):
            raise RuntimeError("hnsw exploded")

        f.state.apply_entries = boom
        with pytest.raises(Unavailable) as info:
            await f.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0))
        reason = "apply failed after a durable write: RuntimeError('hnsw exploded')"
        assert str(info.value) == f"shard c/0 is out of service: {reason}"
        assert f.broken == reason and f.log_end == 1 and f.store.meta(K_LOG_END) == 1
        f.store.close()

    asyncio.run(go())


@pytest.mark.parametrize("where", ["before the swap", "after the swap"])
def test_an_install_that_fails_after_the_swap_takes_the_shard_out_of_service(tmp_path, where):
    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0, epoch=1))
        f = replica(tmp_path / "f")
        f.start()
        staging = stage(f, src, epoch=1)

        def boom(*args):
            raise OSError(5, "I/O error")

        if where == "before the swap":
            staging.finish = boom
        else:
            f.state.rebuild_from_rows = boom
        with pytest.raises(OSError):
            await f.install_snapshot(staging)
        assert not os.path.exists(staging.path) and f._staging is None
        if where == "before the swap":
            assert not f.broken and await f.write(batch(["b"])) == 1
        else:
            assert f.broken == "snapshot install failed after the swap: OSError(5, 'I/O error')"
        await f.close(checkpoint=False)
        await src.close(checkpoint=False)

    asyncio.run(go())


def test_when_a_checkpoint_is_due(tmp_path):
    async def go():
        r = replica(tmp_path, checkpoint_every_points=10, follower_checkpoint_jitter=0.5)
        assert 1.0 <= r._follower_checkpoint_factor <= 1.5
        r._follower_checkpoint_factor = 1.5
        r.start()
        for points, due in ((9, False), (10, True)):
            r.points_since_checkpoint = points
            assert r._checkpoint_due() is due  # a standalone replica or a primary: every 10
        r.become_follower(1, "p")
        for points, due in ((14, False), (15, True)):
            r.points_since_checkpoint = points
            assert r._checkpoint_due() is due  # a follower: its own offset
        r.writer._queue.append(object())  # more work queued: wait, up to twice the interval
        for points, due in ((15, False), (29, False), (30, True)):
            r.points_since_checkpoint = points
            assert r._checkpoint_due() is due
        r.writer._queue.clear()
        await r.close(checkpoint=False)
        assert replica(tmp_path / "z", follower_checkpoint_jitter=0)._follower_checkpoint_factor == 1.0

    asyncio.run(go())


def test_closing_a_primary_stops_its_replicator(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        rep = SizedReplicator()
        r.become_primary(1, rep)
        await r.close(checkpoint=False)
        assert rep.stopped

    asyncio.run(go())


class Recording:
    """A RocksDB handle that records every put and write (with its options) and WAL sync."""

    def __init__(self, db) -> None:
        self.db = db
        self.calls: list[tuple[str, object]] = []

    def __getattr__(self, name):
        return getattr(self.db, name)

    def put(self, key, value, options=None):
        self.calls.append(("put", options))
        return self.db.put(key, value, options) if options is not None else self.db.put(key, value)

    def write(self, wb, options=None):
        self.calls.append(("write", options))
        return self.db.write(wb, options) if options is not None else self.db.write(wb)

    def flush_wal(self, sync):
        self.calls.append(("flush_wal", sync))
        return self.db.flush_wal(sync)


def test_epochs_and_truncations_are_synced(tmp_path):
    s = storage_mod.ShardStore(str(tmp_path))
    for lsn in (1, 2, 3):
        s.db.put(log_key(lsn), entry(lsn, 4))
    real = s.db
    s.db = Recording(real)
    assert (s.log_end, s.last_epoch, s.log_start, s.log_start_epoch) == (0, 0, 0, 0)  # before any load
    s.put_epoch(5)
    s.log_end = 3
    s.truncate_after(1)
    s.write(rocksdict.WriteBatch(raw_mode=True), sync=True)
    s.write(rocksdict.WriteBatch(raw_mode=True), sync=False)
    synced = [("write", None), ("flush_wal", True)]  # the WAL synced after the write: durable
    assert s.db.calls == synced * 3 + [("write", None)]
    assert s.meta(K_EPOCH) == 5 and s.meta(K_LOG_END) == 1 and s.meta(K_LAST_EPOCH) == 4
    s.db = real
    s.close()


# ------------------------------------------------------------------ what the shard logs (operators read it)


def logged(caplog, message: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == message]


def test_checkpoints_and_their_failures_are_logged_with_their_figures(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="quartz.shard")

    async def go():
        r = replica(tmp_path, checkpoint_every_points=2, checkpoint_retry_s_min=10, checkpoint_retry_s_max=25)
        r.start()
        real_save = r.checkpoints.save

        def fail(*args):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.checkpoints, "save", fail)
        await r.write(batch(["a", "b"]))
        await settled(r)
        (failed,) = logged(caplog, "checkpoint failed; writes go on from the log, retrying")
        assert failed.levelno == logging.ERROR and failed.shard == "c/0"
        assert (failed.error, failed.failures, failed.retry_s) == (
            "OSError: [Errno 28] No space left on device",
            1,
            10,
        )
        monkeypatch.setattr(r.checkpoints, "save", real_save)
        r._checkpoint_retry_at = 0.0
        await r.write(batch(["c"], start=2))
        await settled(r)
        (again,) = logged(caplog, "checkpoint succeeded again")
        assert again.failures == 1
        (done,) = logged(caplog, "checkpoint")
        assert (done.lsn, done.count, done.shard) == (2, 3, "c/0") and 0 <= done.seconds < 60
        assert r.last_checkpoint_s > 0
        await r.close(checkpoint=False)

    asyncio.run(go())
    caplog.clear()
    r = replica(tmp_path)
    r.checkpoints.remove_all()
    r.store.close()
    r = replica(tmp_path)
    (rebuilt,) = logged(caplog, "rebuilt from rows")
    assert rebuilt.count == 3 and 0 <= rebuilt.seconds < 60
    r.store.close()


def test_failures_of_the_write_path_are_logged(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="quartz.shard")

    async def go():
        r = replica(tmp_path)
        r.start()

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(r.store, "write", full)
        with pytest.raises(Unavailable):
            await r.write(batch(["a"]))
        (append,) = logged(caplog, "append failed")
        assert append.levelno == logging.ERROR and append.exc_info and append.shard == "c/0"
        monkeypatch.undo()

        def boom(group):
            raise RuntimeError("hnsw exploded")

        monkeypatch.setattr(r.pipeline, "apply_committed", boom)
        with pytest.raises(Exception, match="apply failed"):
            await r.write(batch(["b"]))
        (apply,) = logged(caplog, "apply failed; shard out of service until restart")
        assert apply.exc_info
        r.store.close()

        p = replica(tmp_path / "p")
        p.start()

        class Buggy(SizedReplicator):
            async def replicate(self, entries, prev_lsn, prev_epoch):
                raise ValueError("Value out of range")

        p.become_primary(1, Buggy())
        with pytest.raises(Unavailable):
            await p.write(batch(["a"]), epoch=1)
        (repl,) = logged(caplog, "replication failed; shard out of service")
        assert repl.exc_info
        p.store.close()

    asyncio.run(go())


def test_a_stopped_writer_and_a_slow_job_are_logged(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="quartz.shard")

    async def go():
        r = replica(tmp_path)
        r.start()
        ticks = iter([100.0, 105.5, 200.0, 201.0])

        class Clock:
            @staticmethod
            def monotonic():
                return next(ticks)

        monkeypatch.setattr(writer_mod, "time", Clock)

        async def job():
            return 1

        await r.exclusive("probe", job)
        await r.exclusive("join", job)
        (slow,) = logged(caplog, "slow writer job")
        assert (slow.job, slow.seconds, slow.shard) == ("probe", 5.5, "c/0")
        monkeypatch.undo()

        async def loop_bug():
            raise RuntimeError("bug in after_job")

        monkeypatch.setattr(r.writer, "_after_job", loop_bug)
        await r.exclusive("last", job)
        await asyncio.sleep(0.01)
        (stopped,) = logged(caplog, "shard writer stopped; shard out of service")
        assert stopped.exc_info
        assert r.broken == "writer stopped: RuntimeError('bug in after_job')"
        r.store.close()

    asyncio.run(go())


def test_snapshot_installs_and_lost_state_are_logged(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="quartz.shard")

    async def go():
        src = replica(tmp_path / "src")
        src.start()
        await src.append_replicated(request([entry(1, 2, ["a", "b"], [0, 1])], 0, 0, epoch=2))
        f = replica(tmp_path / "f")
        f.start()
        await f.install_snapshot(stage(f, src, epoch=2))
        (installed,) = logged(caplog, "snapshot installed")
        assert (installed.lsn, installed.rows, installed.epoch, installed.shard) == (1, 4, 2, "c/0")

        def boom(*args):
            raise OSError(5, "I/O error")

        f.state.rebuild_from_rows = boom
        with pytest.raises(OSError):
            await f.install_snapshot(stage(f, src, epoch=2))
        (after,) = logged(caplog, "snapshot install failed after the swap; out of service until restart")
        assert after.exc_info
        await f.close(checkpoint=False)

        g = replica(tmp_path / "g")
        g.start()

        def lost(entries):
            raise RuntimeError("hnsw exploded")

        g.state.apply_entries = lost
        with pytest.raises(Unavailable):
            await g.append_replicated(request([entry(1, 1, ["a"], [0])], 0, 0))
        (follower,) = logged(caplog, "follower apply failed; shard out of service until restart")
        assert follower.exc_info
        g.store.close()
        await src.close(checkpoint=False)

    asyncio.run(go())


def test_the_current_file_is_written_beside_it_then_renamed(tmp_path, monkeypatch):
    async def go():
        src = replica(tmp_path / "src")
        f = replica(tmp_path / "f")
        f.start()
        opened = []
        real_open = open

        def spy(path, *args, **kwargs):
            opened.append(str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(storage_mod, "open", spy, raising=False)
        await f.install_snapshot(stage(f, src, epoch=0))
        monkeypatch.undo()
        assert opened == [os.path.join(str(tmp_path / "f"), "db.current.tmp")]
        assert not os.path.exists(opened[0])
        await f.close(checkpoint=False)
        src.store.close()

    asyncio.run(go())


def test_a_queued_write_of_an_epoch_that_ended_is_refused_when_its_turn_comes(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        r.become_primary(1, SizedReplicator())
        old = asyncio.ensure_future(r.write(batch(["a"]), epoch=1))
        await asyncio.sleep(0)  # queued, not yet appended
        r.become_primary(2, SizedReplicator())  # a new epoch meanwhile
        with pytest.raises(FailedPrecondition) as info:
            await old
        assert str(info.value) == "epoch: epoch 1 is not the current epoch 2 of shard c/0"
        assert r.log_end == 0
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_primary_syncs_its_log_not_its_rows(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        syncs = []
        real_write = r.store.write

        def spy(wb, sync):
            syncs.append(sync)
            return real_write(wb, sync)

        r.store.write = spy
        await r.write(batch(["a"]))
        assert syncs == [True, False]  # the group's log entries, then its rows (replay rebuilds them)
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_a_caller_who_gave_up_mid_group_does_not_keep_the_others_waiting(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        gate = threading.Event()
        real_append = r.pipeline.append

        def slow_append(group, epoch):
            gate.wait(30)
            return real_append(group, epoch)

        r.pipeline.append = slow_append
        first = asyncio.ensure_future(r.write(batch(["a"])))
        second = asyncio.ensure_future(r.write(batch(["b"], start=1)))
        while not r.writer.busy:
            await asyncio.sleep(0.001)
        first.cancel()  # its deadline passed while the group was being appended
        await asyncio.sleep(0)
        gate.set()
        await settled(r)
        for _ in range(10):  # the writer resolved its future: let its task see it
            await asyncio.sleep(0)
        assert first.cancelled() and second.done() and second.result() == 2
        assert set(r.label_of) == {"a", "b"}  # appended and applied all the same
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_one_group_sees_its_own_upserts_and_deletes(tmp_path):
    async def go():
        r = replica(tmp_path)
        r.start()
        await r.write(batch(["b"]))
        writes = [
            asyncio.ensure_future(r.write(batch(["x", "y"], start=1))),
            asyncio.ensure_future(r.write(batch(["x"], ["zz", "b", "y"], start=3))),  # absent id first
            asyncio.ensure_future(r.write(batch(["y"], start=4))),
        ]
        assert await asyncio.gather(*writes) == [2, 3, 4]
        log = decoded_log(r)
        assert [np.frombuffer(e.labels, "<u8").tolist() for e in log] == [[0], [1, 2], [1], [3]]
        assert [list(e.delete_ids) for e in log] == [[], [], ["b", "y"], []]
        assert [np.frombuffer(e.delete_labels, "<u8").tolist() for e in log] == [[], [], [0, 2], []]
        assert r.label_of == {"x": 1, "y": 3} and r.free == {0: None, 2: None}
        await r.close(checkpoint=False)

    asyncio.run(go())
