"""The primary side of replication (replication/primary.py) without a network or etcd: the gRPC
stubs are fakes (or a real follower ShardReplica behind a loopback stub) and `isr_change` is a
function that records what it was asked. A follower that does not acknowledge leaves in_sync in
etcd before the write is acknowledged; a write whose in_sync change etcd refused is not
acknowledged; a fenced primary stops; a follower a little behind is filled inline; catch-up brings
a replica back by log or by snapshot and adds it back to in_sync."""

from __future__ import annotations

import asyncio
import logging
import threading
import types

import grpc
import numpy as np
import pytest

from quartz_cluster import limits, validation
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import QuartzError
from quartz_cluster.meta import schema
from quartz_cluster.node.membership import ClusterMember
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication import primary
from quartz_cluster.replication.primary import NotCommitted, Replicator, replication_timeout_s
from quartz_cluster.rpc.status import status_of

DIM = 8
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=32, ef=32)
HANG_GUARD_S = 60  # only to turn a hang into a failure, never a speed bound
OK, BEHIND, DIVERGED = node_pb2.REPLICATE_OK, node_pb2.REPLICATE_BEHIND, node_pb2.REPLICATE_DIVERGED
HANG = object()  # a Stub answer: the call never returns


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def reply(status=OK, log_end=0, incarnation="inc") -> node_pb2.ReplicateResponse:
    return node_pb2.ReplicateResponse(status=status, log_end=log_end, incarnation=incarnation)


class FakeReplica:
    """What a Replicator uses of its shard: role, epoch, the log (entry i holds b"entry-i" of
    epoch epochs[i - 1]); writer jobs run at once."""

    def __init__(self, entries: int = 0, epoch: int = 1, epochs: list[int] | None = None) -> None:
        self.spec = SPEC
        self.role, self.epoch = "primary", epoch
        self.log = [b"entry-%d" % lsn for lsn in range(1, entries + 1)]
        self.epochs = epochs if epochs is not None else [epoch] * entries
        self.reads: list[tuple] = []
        self.uptos: list[int | None] = []
        self.read_limit: int | None = None  # return at most this many entries (bytes_max reached)
        self.trimmed = False  # read_log says the log no longer reaches back
        self.jobs: list[str] = []
        self.applied: int | None = None  # below log_end: a group is in flight

    @property
    def log_end(self) -> int:
        return len(self.log)

    @property
    def applied_lsn(self) -> int:  # by default nothing in flight: every entry is committed
        return len(self.log) if self.applied is None else self.applied

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1] if self.epochs else 0

    def read_log(
        self, from_lsn: int, count: int, bytes_max: int | None = None, upto: int | None = None
    ) -> list[bytes] | None:
        self.reads.append((from_lsn, count, bytes_max))
        self.uptos.append(upto)
        if self.trimmed:
            return None
        out = self.log[from_lsn - 1 : min(from_lsn - 1 + count, upto if upto is not None else len(self.log))]
        return out[: self.read_limit] if self.read_limit is not None else out

    def entry_epoch(self, lsn: int) -> int:
        return 0 if lsn == 0 else self.epochs[lsn - 1]

    async def exclusive(self, name: str, fn):
        self.jobs.append(name)
        return await fn()

    def snapshot_chunks(self):
        yield self.log_end, self.last_epoch, 7, []
        yield self.log_end, self.last_epoch, 7, [(b"v/a", b"row-a"), (b"p/a", b"{}")]


class Stub:
    """A node's stub: each Replicate call takes the next answer (the last one repeats); an answer
    is a reply, an exception to raise, or a function of the request."""

    def __init__(self, *answers) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[node_pb2.ReplicateRequest, float]] = []
        self.snapshots: list[list[node_pb2.SnapshotChunk]] = []
        self.snapshot_answer = reply(OK, 0)

    async def Replicate(self, req, timeout):
        self.calls.append((req, timeout))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is HANG:
            await asyncio.Event().wait()
        if callable(answer):
            answer = answer(req)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def InstallSnapshot(self, stream, timeout):
        self.snapshots.append([chunk async for chunk in stream])
        answer = self.snapshot_answer
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Channels:
    def __init__(self, **stubs) -> None:
        self.stubs = stubs
        self.asked: list[str] = []

    def stub(self, address: str):
        self.asked.append(address)
        return self.stubs[address]


