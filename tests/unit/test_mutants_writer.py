"""Tests of node/shard/writer.py on its own (fake commit and after-job steps, no RocksDB), written
against its mutants (scripts/mutation.sh, docs/mutation.md). Every wait is bounded by a number of
event-loop turns, never by time: a mutant that leaves a caller unanswered fails the test at once
instead of hanging it until mutmut's timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

from quartz_cluster import limits
from quartz_cluster.errors import ResourceExhausted, Unavailable
from quartz_cluster.node.shard import writer as writer_mod
from quartz_cluster.node.shard.writer import ShardWriter

TURNS = 200  # event-loop turns the writer may take to answer (it needs a handful)


def run(coro) -> None:
    """asyncio.run without its clean-up of pending tasks: when a test fails, the writer may
    still be running (a mutant that swallows cancellation), and waiting for it would hang."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(coro)
    finally:
        loop.close()


async def turns(n: int = TURNS) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def answered(task: asyncio.Future):
    """The task's result, once it is done within TURNS turns of the loop (else the test fails)."""
    for _ in range(TURNS):
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done(), "the caller was never answered"
    return task.result()


async def refused(task: asyncio.Future) -> BaseException:
    for _ in range(TURNS):
        if task.done():
            break
        await asyncio.sleep(0)
    assert task.done(), "the caller was never answered"
    exc = task.exception()
    assert exc is not None, f"expected a refusal, got {task.result()!r}"
    return exc


class Item:
    def __init__(self, size: int = 1) -> None:
        self.size = size
        self.future = asyncio.get_running_loop().create_future()

    def size_bytes(self) -> int:
        return self.size


class Harness:
    """A writer whose commits are recorded and answered, and whose commit can be held."""

    def __init__(self, group_max: int = 4) -> None:
        self.groups: list[list[Item]] = []
        self.after = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.writer = ShardWriter(
            "c/9", self.commit, self.after_job, group_max, logging.getLogger("t.writer")
        )

    async def commit(self, group):
        await self.gate.wait()
        self.groups.append(group)
        for item in group:
            item.future.set_result(len(self.groups))

    async def after_job(self):
        self.after += 1


def test_jobs_run_in_order_and_answer_their_callers():
    async def go():
        h = Harness()
        h.writer.start()
        ran = []

        async def job(name):
            ran.append(name)
            return name.upper()

        async def failing():
            ran.append("f")
            raise ValueError("job failed")

        a = asyncio.ensure_future(h.writer.run("a", lambda: job("a")))
        f = asyncio.ensure_future(h.writer.run("f", failing))
        b = asyncio.ensure_future(h.writer.run("b", lambda: job("b")))
        assert await answered(a) == "A"
        exc = await refused(f)
        assert type(exc) is ValueError and str(exc) == "job failed"
        assert await answered(b) == "B"
        assert ran == ["a", "f", "b"] and h.after == 3
        assert h.writer.idle and h.writer.stopped is None
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


def test_the_job_queue_holds_exactly_its_bound_and_empties_as_jobs_run():
    async def go():
        h = Harness()
        h.writer.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()
            return "held"

        first = asyncio.ensure_future(h.writer.run("first", hold))
        await turns(5)  # running: it no longer counts as queued
        queued = [
            asyncio.ensure_future(h.writer.run(f"j{i}", hold)) for i in range(limits.WRITER_JOBS_QUEUED_MAX)
        ]
        await turns(5)
        assert not any(t.done() for t in queued)
        over = asyncio.ensure_future(h.writer.run("over", hold))
        exc = await refused(over)
        assert type(exc) is ResourceExhausted
        assert str(exc) == f"shard c/9 has {limits.WRITER_JOBS_QUEUED_MAX} jobs queued for its writer"
        gate.set()
        for t in (first, *queued):
            assert await answered(t) == "held"
        # every one of them left the queue: a full queue's worth is taken again
        again = [
            asyncio.ensure_future(h.writer.run(f"k{i}", hold)) for i in range(limits.WRITER_JOBS_QUEUED_MAX)
        ]
        for t in again:
            assert await answered(t) == "held"
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


