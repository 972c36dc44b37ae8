"""Hedged reads: if the replica asked first is slower than its recent p95, ask a second one too
and take whichever answers first (Dean & Barroso, "The Tail at Scale"). Pure asyncio: no gRPC."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TypeVar

import numpy as np

T = TypeVar("T")
SAMPLES_MAX = 256  # per replica address and call size class
SAMPLES_MIN = 20  # below this, the default delay is used
RECOMPUTE_EVERY = 32  # samples between two p95 computations (a percentile per call cost 6 % of the router)
HEDGE_DELAY_S_DEFAULT = 0.05
HEDGE_DELAY_S_MIN = 0.002
HEDGE_DELAY_S_MAX = 1.0


def size_class(items: int) -> int:
    """Calls are compared with calls of about their size: 1, 2-3, 4-7, ... items (a call of 100
    queries is slow next to calls of one, not slow for its size)."""
    return min(max(items, 1), 1 << 12).bit_length()


class Latencies:
    """Recent call latencies per key: a replica address and the call's size class."""

    def __init__(self) -> None:
        self._samples: dict[Hashable, deque[float]] = {}
        self._delay: dict[Hashable, float] = {}  # the p95 as of the last recomputation
        self._since: dict[Hashable, int] = {}  # samples recorded since then

    def record(self, key: Hashable, seconds: float) -> None:
        self._samples.setdefault(key, deque(maxlen=SAMPLES_MAX)).append(seconds)
        self._since[key] = self._since.get(key, RECOMPUTE_EVERY) + 1

    def hedge_delay_s(self, key: Hashable) -> float:
        samples = self._samples.get(key)
        if samples is None or len(samples) < SAMPLES_MIN:
            return HEDGE_DELAY_S_DEFAULT
        if self._since[key] >= RECOMPUTE_EVERY or key not in self._delay:
            p95 = float(np.percentile(samples, 95))
            self._delay[key] = min(max(p95, HEDGE_DELAY_S_MIN), HEDGE_DELAY_S_MAX)
            self._since[key] = 0
        return self._delay[key]


HEDGE_FRACTION_MAX = 0.05  # hedges per read, over the recent past
HEDGE_BURST = 20  # hedges allowed beyond the fraction (a cold start, a short hiccup)
BUDGET_WINDOW_CALLS = 2000  # the counts halve each time this many reads passed


class HedgeBudget:
    """Hedges add load; when a whole machine is slow (CPU saturated), hedging everything doubles
    the load and makes it slower still. So at most ~5 % of reads send a hedge (Dean & Barroso
    bound the extra load the same way); beyond that, reads go to one replica at a time."""

    def __init__(self, fraction: float = HEDGE_FRACTION_MAX, burst: int = HEDGE_BURST) -> None:
        self.fraction, self.burst = fraction, burst
        self.calls = 0.0
        self.hedges = 0.0

    def read(self) -> None:
        """Count a read that may want a hedge."""
        self.calls += 1
        if self.calls >= BUDGET_WINDOW_CALLS:
            self.calls /= 2
            self.hedges /= 2

    def take(self) -> bool:
        """At the moment a hedge would be sent: may it be? (Counted at once, so many slow reads
        at the same moment cannot all pass the check before any of them is counted.)"""
        if self.hedges < self.fraction * self.calls + self.burst:
            self.hedges += 1
            return True
        return False


async def hedged(
    first: Callable[[], Awaitable[T]],
    second: Callable[[], Awaitable[T]],
    delay_s: float,
    may_hedge: Callable[[], bool] = lambda: True,
) -> tuple[T, bool]:
    """Run first(); if it has not finished after delay_s and may_hedge() agrees, also run
    second(). Returns the first successful result and whether the hedge was sent. If both fail,
    raises the first's error. The loser is cancelled. A raised error carries `hedge_sent`:
    whether second() was tried, so the caller knows which replicas are left to try."""
    a = asyncio.ensure_future(first())
    done, _ = await asyncio.wait({a}, timeout=delay_s)
    if not done and not may_hedge():
        try:
            await a
        except BaseException as exc:
            _mark(exc, sent=False)
            raise
        return a.result(), False
    if done:
        if a.exception() is not None:
            _mark(a.exception(), sent=False)
        return a.result(), False  # raises a's error: the caller falls through to other replicas
    b = asyncio.ensure_future(second())
    pending = {a, b}
    error: BaseException | None = None
    try:
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is None:
                    return task.result(), True
                if task is a or error is None:
                    error = task.exception()
        assert error is not None
        _mark(error, sent=True)
        raise error
    finally:
        for task in (a, b):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


def _mark(error: BaseException, sent: bool) -> None:
    try:
        error.hedge_sent = sent  # type: ignore[attr-defined]
    except AttributeError:
        pass
