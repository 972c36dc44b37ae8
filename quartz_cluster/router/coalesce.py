"""Opportunistic batching of searches bound for the same shard with the same parameters.

A query goes out at once while fewer than `inflight_max` calls for its key are in flight; when
that many are, queries for the key wait and leave together in the next call, as soon as one
returns. An idle router adds no latency; a busy one sends one node call carrying many queries
instead of many calls carrying one, which is what the per-call cost of gRPC in Python (a few
hundred microseconds on each side) makes worthwhile. Pure asyncio, no gRPC: unit-tested."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

INFLIGHT_PER_KEY_MAX = 1
BATCH_QUERIES_MAX = 256


@dataclass
class _Waiting(Generic[Item, Result]):
    item: Item
    size: int  # queries in this item
    future: asyncio.Future


@dataclass
class _Key:
    inflight: int = 0
    queue: list[_Waiting] = field(default_factory=list)


class Coalescer(Generic[Item, Result]):
    """send(items) must return one result per item, in order, or raise (every item of that
    call then gets the error)."""

    def __init__(self, inflight_max: int = INFLIGHT_PER_KEY_MAX, batch_max: int = BATCH_QUERIES_MAX) -> None:
        self.inflight_max, self.batch_max = inflight_max, batch_max
        self._keys: dict[Hashable, _Key] = {}
        self._tasks: set[asyncio.Task] = set()  # the running senders (the loop keeps weak refs only)
        self.calls = 0
        self.items = 0

    async def submit(
        self,
        key: Hashable,
        item: Item,
        size: int,
        send: Callable[[list[Item]], Awaitable[Sequence[Result]]],
    ) -> Result:
        state = self._keys.setdefault(key, _Key())
        waiting = _Waiting(item, size, asyncio.get_running_loop().create_future())
        state.queue.append(waiting)
        if state.inflight < self.inflight_max:
            state.inflight += 1
            task = asyncio.ensure_future(self._run(key, state, send))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await waiting.future

    def _take(self, state: _Key) -> list[_Waiting]:
        batch, total = [], 0
        while state.queue and (not batch or total + state.queue[0].size <= self.batch_max):
            w = state.queue.pop(0)
            if w.future.cancelled():  # its caller gave up (deadline, cancellation)
                continue
            batch.append(w)
            total += w.size
        return batch

    async def _run(self, key: Hashable, state: _Key, send) -> None:
        try:
            while batch := self._take(state):
                self.calls += 1
                self.items += len(batch)
                try:
                    results = await send([w.item for w in batch])
                    answers = list(zip(batch, results, strict=True))
                except BaseException as exc:  # every waiter of this call gets it
                    for w in batch:
                        if not w.future.done():
                            w.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for w, r in answers:
                    if not w.future.done():
                        w.future.set_result(r)
        finally:
            state.inflight -= 1
            if state.inflight == 0:
                # cancelled (the router is stopping): nobody is left to send what is queued
                for w in state.queue:
                    w.future.cancel()
                state.queue.clear()
                self._keys.pop(key, None)