def test_the_write_queue_holds_exactly_its_bound_and_empties_as_groups_commit():
    async def go():
        h = Harness(group_max=limits.WRITE_QUEUE_DEPTH_MAX)
        h.writer.start()
        h.gate.clear()
        head = Item()
        h.writer.enqueue_write(head)
        await turns(5)  # committing (held): it no longer counts as queued
        items = [Item() for _ in range(limits.WRITE_QUEUE_DEPTH_MAX)]
        for item in items:
            h.writer.enqueue_write(item)
        with pytest.raises(ResourceExhausted) as info:
            h.writer.enqueue_write(Item())
        assert str(info.value) == f"write queue of shard c/9 is full ({limits.WRITE_QUEUE_DEPTH_MAX} batches)"
        h.gate.set()
        for item in (head, *items):
            await answered(item.future)
        assert [len(g) for g in h.groups] == [1, limits.WRITE_QUEUE_DEPTH_MAX]
        more = [Item() for _ in range(limits.WRITE_QUEUE_DEPTH_MAX)]
        for item in more:
            h.writer.enqueue_write(item)
        for item in more:
            await answered(item.future)
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


def test_cancelling_the_writer_answers_the_job_in_flight_and_everything_queued():
    async def go():
        h = Harness()
        h.writer.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()

        running = asyncio.ensure_future(h.writer.run("hold", hold))
        await turns(5)
        queued_job = asyncio.ensure_future(h.writer.run("later", hold))
        await turns(5)
        queued_write = Item()
        h.writer.enqueue_write(queued_write)
        h.writer._task.cancel()
        for fut in (running, queued_job, queued_write.future):
            exc = await refused(fut)
            assert type(exc) is Unavailable and str(exc) == "shard c/9 is shutting down"
        assert h.writer.stopped == "the writer was cancelled" and h.writer.idle
        with pytest.raises(Unavailable) as info:
            h.writer.enqueue_write(Item())
        assert str(info.value) == "shard c/9 is out of service: the writer was cancelled"

    run(go())


def test_a_writer_stopped_for_good_answers_what_is_queued_and_refuses_what_comes():
    async def go():
        h = Harness()
        h.writer.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()
            return "done"

        running = asyncio.ensure_future(h.writer.run("hold", hold))
        await turns(5)
        queued_job = asyncio.ensure_future(h.writer.run("later", hold))
        await turns(5)
        queued_write = Item()
        h.writer.enqueue_write(queued_write)
        h.writer.stop_for_good("disk gone")
        for fut in (queued_job, queued_write.future):
            exc = await refused(fut)
            assert type(exc) is Unavailable and str(exc) == "shard c/9 is out of service: disk gone"
        assert h.writer.queue_empty
        gate.set()
        assert await answered(running) == "done"  # the job in flight runs to its end
        late = asyncio.ensure_future(h.writer.run("late", hold))
        exc = await refused(late)
        assert str(exc) == "shard c/9 is out of service: disk gone"
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


def test_a_job_that_gave_up_before_it_started_is_skipped():
    async def go():
        h = Harness()
        h.writer.start()
        gate = asyncio.Event()
        ran = []

        async def hold():
            ran.append("hold")
            await gate.wait()

        async def skipped():
            ran.append("skipped")

        first = asyncio.ensure_future(h.writer.run("hold", hold))
        await turns(5)
        second = asyncio.ensure_future(h.writer.run("skipped", skipped))
        await turns(5)
        second.cancel()
        await turns(5)
        gate.set()
        await answered(first)
        await turns()
        assert ran == ["hold"] and h.writer.idle
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


@pytest.mark.parametrize(
    ("ticks", "logged"),
    [((100.0, 105.0), None), ((100.0, 105.12345), 5.123)],
)
def test_a_job_is_slow_past_five_seconds_and_logged_to_the_millisecond(monkeypatch, caplog, ticks, logged):
    caplog.set_level(logging.INFO, logger="t.writer")

    async def go():
        h = Harness()
        h.writer.start()
        clock = iter(ticks)

        class Clock:
            @staticmethod
            def monotonic():
                return next(clock)

        async def job():
            return 1

        monkeypatch.setattr(writer_mod, "time", Clock)
        assert await answered(asyncio.ensure_future(h.writer.run("probe", job))) == 1
        monkeypatch.undo()
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())
    slow = [r for r in caplog.records if r.getMessage() == "slow writer job"]
    if logged is None:
        assert slow == []
    else:
        assert len(slow) == 1 and (slow[0].job, slow[0].seconds) == ("probe", logged)


def test_a_writer_not_started_or_closing_refuses_work():
    async def go():
        h = Harness()
        with pytest.raises(Unavailable) as info:
            h.writer.enqueue_write(Item())
        assert str(info.value) == "shard c/9 is closing"  # never started
        assert h.writer.queue_empty
        h.writer.start()
        gate = asyncio.Event()

        async def hold():
            await gate.wait()
            return "held"

        running = asyncio.ensure_future(h.writer.run("hold", hold))
        await turns(5)
        closing = asyncio.ensure_future(h.writer.close())
        await turns(5)
        assert not closing.done()  # it finishes the job in flight first
        with pytest.raises(Unavailable) as info:
            h.writer.enqueue_write(Item())
        assert str(info.value) == "shard c/9 is closing"
        late = asyncio.ensure_future(h.writer.run("late", hold))
        assert str(await refused(late)) == "shard c/9 is closing"
        gate.set()
        assert await answered(running) == "held"
        await answered(closing)
        assert h.writer.stopped is None

    run(go())


