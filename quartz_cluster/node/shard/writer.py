"""The one writer of a shard replica: every change to its log, rows, in-memory state, checkpoint
or database handle is made by this one task, one job at a time (DESIGN §4, §5).

Jobs are client write batches (consecutive ones are committed together: group commit), a
primary's entries arriving at a follower, a snapshot install, a checkpoint, and the replicator's
probes and catch-up joins, which need the log to stand still. A job that was started runs to
completion whatever happens to whoever asked for it: a caller cancelled by its deadline stops
waiting, never the work, so no job can be half-done while the next one starts (a lock around a
thread can be released by a cancelled awaiter while the thread still runs; a task cannot).
A job whose caller gave up before it started is skipped.

The loop never dies silently: a job's failure is that job's answer; a failed checkpoint is
logged, reported in `health`, and retried with backoff while writes go on from the log; only an
unexpected error of the loop itself stops it, and then every queued and later write is refused
at once (UNAVAILABLE) so the coordinator can move the primary.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quartz_cluster import limits
from quartz_cluster.errors import ResourceExhausted, Unavailable


@dataclass(slots=True)
class Job:
    run: Callable[[], Awaitable[Any]]
    future: asyncio.Future
    name: str


class ShardWriter:
    """Runs jobs in order on one task. `commit_group(items)` commits client writes (a list of
    queued items whose futures it resolves); `after_job()` runs after every job (checkpoints)."""

    def __init__(
        self,
        name: str,
        commit_group: Callable[[list], Awaitable[None]],
        after_job: Callable[[], Awaitable[None]],
        group_max: int,
        log,
        group_bytes_max: int = limits.GROUP_COMMIT_BYTES_MAX,
    ) -> None:
        self.name, self.log = name, log
        self._commit_group, self._after_job, self._group_max = commit_group, after_job, group_max
        self._group_bytes_max = group_bytes_max
        self._queue: collections.deque = collections.deque()  # client items and Jobs, in order
        self._writes_queued = 0
        self._jobs_queued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.closing = False
        self.busy = False  # running a job or its after-job step
        self._current: list = []  # the job or group in flight
        self.stopped: str | None = None  # why the loop stopped for good (None while it runs)

    @property
    def queue_empty(self) -> bool:
        return not self._queue

    @property
    def idle(self) -> bool:
        return not self.busy and not self._queue

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"writer-{self.name}")

    # ---------------------------------------------------------------- submitting

    def _check_open(self) -> None:
        if self.stopped:
            raise Unavailable(f"shard {self.name} is out of service: {self.stopped}")
        if self.closing or self._task is None:
            raise Unavailable(f"shard {self.name} is closing")

    def enqueue_write(self, item) -> None:
        """Queue a client write (an item with a `future` and `size_bytes()`); refused when the
        queue is full. Consecutive writes are committed as one group of at most group_max items
        and group_bytes_max bytes (one item may exceed it alone)."""
        self._check_open()
        if self._writes_queued >= limits.WRITE_QUEUE_DEPTH_MAX:
            raise ResourceExhausted(
                f"write queue of shard {self.name} is full ({limits.WRITE_QUEUE_DEPTH_MAX} batches)"
            )
        self._writes_queued += 1
        self._queue.append(item)
        self._wake.set()

    async def run(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run fn as a job of the writer and return its result. Cancelling the caller does not
        cancel a job that started."""
        self._check_open()
        if self._jobs_queued >= limits.WRITER_JOBS_QUEUED_MAX:
            raise ResourceExhausted(
                f"shard {self.name} has {limits.WRITER_JOBS_QUEUED_MAX} jobs queued for its writer"
            )
        job = Job(fn, asyncio.get_running_loop().create_future(), name)
        self._jobs_queued += 1
        self._queue.append(job)
        self._wake.set()
        return await job.future

    async def close(self) -> None:
        """Finish every queued job, then stop."""
        self.closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    # ---------------------------------------------------------------- the loop

    async def _loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self.closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                head = self._queue.popleft()
                self.busy = True
                self._current = [head]  # answered by _stop whatever fails from here on
                if isinstance(head, Job):
                    self._jobs_queued -= 1
                    await self._run_job(head)
                else:
                    group, size = [head], head.size_bytes()
                    while (
                        len(group) < self._group_max
                        and self._queue
                        and not isinstance(self._queue[0], Job)
                        and size + self._queue[0].size_bytes() <= self._group_bytes_max
                    ):
                        group.append(self._queue.popleft())
                        size += group[-1].size_bytes()
                    self._writes_queued -= len(group)
                    live = [p for p in group if not p.future.done()]  # a caller may have given up
                    self._current = live
                    if live:
                        await self._guarded(self._commit_group(live))
                self._current = []
                await self._after_job()
                self.busy = False
        except asyncio.CancelledError:  # the writer itself is cancelled: the process is stopping
            self._stop(Unavailable(f"shard {self.name} is shutting down"), "the writer was cancelled")
            raise
        except Exception as exc:  # reported here, and to every caller from now on: not re-raised
            self.log.exception("shard writer stopped; shard out of service")
            reason = f"writer stopped: {exc!r}"
            self._stop(Unavailable(f"shard {self.name} is out of service: {reason}"), reason)

    def _stop(self, exc: Exception, reason: str) -> None:
        self.stopped = reason
        for item in self._current:  # the job or group in flight is answered too
            if not item.future.done():
                item.future.set_exception(exc)
        self._current = []
        self.fail_queued(exc)
        self.busy = False

    @staticmethod
    async def _guarded(work: Awaitable[Any]) -> Any:
        """Await a job's work. A CancelledError that is not the writer's own cancellation (grpc.aio
        raises it in a caller whose channel was closed under the call, e.g. a shared etcd client
        reset by another shard) is that job's failure, never the writer's end."""
        try:
            return await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            raise Unavailable("an internal call was cancelled") from None

    async def _run_job(self, job: Job) -> None:
        if job.future.done():
            return  # the caller gave up before it started
        t0 = time.monotonic()
        try:
            result = await self._guarded(job.run())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(exc)
        else:
            if not job.future.done():
                job.future.set_result(result)
        finally:
            elapsed = time.monotonic() - t0
            if elapsed > 5:
                self.log.info("slow writer job", extra={"job": job.name, "seconds": round(elapsed, 3)})

    def fail_queued(self, exc: Exception) -> None:
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(exc)
        self._writes_queued = self._jobs_queued = 0

    def stop_for_good(self, reason: str) -> None:
        """The shard cannot write any more (its state is no longer trusted): refuse everything."""
        self.stopped = reason
        self.fail_queued(Unavailable(f"shard {self.name} is out of service: {reason}"))