class Isr:
    """isr_change: records (node, incarnation) and answers in turn (the last answer repeats)."""

    def __init__(self, *answers: bool, on_call=None) -> None:
        self.answers = list(answers) or [True]
        self.calls: list[tuple[str, str | None]] = []
        self.on_call = on_call

    async def __call__(self, node: str, incarnation: str | None) -> bool:
        self.calls.append((node, incarnation))
        await asyncio.sleep(0)
        if self.on_call is not None:
            self.on_call(node, incarnation)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class FastSleep:
    """primary.py's asyncio with sleeps of no time (its retries and backoffs)."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def __getattr__(self, name):
        return getattr(asyncio, name)

    async def sleep(self, seconds):
        self.slept.append(seconds)
        await asyncio.sleep(0)


@pytest.fixture
def fast_sleep(monkeypatch) -> FastSleep:
    shim = FastSleep()
    monkeypatch.setattr(primary, "asyncio", shim)
    return shim


def replicator(replica, isr=None, in_sync=("p", "n2", "n3"), **stubs) -> Replicator:
    peers = {node: node for node in stubs}
    return Replicator(
        replica,
        "p",
        replica.epoch,
        peers,
        {n: f"inc-{n}" for n in in_sync},
        isr or Isr(True),
        Channels(**stubs),
    )


# ------------------------------------------------------------------ the deadline


def test_the_deadline_is_the_base_timeout_for_an_empty_call_and_grows_with_the_work():
    base = limits.REPLICATION_TIMEOUT_S
    rate = limits.REPLICATION_APPLY_BYTES_PER_S_MIN
    ef = limits.DEFAULT_EF_CONSTRUCTION
    assert replication_timeout_s(0, ef) == base
    assert replication_timeout_s(0, 4 * ef) == base
    assert replication_timeout_s(rate, ef) == pytest.approx(base + 1.0)
    assert replication_timeout_s(3 * rate, ef) == pytest.approx(base + 3.0)
    assert replication_timeout_s(rate, 2 * ef) == pytest.approx(base + 2.0)
    assert replication_timeout_s(rate, ef // 2) == pytest.approx(base + 1.0)  # never below the rate


def test_each_call_carries_the_deadline_of_its_bytes():
    async def go():
        r = FakeReplica(3)
        n2 = Stub(reply(OK, 4))
        rep = replicator(r, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([], 3, 1)
        await rep.replicate([b"x" * limits.REPLICATION_APPLY_BYTES_PER_S_MIN], 3, 1)
        (_, t0), (req, t1) = n2.calls
        assert t0 == limits.REPLICATION_TIMEOUT_S
        expected = replication_timeout_s(limits.REPLICATION_APPLY_BYTES_PER_S_MIN, SPEC.ef_construction)
        assert t1 == pytest.approx(expected) and t1 > t0
        assert req.ref.collection_id == "c" and req.ref.shard == 0
        assert (req.epoch, req.primary, req.prev_lsn, req.prev_epoch) == (1, "p", 3, 1)
        assert list(req.entries) == [b"x" * limits.REPLICATION_APPLY_BYTES_PER_S_MIN]

    asyncio.run(go())


# ------------------------------------------------------------------ acknowledgement and in_sync


def test_every_in_sync_follower_acknowledges_before_replicate_returns():
    async def go():
        r = FakeReplica(5)
        n2, n3 = Stub(reply(OK, 6)), Stub(reply(OK, 6))
        isr = Isr(True)
        rep = replicator(r, isr, n2=n2, n3=n3)
        await rep.replicate([b"e6"], 5, 1)
        assert len(n2.calls) == len(n3.calls) == 1 and isr.calls == []
        assert set(rep.in_sync) == {"p", "n2", "n3"} and rep.in_sync_size() == 3
        assert not rep._catchups

    asyncio.run(go())


def test_only_a_primary_alone_in_sync_returns_without_calls():
    async def go():
        r = FakeReplica(1)
        n2 = Stub(reply(OK, 2))
        rep = replicator(r, in_sync=("p",), n2=n2)
        await rep.replicate([b"e2"], 1, 1)
        assert n2.calls == []

    asyncio.run(go())


def test_a_silent_follower_leaves_in_sync_in_etcd_before_the_write_is_acknowledged():
    async def go():
        r = FakeReplica(5)
        n2 = Stub(reply(OK, 6))
        n3 = Stub(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline"))
        gate = asyncio.Event()
        calls = []

        async def isr_change(node, incarnation):
            calls.append((node, incarnation))
            await gate.wait()
            return True

        rep = replicator(r, isr_change, n2=n2, n3=n3)
        write = asyncio.ensure_future(rep.replicate([b"e6"], 5, 1))
        while not calls and not write.done():
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert calls == [("n3", None)]
        assert not write.done()  # not acknowledged while etcd has not taken the change
        assert "n3" in rep.in_sync  # nor dropped in memory before etcd took it
        gate.set()
        await asyncio.wait_for(write, HANG_GUARD_S)
        assert set(rep.in_sync) == {"p", "n2"} and rep.in_sync_size() == 2
        assert "n3" in rep._catchups  # it is brought back by catch-up
        assert [list(req.entries) for req, _ in n3.calls] in ([[b"e6"]], [[b"e6"], []])  # + its probe
        rep.stop()

    asyncio.run(go())


def test_a_follower_without_an_address_is_removed_the_same_way():
    async def go():
        r = FakeReplica(1)
        isr = Isr(True)
        rep = replicator(r, isr, n2=Stub(reply(OK, 2)))
        rep.in_sync["n3"] = "inc-n3"  # in in_sync, but the map gave no address
        await rep.replicate([b"e2"], 1, 1)
        assert isr.calls == [("n3", None)] and set(rep.in_sync) == {"p", "n2"}
        rep.stop()

    asyncio.run(go())


def test_when_etcd_refuses_the_change_and_the_map_moved_the_write_is_not_committed(fast_sleep):
    async def go():
        r = FakeReplica(5)

        def map_moved(node, incarnation):
            r.role = "follower"

        isr = Isr(False, on_call=map_moved)
        rep = replicator(r, isr, n2=Stub(reply(OK, 6)), n3=Stub(rpc_error(grpc.StatusCode.UNAVAILABLE, "x")))
        with pytest.raises(NotCommitted):
            await rep.replicate([b"e6"], 5, 1)
        assert isr.calls == [("n3", None)]
        assert "n3" in rep.in_sync and not rep._catchups

    asyncio.run(go())


def test_when_etcd_refuses_the_change_the_write_waits_and_retries(fast_sleep):
    async def go():
        r = FakeReplica(5)
        n3 = Stub(rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))
        n2 = Stub(reply(OK, 6))
        isr = Isr(False, False, True)
        rep = replicator(r, isr, n2=n2, n3=n3)
        await rep.replicate([b"e6"], 5, 1)
        assert isr.calls == [("n3", None)] * 3
        assert len(n3.calls) == 3  # resent each round, not acknowledged without it
        assert len(n2.calls) == 1  # an acknowledged follower is not asked again
        assert fast_sleep.slept == [0.2, 0.2]
        assert set(rep.in_sync) == {"p", "n2"}
        rep.stop()

    asyncio.run(go())


def test_a_follower_that_answers_on_a_retry_stays_in_sync(fast_sleep):
    async def go():
        r = FakeReplica(5)
        n3 = Stub(rpc_error(grpc.StatusCode.UNAVAILABLE, "blip"), reply(OK, 6))
        isr = Isr(False)
        rep = replicator(r, isr, n2=Stub(reply(OK, 6)), n3=n3)
        await rep.replicate([b"e6"], 5, 1)
        assert set(rep.in_sync) == {"p", "n2", "n3"} and len(n3.calls) == 2

    asyncio.run(go())


@pytest.mark.parametrize("change", ["role", "epoch", "stopped"])
def test_a_replicator_that_is_not_current_commits_nothing(change):
    async def go():
        r = FakeReplica(1)
        n2 = Stub(reply(OK, 2))
        rep = replicator(r, n2=n2)
        if change == "role":
            r.role = "follower"
        elif change == "epoch":
            r.epoch = 2
        else:
            rep.stop()
        with pytest.raises(NotCommitted, match="epoch 1"):
            await rep.replicate([b"e2"], 1, 1)
        assert n2.calls == []

    asyncio.run(go())


def test_a_fenced_reply_stops_the_replicator(fast_sleep):
    async def go():
        r = FakeReplica(1)
        fenced = rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "epoch: epoch 1 is fenced: accepted 2")

        def second_call_map_moved(node, incarnation):
            if len(isr.calls) > 1:
                r.role = "follower"

        isr = Isr(False, on_call=second_call_map_moved)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=Stub(fenced))
        with pytest.raises(NotCommitted):
            await rep.replicate([b"e2"], 1, 1)
        assert rep.stopped and len(isr.calls) == 1  # stopped at once, not after the map moved
        rep._start_catchup("n2")  # a stopped replicator starts nothing
        assert not rep._catchups

    asyncio.run(go())


def test_other_refusals_do_not_stop_the_replicator():
    async def go():
        r = FakeReplica(1)
        for error in (
            rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "entries: entry 0 has LSN 9, expected 2"),
            rpc_error(grpc.StatusCode.UNAVAILABLE, "fenced"),
        ):
            rep = replicator(r, Isr(True), in_sync=("p", "n2"), n2=Stub(error))
            await rep.replicate([b"e2"], 1, 1)
            assert not rep.stopped and set(rep.in_sync) == {"p"}
            rep.stop()

    asyncio.run(go())


@pytest.mark.parametrize("status", [BEHIND, DIVERGED])
def test_a_follower_that_does_not_take_the_entries_is_removed(status):
    async def go():
        n = limits.INLINE_CATCHUP_ENTRIES_MAX + 5
        r = FakeReplica(n)
        isr = Isr(True)
        n2 = Stub(reply(status, n - limits.INLINE_CATCHUP_ENTRIES_MAX - 1 if status == BEHIND else n))
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([b"new"], n, 1)
        assert isr.calls == [("n2", None)] and set(rep.in_sync) == {"p"}
        rep.stop()

    asyncio.run(go())


# ------------------------------------------------------------------ inline catch-up


@pytest.mark.parametrize("gap", [1, 3, limits.INLINE_CATCHUP_ENTRIES_MAX])
def test_a_follower_a_little_behind_is_filled_inline(gap):
    async def go():
        n = limits.INLINE_CATCHUP_ENTRIES_MAX + 4
        r = FakeReplica(n, epochs=[1] * (n - 1) + [2])
        behind_at = n - gap
        n2 = Stub(reply(BEHIND, behind_at), reply(OK, n + 1))
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([b"new"], n, r.last_epoch)
        assert isr.calls == [] and set(rep.in_sync) == {"p", "n2"}
        (first, _), (second, timeout) = n2.calls
        assert (first.prev_lsn, list(first.entries)) == (n, [b"new"])
        assert second.prev_lsn == behind_at
        assert second.prev_epoch == r.entry_epoch(behind_at) != r.last_epoch
        assert list(second.entries) == [*r.log[behind_at:], b"new"]
        assert timeout == replication_timeout_s(sum(map(len, second.entries)), SPEC.ef_construction)
        assert r.reads == [(behind_at + 1, gap, limits.REPLICATION_CALL_BYTES_MAX)]

    asyncio.run(go())


def test_a_follower_too_far_behind_is_not_filled_inline():
    async def go():
        n = limits.INLINE_CATCHUP_ENTRIES_MAX + 4
        r = FakeReplica(n)
        n2 = Stub(reply(BEHIND, n - limits.INLINE_CATCHUP_ENTRIES_MAX - 1), reply(OK, n + 1))
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([b"new"], n, 1)
        assert len(n2.calls) == 1 and r.reads == []
        assert isr.calls == [("n2", None)]
        rep.stop()

    asyncio.run(go())


@pytest.mark.parametrize("problem", ["too big for one call", "trimmed"])
def test_a_gap_that_cannot_be_read_whole_is_left_to_catch_up(problem):
    async def go():
        r = FakeReplica(10)
        if problem == "trimmed":
            r.trimmed = True
        else:
            r.read_limit = 2  # bytes_max reached after 2 of the 3 entries
        n2 = Stub(reply(BEHIND, 7), reply(OK, 11))
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([b"new"], 10, 1)
        assert len(n2.calls) == 1 and isr.calls == [("n2", None)]
        rep.stop()

    asyncio.run(go())


def test_a_follower_still_behind_after_the_fill_is_removed():
    async def go():
        r = FakeReplica(10)
        n2 = Stub(reply(BEHIND, 7), reply(BEHIND, 8))
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=n2)
        await rep.replicate([b"new"], 10, 1)
        assert len(n2.calls) == 2 and isr.calls == [("n2", None)]
        rep.stop()

    asyncio.run(go())


# ------------------------------------------------------------------ membership


def test_update_drops_nodes_no_longer_among_the_replicas_and_catches_up_new_ones(fast_sleep):
    async def go():
        r = FakeReplica(2)
        n2 = Stub(reply(OK, 2))
        gone = Stub(rpc_error(grpc.StatusCode.UNAVAILABLE, "down"))
        new = Stub(HANG)
        rep = replicator(r, in_sync=("p", "n2", "n3"), n2=n2, n3=gone, n4=new, n5=Stub(HANG))
        rep._start_catchup("n5")  # a catch-up of a replica that then moved away
        moved = rep._catchups["n5"]
        await asyncio.sleep(0)
        rep.update({"n2": "n2", "n4": "n4"}, ("p", "n2", "n4"))
        assert set(rep.in_sync) == {"p", "n2"}  # n3 no longer counts
        assert rep.in_sync_size() == 2
        assert set(rep._catchups) == {"n4", "n5"} and not rep._catchups["n4"].done()
        await asyncio.gather(moved, return_exceptions=True)
        assert moved.cancelled()
        rep.update({"n2": "n2", "n4": "n4"}, ("p", "n2", "n4"))  # nothing new: the same task
        task = rep._catchups["n4"]
        rep.update({"n2": "n2", "n4": "n4-new-address"}, ("p", "n2", "n4"))
        assert rep._catchups["n4"] is task and rep.peers["n4"] == "n4-new-address"
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        rep.stop()

    asyncio.run(go())


def test_update_keeps_the_primary_in_sync_whatever_the_replicas_say():
    async def go():
        rep = replicator(FakeReplica(0), in_sync=("p", "n2"), n2=Stub(reply(OK, 0)))
        rep.update({"n2": "n2"}, ("n2",))
        assert set(rep.in_sync) == {"p", "n2"}
        rep.stop()

    asyncio.run(go())


def test_stop_cancels_catch_ups_and_probes():
    async def go():
        never = asyncio.Event()

        class Hanging(Stub):
            async def Replicate(self, req, timeout):
                self.calls.append((req, timeout))
                await never.wait()

        r = FakeReplica(2)
        rep = replicator(r, in_sync=("p", "n2"), n2=Hanging(), n3=Hanging())
        rep.start()
        rep._start_catchup("n3")
        await asyncio.sleep(0.01)
        tasks = [*rep._probes.values(), *rep._catchups.values()]
        assert len(tasks) == 2 and not any(t.done() for t in tasks)
        rep.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert all(t.cancelled() for t in tasks) and rep.stopped

    asyncio.run(go())


# ------------------------------------------------------------------ probes at the start of an epoch


def test_a_new_primary_probes_its_in_sync_followers_as_writer_jobs():
    async def go():
        r = FakeReplica(4, epochs=[1, 1, 2, 2])
        agrees, disagrees = Stub(reply(OK, 4)), Stub(reply(DIVERGED, 5), HANG)
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2", "n3"), n2=agrees, n3=disagrees)
        rep.start()
        await asyncio.gather(*rep._probes.values())
        assert set(rep._probes) == {"n2", "n3"}
        assert r.jobs == ["probe", "probe"]
        (probe, _), *_ = agrees.calls
        assert (probe.prev_lsn, probe.prev_epoch, list(probe.entries)) == (4, 2, [])
        assert isr.calls == [("n3", None)]
        assert set(rep.in_sync) == {"p", "n2"} and "n3" in rep._catchups
        rep.stop()

    asyncio.run(go())


def test_a_probe_whose_removal_etcd_refused_keeps_the_follower():
    async def go():
        r = FakeReplica(2)
        isr = Isr(False)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=Stub(reply(DIVERGED, 3)))
        rep.start()
        await asyncio.gather(*rep._probes.values())
        assert isr.calls == [("n2", None)] and "n2" in rep.in_sync and not rep._catchups

    asyncio.run(go())


def test_a_probe_of_a_replicator_no_longer_current_sends_nothing():
    async def go():
        r = FakeReplica(2)
        n2 = Stub(reply(DIVERGED, 3))
        rep = replicator(r, Isr(True), in_sync=("p", "n2"), n2=n2)
        r.epoch = 2
        rep.start()
        await asyncio.gather(*rep._probes.values())
        assert n2.calls == [] and "n2" in rep.in_sync

    asyncio.run(go())


def test_a_failing_probe_is_logged_not_raised():
    async def go():
        r = FakeReplica(2)
        isr = Isr(True)

        async def broken(name, fn):
            raise RuntimeError("writer closed")

        r.exclusive = broken
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=Stub(reply(DIVERGED, 3)))
        rep.start()
        await asyncio.gather(*rep._probes.values())
        assert isr.calls == [] and "n2" in rep.in_sync

    asyncio.run(go())


# ------------------------------------------------------------------ catch-up against fakes


def test_catch_up_sends_the_log_in_calls_then_joins_holding_the_writer(monkeypatch, fast_sleep):
    monkeypatch.setattr(limits, "REPLICATION_ENTRIES_PER_CALL_MAX", 2)

    async def go():
        r = FakeReplica(7, epochs=[1, 1, 1, 2, 2, 3, 3])
        follower_end = [0]

        def take(req):
            if req.prev_lsn > follower_end[0]:
                return reply(BEHIND, follower_end[0], "inc-n2")
            follower_end[0] = req.prev_lsn + len(req.entries)
            return reply(OK, follower_end[0], "inc-n2")

        n2 = Stub(take)
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert rep.in_sync == {"p": "inc-p", "n2": "inc-n2"}
        assert isr.calls == [("n2", "inc-n2")]
        assert r.jobs == ["join"]
        sent = [(req.prev_lsn, req.prev_epoch, len(req.entries)) for req, _ in n2.calls]
        # probe (behind at 0), log in calls of 2 until close enough, then the join: probe + rest
        assert sent[0] == (7, 3, 0)
        assert sent[1] == (0, 0, 2) and sent[2] == (2, 1, 2)
        assert sent[3] == (4, 2, 2)
        assert sent[4:] == [(7, 3, 0), (6, 3, 1)]
        assert follower_end[0] == 7
        assert all(b == limits.REPLICATION_CALL_BYTES_MAX for _, _, b in r.reads)

    asyncio.run(go())


def test_catch_up_of_a_diverged_or_ahead_follower_sends_a_snapshot(fast_sleep):
    async def go():
        for first in (reply(DIVERGED, 3), reply(OK, 9)):
            r = FakeReplica(4)
            n2 = Stub(first, reply(OK, 4, "inc-n2"))
            n2.snapshot_answer = reply(OK, 4, "inc-n2")
            isr = Isr(True)
            rep = replicator(r, isr, in_sync=("p",), n2=n2)
            rep.update({"n2": "n2"}, ("p", "n2"))
            await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
            assert len(n2.snapshots) >= 1
            chunks = n2.snapshots[0]
            assert [c.lsn for c in chunks] == [4, 4] and chunks[0].keys == []
            assert all(c.epoch == 1 and c.next_label == 7 and c.ref.collection_id == "c" for c in chunks)
            assert list(chunks[1].keys) == [b"v/a", b"p/a"] and list(chunks[1].values) == [b"row-a", b"{}"]
            assert isr.calls == [("n2", "inc-n2")] and "n2" in rep.in_sync

    asyncio.run(go())


def test_catch_up_sends_a_snapshot_when_the_log_no_longer_reaches_back(fast_sleep):
    async def go():
        r = FakeReplica(4)
        r.trimmed = True
        n2 = Stub(reply(BEHIND, 0), reply(OK, 4, "inc-n2"))
        n2.snapshot_answer = reply(OK, 4, "inc-n2")
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert len(n2.snapshots) == 1 and "n2" in rep.in_sync

    asyncio.run(go())


def test_catch_up_retries_with_backoff_until_the_follower_answers(fast_sleep):
    async def go():
        r = FakeReplica(2)
        down = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
        n2 = Stub(down, down, down, down, down, down, down, reply(OK, 2, "inc-n2"))
        isr = Isr(False, True)  # etcd refuses the first join
        rep = replicator(r, isr, in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert "n2" in rep.in_sync and isr.calls == [("n2", "inc-n2")] * 2
        assert fast_sleep.slept[:6] == [0.1, 0.2, 0.4, 0.8, 1.6, primary.CATCHUP_BACKOFF_S_MAX]
        assert max(fast_sleep.slept) == primary.CATCHUP_BACKOFF_S_MAX

    asyncio.run(go())


def test_catch_up_ends_when_the_replicator_is_no_longer_current(fast_sleep):
    async def go():
        r = FakeReplica(2)
        n2 = Stub(reply(BEHIND, 0))
        rep = replicator(r, Isr(True), in_sync=("p",), n2=n2)
        r.role = "follower"
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert len(n2.calls) == 1 and "n2" not in rep.in_sync  # the probe, then NotCommitted

    asyncio.run(go())


def test_catch_up_of_a_peer_that_left_stops():
    async def go():
        r = FakeReplica(2)
        rep = replicator(r, Isr(True), in_sync=("p",))
        rep.peers["n2"] = "n2"
        rep.channels = Channels()
        rep._start_catchup("n2")
        rep.peers.pop("n2")
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert rep.channels.asked == []
        assert await rep._bring_up_to_date("n2", join=False) is None

    asyncio.run(go())


def test_a_snapshot_stream_that_fails_to_read_fails_the_call():
    async def go():
        r = FakeReplica(2)

        def broken_chunks():
            yield 2, 1, 3, []
            raise OSError("read error")

        r.snapshot_chunks = broken_chunks
        n2 = Stub(reply(OK, 0))
        rep = replicator(r, in_sync=("p",), n2=n2)
        with pytest.raises(OSError, match="read error"):
            await rep._send_snapshot(n2)

    asyncio.run(go())


def test_a_snapshot_stream_that_ends_early_stops_the_reader():
    async def go():
        r = FakeReplica(2)
        produced, closed = [], threading.Event()

        def many_chunks():
            try:
                for i in range(100):
                    produced.append(i)
                    yield 2, 1, 3, [(b"v/%d" % i, b"x")]
            finally:
                closed.set()

        r.snapshot_chunks = many_chunks

        class Refusing(Stub):
            async def InstallSnapshot(self, stream, timeout):
                async for _ in stream:
                    raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "epoch: fenced")

        n2 = Refusing(reply(OK, 0))
        rep = replicator(r, in_sync=("p",), n2=n2)
        with pytest.raises(grpc.aio.AioRpcError):
            await rep._send_snapshot(n2)
        assert await asyncio.to_thread(closed.wait, HANG_GUARD_S)  # the reader thread stopped
        assert len(produced) < 100  # ... without reading the whole shard

    asyncio.run(go())


# ------------------------------------------------------------------ against real replicas


def batch(ids, seed=0):
    vecs = np.random.default_rng(seed).normal(size=(len(ids), DIM)).astype("<f4")
    return validation.write_batch(ids, vecs.tobytes(), len(ids), DIM, [b"{}"] * len(ids), [], DIM)


def open_replica(path, incarnation, **opts) -> ShardReplica:
    r = ShardReplica(str(path), SPEC, ShardOptions(threads=1, **opts))
    r.load()
    r.incarnation = incarnation
    r.start()
    return r


class Loopback:
    """A follower ShardReplica behind a stub: what NodeService does with these calls."""

    def __init__(self, follower: ShardReplica) -> None:
        self.follower = follower
        self.calls: list[node_pb2.ReplicateRequest] = []
        self.snapshots = 0

    async def Replicate(self, req, timeout):
        self.calls.append(req)
        try:
            return await self.follower.append_replicated(req)
        except QuartzError as exc:
            raise rpc_error(status_of(exc)[0], str(exc)) from None

    async def InstallSnapshot(self, stream, timeout):
        self.snapshots += 1
        staging = None
        try:
            async for chunk in stream:
                if staging is None:
                    staging = self.follower.begin_snapshot(
                        chunk.epoch, chunk.lsn, chunk.lsn_epoch, chunk.next_label
                    )
                if chunk.keys:
                    staging.write(list(chunk.keys), list(chunk.values))
            return await self.follower.install_snapshot(staging)
        except QuartzError as exc:
            raise rpc_error(status_of(exc)[0], str(exc)) from None
        finally:
            if staging is not None:
                staging.abort()


async def settled(r: ShardReplica) -> None:
    while not r.writer.idle:
        await asyncio.sleep(0.005)


async def primary_with_writes(path, n, isr, channels, epoch=1, **opts):
    p = open_replica(path, "inc-p", **opts)
    rep = Replicator(p, "p", epoch, {}, {"p": "inc-p"}, isr, channels)
    p.become_primary(epoch, rep)
    for i in range(n):
        await p.write(batch([f"w{i}-{j}" for j in range(3)], i), epoch=epoch)
    await settled(p)
    return p, rep


class StopOnFailedAttempt(logging.Handler):
    """Stops the replicator at the first failed catch-up attempt: in these tests every attempt
    must succeed, and a broken one would otherwise be retried until the hang guard."""

    def __init__(self, rep: Replicator) -> None:
        super().__init__(logging.INFO)
        self.rep, self.failures = rep, []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "catch-up attempt failed":
            self.failures.append(getattr(record, "error", ""))
            self.rep.stop()


async def wait_in_sync(rep: Replicator, node: str) -> None:
    task = rep._catchups[node]
    logger = logging.getLogger("quartz.replication")
    handler, level = StopOnFailedAttempt(rep), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        await asyncio.wait_for(asyncio.shield(task), HANG_GUARD_S)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.failures == []
    assert node in rep.in_sync


def test_catch_up_by_log_then_every_write_reaches_the_follower(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "REPLICATION_ENTRIES_PER_CALL_MAX", 2)

    async def go():
        f = open_replica(tmp_path / "f", "inc-f")
        f.become_follower(1, "p")
        link = Loopback(f)
        isr = Isr(True)
        p, rep = await primary_with_writes(tmp_path / "p", 5, isr, Channels(af=link))
        rep.update({"f": "af"}, ("p", "f"))
        await wait_in_sync(rep, "f")
        assert isr.calls == [("f", "inc-f")] and link.snapshots == 0
        assert f.log_end == p.log_end == 5 and f.label_of == p.label_of
        assert await p.write(batch(["after"], 9), epoch=1, min_in_sync=2) == 6
        assert f.log_end == 6 and f.label_of == p.label_of
        rep.stop()
        await f.close(checkpoint=False)
        await p.close(checkpoint=False)

    asyncio.run(go())


@pytest.mark.parametrize("why", ["trimmed log", "diverged follower"])
def test_catch_up_by_snapshot(tmp_path, why):
    async def go():
        f = open_replica(tmp_path / "f", "inc-f")
        if why == "diverged follower":
            for i in range(2):  # a history of its own: entries the primary does not have
                await f.write(batch([f"own{i}"], 50 + i))
        f.become_follower(1, "p")
        link = Loopback(f)
        isr = Isr(True)
        opts = {"checkpoint_every_points": 1, "log_retention_entries": 0} if why == "trimmed log" else {}
        p, rep = await primary_with_writes(tmp_path / "p", 3, isr, Channels(af=link), **opts)
        rep.update({"f": "af"}, ("p", "f"))
        await wait_in_sync(rep, "f")
        assert link.snapshots == 1 and isr.calls == [("f", "inc-f")]
        assert f.applied_lsn == p.applied_lsn == 3 and f.label_of == p.label_of
        assert await p.write(batch(["after"], 9), epoch=1, min_in_sync=2) == 4
        assert f.log_end == 4 and set(f.label_of) == set(p.label_of)
        rep.stop()
        await f.close(checkpoint=False)
        await p.close(checkpoint=False)

    asyncio.run(go())


def test_a_follower_of_a_newer_epoch_fences_the_primary(tmp_path):
    async def go():
        f = open_replica(tmp_path / "f", "inc-f")
        f.become_follower(2, "q")  # it accepted epoch 2 from another primary
        isr = Isr(False)
        p, rep = await primary_with_writes(tmp_path / "p", 0, isr, Channels(af=Loopback(f)))
        rep.peers["f"] = "af"
        rep.in_sync["f"] = "inc-f"
        with pytest.raises(Exception, match="not committed"):
            await p.write(batch(["x"]), epoch=1)
        assert rep.stopped and p.log_end == 0  # the uncommitted entry was truncated
        await f.close(checkpoint=False)
        await p.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ the shard map's word (membership)


def member(node_id: str = "p", **stubs) -> ClusterMember:
    """A ClusterMember without etcd: only what `_apply_role` uses."""
    m = object.__new__(ClusterMember)
    m.node_id = node_id
    m.keeper = types.SimpleNamespace(alive=lambda: True)
    m.channels = Channels(**stubs)
    m.isr_calls = []

    async def isr_change(cid, shard, epoch, node, incarnation):
        m.isr_calls.append((cid, shard, epoch, node, incarnation))
        return True

    m._isr_change = isr_change
    return m


def shard_record(epoch: int, primary: str, replicas, in_sync) -> schema.ShardRecord:
    return schema.ShardRecord(
        "coll",
        "c",
        0,
        DIM,
        "l2",
        8,
        32,
        32,
        epoch,
        primary,
        tuple(replicas),
        tuple(schema.InSync(n, f"inc-{n}") for n in in_sync),
    )


def view(*live: str) -> ClusterView:
    return ClusterView(nodes={n: schema.NodeRecord(n, f"addr-{n}", "proc") for n in live})


def test_the_map_makes_a_replica_primary_with_a_replicator_of_its_epoch(tmp_path):
    async def go():
        r = open_replica(tmp_path, "inc-p")
        m = member(**{"addr-n2": Stub(reply(OK, 0)), "addr-n4": Stub(HANG)})
        live = view("p", "n2", "n4")  # n3 has no lease: no address
        rec = shard_record(2, "p", ("p", "n2", "n3", "n4"), ("p", "n2"))
        m._apply_role(r, rec, live)
        rep = r.replicator
        assert r.role == "primary" and r.epoch == 2 and rep.epoch == 2 and rep.me == "p"
        assert rep.peers == {"n2": "addr-n2", "n4": "addr-n4"}
        assert rep.in_sync == {"p": "inc-p", "n2": "inc-n2"}
        assert r.roles.lease_ok is m.keeper.alive
        assert set(rep._probes) == {"n2"}  # started: in-sync followers are probed
        assert set(rep._catchups) == {"n4"}  # updated: the others are caught up
        assert await rep.isr_change("n2", None) is True
        assert m.isr_calls == [("c", 0, 2, "n2", None)]
        m._apply_role(r, rec, live)  # the same map again: the same replicator
        assert r.replicator is rep
        rep.stop()
        m._apply_role(r, rec, live)  # a stopped one (fenced) is replaced
        assert r.replicator is not rep and not r.replicator.stopped
        second = r.replicator
        m._apply_role(r, shard_record(3, "p", ("p", "n2"), ("p",)), live)  # a new epoch
        assert second.stopped and r.replicator.epoch == 3 and r.epoch == 3
        assert set(r.replicator.in_sync) == {"p"} and set(r.replicator.peers) == {"n2"}
        r.replicator.stop()
        await r.close(checkpoint=False)

    asyncio.run(go())


def test_the_map_makes_a_replica_follow_its_primary(tmp_path):
    async def go():
        r = open_replica(tmp_path, "inc-p")
        m = member()
        live = view("p", "n2")
        m._apply_role(r, shard_record(2, "p", ("p", "n2"), ("p",)), live)
        old = r.replicator
        calls = []
        real = r.become_follower
        r.become_follower = lambda epoch, primary: (calls.append((epoch, primary)), real(epoch, primary))
        rec = shard_record(3, "n2", ("p", "n2"), ("n2",))
        m._apply_role(r, rec, live)
        assert r.role == "follower" and r.epoch == 3 and r.primary_hint == "n2"
        assert old.stopped and r.replicator is None and calls == [(3, "n2")]
        m._apply_role(r, rec, live)  # nothing new
        assert calls == [(3, "n2")]
        m._apply_role(r, shard_record(4, "n2", ("p", "n2"), ("n2",)), live)
        m._apply_role(r, shard_record(4, "n3", ("p", "n3"), ("n3",)), live)
        assert calls == [(3, "n2"), (4, "n2"), (4, "n3")] and r.primary_hint == "n3"
        await r.close(checkpoint=False)

    asyncio.run(go())


# ------------------------------------------------------------------ catch-up sends committed entries only


def test_catch_up_sends_committed_entries_only(fast_sleep):
    async def go():
        r = FakeReplica(7)
        r.applied = 5  # entries 6 and 7 are a group in flight: they may still be truncated
        follower_end = [0]

        def take(req):
            if req.prev_lsn > follower_end[0]:
                return reply(BEHIND, follower_end[0], "inc-n2")
            follower_end[0] = req.prev_lsn + len(req.entries)
            return reply(OK, follower_end[0], "inc-n2")

        n2 = Stub(take)
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert follower_end[0] == 5 and "n2" in rep.in_sync
        sent = [(req.prev_lsn, len(req.entries)) for req, _ in n2.calls]
        assert sent[0] == (5, 0)  # the probe is at applied_lsn, not log_end
        assert all(prev + n <= 5 for prev, n in sent)
        assert set(r.uptos) == {5}

    asyncio.run(go())


def test_catch_up_waits_for_a_group_in_flight_that_the_follower_already_holds(fast_sleep):
    async def go():
        r = FakeReplica(7)
        r.applied = 5

        def take(req):
            if req.prev_lsn == 5:  # it holds 6 and 7 (sent by the write in flight)
                if fast_sleep.slept:
                    r.applied = 7  # the group committed meanwhile
                return reply(OK, 7, "inc-n2")
            return reply(OK, 7, "inc-n2")

        n2 = Stub(take)
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        assert "n2" in rep.in_sync and n2.snapshots == []
        assert fast_sleep.slept[0] == 0.05
        probes = [(req.prev_lsn, req.prev_epoch, len(req.entries)) for req, _ in n2.calls]
        assert probes[:2] == [(5, 1, 0), (5, 1, 0)] and r.reads == []

    asyncio.run(go())


def test_any_error_of_a_follower_is_no_acknowledgement():
    async def go():
        r = FakeReplica(1)
        isr = Isr(True)
        rep = replicator(r, isr, in_sync=("p", "n2"), n2=Stub(ValueError("Value out of range")))
        await rep.replicate([b"e2"], 1, 1)
        assert isr.calls == [("n2", None)] and not rep.stopped
        rep.stop()

    asyncio.run(go())


# ------------------------------------------------------------------ what the replicator logs


def test_what_the_replicator_logs(caplog, fast_sleep):
    caplog.set_level(logging.INFO, logger="quartz.replication")

    def records(message):
        return [r for r in caplog.records if r.getMessage() == message]

    async def go():
        r = FakeReplica(2)
        rep = replicator(
            r,
            Isr(True),
            in_sync=("p", "n2", "n3"),
            n2=Stub(rpc_error(grpc.StatusCode.UNAVAILABLE, "down")),
            n3=Stub(ValueError("Value out of range")),
        )
        await rep.replicate([b"e3"], 2, 1)
        rep.stop()
        failed = {x.node: x for x in records("replicate failed")}
        assert failed["n2"].error == "UNAVAILABLE: down"
        assert failed["n3"].error == "ValueError('Value out of range')"
        assert (
            failed["n2"].shard == "c/0"
            and failed["n2"].epoch == 1
            and failed["n2"].levelno == logging.WARNING
        )
        dropped = records("follower did not acknowledge; removing it from in_sync")
        assert sorted(x.node for x in dropped) == ["n2", "n3"]

        caplog.clear()
        r = FakeReplica(2)
        rep = replicator(r, Isr(True), in_sync=("p", "n2"), n2=Stub(reply(DIVERGED, 3), HANG))
        rep.start()
        await asyncio.gather(*rep._probes.values())
        (resync,) = records("in-sync follower disagrees with the new primary; resyncing it")
        assert resync.node == "n2" and resync.levelno == logging.WARNING
        rep.stop()

        caplog.clear()

        async def broken(name, fn):
            raise RuntimeError("writer closed")

        r = FakeReplica(2)
        r.exclusive = broken
        rep = replicator(r, Isr(True), in_sync=("p", "n2"), n2=Stub(reply(OK, 2)))
        rep.start()
        await asyncio.gather(*rep._probes.values())
        (probe,) = records("probe failed")
        assert probe.node == "n2" and probe.error == "RuntimeError('writer closed')"

        caplog.clear()
        r = FakeReplica(4)
        down = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
        n2 = Stub(down, reply(DIVERGED, 9), reply(OK, 4, "inc-n2"))
        n2.snapshot_answer = reply(OK, 4, "inc-n2")
        rep = replicator(r, Isr(True), in_sync=("p",), n2=n2)
        rep.update({"n2": "n2"}, ("p", "n2"))
        await asyncio.wait_for(rep._catchups["n2"], HANG_GUARD_S)
        (attempt,) = records("catch-up attempt failed")
        assert attempt.node == "n2" and "UNAVAILABLE" in attempt.error
        assert len(records("sending snapshot")) == 1
        (back,) = records("follower caught up; back in in_sync")
        assert back.node == "n2" and back.shard == "c/0"

    asyncio.run(go())


# ------------------------------------------------------------------ lag (quartz_replication_lag_*)


def test_lag_is_what_each_follower_has_not_acknowledged_and_since_when():
    r = FakeReplica(entries=4)
    rep = replicator(r, in_sync=("p", "n2"), n2=Stub(reply(OK)), n3=Stub(reply(OK)))
    t0 = rep.started_at
    # an in-sync follower holds the whole log; one outside in_sync is counted from nothing
    assert rep.lag(t0 + 2) == {"n2": (0, 0.0), "n3": (4, 2.0)}
    r.log.append(b"entry-5")
    r.epochs.append(r.epoch)
    assert rep.lag(t0 + 5)["n2"] == (1, 5.0)  # behind by one entry since it last held everything

    async def go():
        await rep.replicate([b"entry-5"], 4, r.epoch)

    asyncio.run(go())
    lag = rep.lag(rep.caught_up_at["n2"] + 1)
    assert lag["n2"] == (0, 0.0) and lag["n3"][0] == 5  # n3 is not in sync: not sent to