def test_a_job_whose_internal_call_was_cancelled_fails_alone():
    async def go():
        h = Harness()
        h.writer.start()

        async def cancelled_inside():
            raise asyncio.CancelledError  # e.g. grpc.aio, when a shared channel closes under a call

        async def fine():
            return "fine"

        exc = await refused(asyncio.ensure_future(h.writer.run("rpc", cancelled_inside)))
        assert type(exc) is Unavailable and str(exc) == "an internal call was cancelled"
        assert await answered(asyncio.ensure_future(h.writer.run("next", fine))) == "fine"
        assert h.writer.stopped is None
        await answered(asyncio.ensure_future(h.writer.close()))

    run(go())


def test_a_group_counts_the_bytes_of_every_batch_it_takes():
    async def go():
        groups = []

        async def commit(group):
            groups.append([item.size for item in group])
            for item in group:
                item.future.set_result(None)

        async def nothing():
            pass

        w = ShardWriter("c/9", commit, nothing, 8, logging.getLogger("t.writer"), group_bytes_max=100)
        items = [Item(n) for n in (10, 20, 50, 30, 40)]
        for item in items:  # queued before the loop runs: one group takes what fits
            w._queue.append(item)
            w._writes_queued += 1
        w.start()
        for item in items:
            await answered(item.future)
        assert groups == [[10, 20, 50], [30, 40]]
        await answered(asyncio.ensure_future(w.close()))

    run(go())


def test_an_idle_writer_cancelled_ends_cancelled_and_says_why():
    async def go():
        h = Harness()
        h.writer.start()
        task = h.writer._task
        assert task.get_name() == "writer-c/9"  # what a task dump shows
        await turns(5)
        task.cancel()
        await turns(5)
        assert task.cancelled()
        assert h.writer.stopped == "the writer was cancelled" and h.writer.idle

    run(go())


def test_closing_twice_is_harmless():
    async def go():
        h = Harness()
        h.writer.start()
        item = Item()
        h.writer.enqueue_write(item)
        await answered(asyncio.ensure_future(h.writer.close()))
        assert item.future.done()
        await answered(asyncio.ensure_future(h.writer.close()))
        with pytest.raises(Unavailable):
            h.writer.enqueue_write(Item())

    run(go())


def test_a_writer_with_nothing_to_do_is_idle():
    async def go():
        h = Harness()
        assert h.writer.idle and h.writer.queue_empty  # not started yet
        h.writer.start()
        await turns(5)
        assert h.writer.idle and h.writer.queue_empty and h.writer.stopped is None
        await answered(asyncio.ensure_future(h.writer.close()))
        assert h.writer.idle

    run(go())


def test_a_failing_commit_stops_the_writer_and_answers_its_group_and_the_queue():
    async def go():
        h = Harness()

        async def broken(group):
            await h.gate.wait()
            raise RuntimeError("bug in commit")

        h.writer._commit_group = broken
        h.gate.clear()
        h.writer.start()
        group = [Item(), Item()]
        for item in group:
            h.writer.enqueue_write(item)
        await turns(5)
        queued = Item()
        h.writer.enqueue_write(queued)
        h.gate.set()
        reason = "writer stopped: RuntimeError('bug in commit')"
        for item in (*group, queued):
            exc = await refused(item.future)
            assert type(exc) is Unavailable and str(exc) == f"shard c/9 is out of service: {reason}"
        assert h.writer.stopped == reason and h.writer.idle

    run(go())


def test_a_failing_after_job_step_stops_the_writer_and_answers_the_queue():
    async def go():
        h = Harness()
        gate = asyncio.Event()

        async def broken_after():
            await gate.wait()
            raise RuntimeError("bug in after_job")

        async def job():
            return "done"

        h.writer._after_job = broken_after
        h.writer.start()
        first = asyncio.ensure_future(h.writer.run("first", job))
        assert await answered(first) == "done"
        queued = Item()
        h.writer.enqueue_write(queued)
        gate.set()
        exc = await refused(queued.future)
        reason = "writer stopped: RuntimeError('bug in after_job')"
        assert type(exc) is Unavailable and str(exc) == f"shard c/9 is out of service: {reason}"
        assert h.writer.stopped == reason

    run(go())
