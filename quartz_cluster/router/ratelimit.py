"""Rate limits and quotas that hold across routers (DESIGN §12, ADR 15).

Token buckets: one central bucket per (scope, op class) in etcd, under `/qz-limits/` (outside
`/quartz/`, which every router watches: buckets change many times a second). A router takes
*grants* from it by compare-and-swap, about `GRANT_S` of the rate at a time, and spends them
locally: the common call costs a dict lookup and two comparisons, no etcd round trip. The sum
spent by all routers stays within burst + rate * elapsed, because every token spent was taken
from the central bucket by a transaction, and the central bucket only refills by wall time.

Quota windows: a counter per (scope, name, period), incremented by compare-and-swap one call at
a time: exact across routers, one round trip per call; meant for small limits (the free plan's
100 calls a day).

The arithmetic is in small pure functions (`refill`, `grant`, `retry_after`, `settle`) with
unit tests; `SharedLimiter` is the etcd part.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from quartz_cluster import errors
from quartz_cluster.billing.plans import Rate
from quartz_cluster.errors import InvalidArgument, ResourceExhausted, Unavailable
from quartz_cluster.meta.store import EtcdStore

log = logging.getLogger("quartz.ratelimit")

ROOT = b"/qz-limits/"
BUCKETS = ROOT + b"buckets/"
WINDOWS = ROOT + b"windows/"

GRANT_S = 0.1  # a grant is about this much of the rate: bounds the tokens parked in one router
IDLE_RETURN_S = 1.0  # held tokens unused this long go back to the central bucket
CAS_ATTEMPTS_MAX = 16  # compare-and-swap conflicts before a call gives up (UNAVAILABLE)
CAS_BACKOFF_S_MAX = 0.005  # random pause after the second conflict in a row
ETCD_WAIT_S = 1.0  # a grant that takes longer counts as an etcd outage
OUTAGE_RETRY_S = 1.0  # during an etcd outage, each router limits alone; etcd is tried again after this
TOKENS_EPS = 1e-9  # float slack when comparing held tokens with a cost

PERIODS = {"hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d", "month": "%Y-%m"}
PERIOD_TEXT = {"hour": "this hour (UTC)", "day": "today (UTC)", "month": "this month (UTC)"}


# Rate (per_s, burst) is the plans' own: one definition of a limit (billing/plans.py)


def _scope_text(scope: str) -> str:
    return scope.replace("/", " ", 1)  # "key/abc" -> "key abc"


class RateLimited(ResourceExhausted):
    """A token bucket is empty: retry after `retry_after_s` (HTTP 429, gRPC RESOURCE_EXHAUSTED)."""

    def __init__(self, scope: str, op_class: str, limit: Rate, remaining: int, retry_after_s: float) -> None:
        self.scope = scope
        self.op_class = op_class
        self.limit = limit
        self.remaining = remaining
        self.retry_after_s = retry_after_s
        super().__init__(
            f"rate limit of {_scope_text(scope)}: {op_class} {limit.describe()}; "
            f"retry in {retry_after_s:.2f} s"
        )


class QuotaExceeded(errors.QuotaExceeded):
    """A quota window is used up (HTTP 403, gRPC RESOURCE_EXHAUSTED): it resets after
    `reset_after_s`."""

    def __init__(
        self, scope: str, quota: str, current: int, limit: int, period: str, reset_after_s: float
    ) -> None:
        self.scope = scope
        self.quota = quota
        self.current = current
        self.limit = limit
        self.period = period
        self.reset_after_s = reset_after_s
        super().__init__(
            f"quota {quota} of {_scope_text(scope)} reached: {current} of {limit} used "
            f"{PERIOD_TEXT.get(period, period)}"
        )


# ---- bucket arithmetic (pure) ----


def refill(tokens: float, at: float, now: float, per_s: float, burst: float) -> tuple[float, float]:
    """(tokens, at) as of `now`: elapsed wall time * per_s is added, up to burst. A clock behind
    `at` (another router's, or one stepped back) adds nothing and leaves `at` where it is, so no
    interval is ever counted twice and no token is minted."""
    if now <= at:
        return min(tokens, burst), at
    return min(burst, tokens + (now - at) * per_s), now


def grant(available: float, need: float, per_s: float, grant_s: float = GRANT_S) -> float:
    """Tokens a router takes from a central bucket holding `available` when it needs `need`:
    none if fewer than `need` are there, else `need` or about grant_s of the rate, whichever is
    more, never more than `available`."""
    if available < need:
        return 0.0
    return min(available, max(need, per_s * grant_s))


def retry_after(available: float, need: float, per_s: float) -> float:
    """Seconds until a bucket refilling at per_s from `available` holds `need`."""
    return 0.0 if available >= need else (need - available) / per_s


def settle(state: dict[str, float] | None, now: float, rate: Rate) -> tuple[float, float]:
    """(tokens, at) of a central bucket as of `now` under the limit `rate`. A bucket not yet
    stored starts full. The time since the last write refills at the limit stored with it (the
    one in force then); a changed limit applies from now on and clamps the tokens to its burst."""
    if state is None:
        return rate.burst, now
    tokens, at = refill(state["tokens"], state["at"], now, state["rate"], state["burst"])
    return min(tokens, rate.burst), at


def bucket_value(tokens: float, at: float, rate: Rate) -> bytes:
    return orjson.dumps({"tokens": tokens, "at": at, "rate": rate.per_s, "burst": rate.burst})


def window_label(period: str, now: float) -> str:
    return time.strftime(PERIODS[period], time.gmtime(now))


def window_reset_after(period: str, now: float) -> float:
    """Seconds from `now` until the UTC window of `period` containing it ends."""
    t = datetime.fromtimestamp(now, UTC)
    if period == "hour":
        end = t.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    elif period == "day":
        end = t.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    else:
        first = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (first + timedelta(days=32)).replace(day=1)
    return end.timestamp() - now


# ---- etcd part ----


class _Cas:
    """The last value and mod_revision this router saw of one etcd key (rev 0: absent)."""

    __slots__ = ("rev", "value")

    def __init__(self) -> None:
        self.value: bytes | None = None
        self.rev = 0


class _Bucket:
    """One router's side of a central bucket."""

    __slots__ = (
        "cas",
        "empty_until",
        "fb_at",
        "fb_tokens",
        "fetch",
        "held",
        "key",
        "seen_at",
        "seen_tokens",
        "used",
    )

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.held = 0.0  # tokens granted to this router and not spent
        self.used = False  # spent since the last sweep
        self.empty_until = 0.0  # refuse without asking etcd until this wall time
        self.seen_tokens = 0.0  # the central bucket as of the last refusal
        self.seen_at = 0.0
        self.fetch: asyncio.Task | None = None  # the one etcd operation in flight on this bucket
        self.cas = _Cas()
        self.fb_tokens = -1.0  # the local-only bucket used during an etcd outage (-1: unused)
        self.fb_at = 0.0


class _Window:
    __slots__ = ("cas", "lock")

    def __init__(self) -> None:
        self.cas = _Cas()
        self.lock = asyncio.Lock()


def bucket_key(scope: str, op_class: str) -> bytes:
    return BUCKETS + scope.encode() + b"/" + op_class.encode()


def window_key(scope: str, name: str, period: str) -> bytes:
    return WINDOWS + scope.encode() + b"/" + name.encode() + b"/" + period.encode()


class SharedLimiter:
    """Token buckets and quota windows shared by every router through etcd.

    `acquire` spends tokens this router holds; when it holds too few it takes a grant from the
    central bucket (one transaction, shared by every call waiting on that bucket), or refuses
    with `RateLimited`. After a refusal it refuses locally, without etcd, until the central
    bucket should hold a grant again. If etcd does not answer, each router limits alone (the
    same Rate, locally) and tries etcd again after OUTAGE_RETRY_S."""

    def __init__(self, store: EtcdStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._windows: dict[bytes, _Window] = {}
        self._outage_until = 0.0
        self._sweeper: asyncio.Task | None = None

    # -- token buckets --

    async def acquire(self, scope: str, op_class: str, rate: Rate, cost: float) -> None:
        """Take `cost` tokens from the bucket (scope, op_class) limited by `rate`, or raise
        RateLimited (retry later) or InvalidArgument (cost above the burst: never possible)."""
        if cost > rate.burst or cost < 0:
            raise self._too_big(scope, op_class, rate, cost)
        b = self._buckets.get((scope, op_class))
        if b is not None and b.held >= cost:  # the common path: no await, no allocation
            b.held -= cost
            b.used = True
            return
        await self._acquire_slow(scope, op_class, rate, cost)

    async def acquire_all(self, requests: list[tuple[str, str, Rate, float]]) -> None:
        """acquire() each (scope, op_class, rate, cost), all or nothing: if one refuses, the
        tokens already taken from the others are given back (locally) and the refusal raised."""
        for scope, op_class, rate, cost in requests:
            if cost > rate.burst or cost < 0:
                raise self._too_big(scope, op_class, rate, cost)
        taken: list[tuple[_Bucket, float, bool]] = []
        try:
            for scope, op_class, rate, cost in requests:
                b = self._buckets.get((scope, op_class))
                if b is not None and b.held >= cost:
                    b.held -= cost
                    b.used = True
                    taken.append((b, cost, False))
                else:
                    fallback = await self._acquire_slow(scope, op_class, rate, cost)
                    taken.append((self._buckets[(scope, op_class)], cost, fallback))
        except BaseException:
            for b, cost, fallback in taken:
                if fallback:
                    b.fb_tokens += cost
                else:
                    b.held += cost
            raise

    async def _acquire_slow(self, scope: str, op_class: str, rate: Rate, cost: float) -> bool:
        """acquire() when the tokens held do not cover `cost`. True if taken from the local
        outage bucket (etcd unreachable), False if from tokens granted by etcd."""
        b = self._buckets.get((scope, op_class))
        if b is None:
            if not scope or not op_class or "/" in op_class:
                raise ValueError(f"bad bucket scope {scope!r} / op class {op_class!r}")
            b = self._buckets[(scope, op_class)] = _Bucket(bucket_key(scope, op_class))
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep())
        while True:
            if b.held + TOKENS_EPS >= cost:
                b.held = max(0.0, b.held - cost)
                b.used = True
                return False
            now = self._clock()
            if now < b.empty_until:
                available, _ = refill(b.seen_tokens, b.seen_at, now, rate.per_s, rate.burst)
                wait = max(b.empty_until - now, retry_after(available, cost, rate.per_s))
                raise RateLimited(scope, op_class, rate, _whole(available), wait)
            if now < self._outage_until and b.fetch is None:
                self._spend_fallback(b, scope, op_class, rate, cost, now)
                return True
            if b.fetch is None:
                b.fetch = asyncio.create_task(self._fetch(b, rate, cost - b.held))
            error = await asyncio.shield(b.fetch)
            if error is not None:
                raise Unavailable(error)

    async def _fetch(self, b: _Bucket, rate: Rate, need: float) -> str | None:
        """Take a grant of at least `need` tokens for b (the only etcd operation in flight on b).
        On refusal sets b.empty_until; on an etcd failure starts an outage. Returns an error
        message for the waiters, or None."""
        try:

            def decide(value: bytes | None) -> tuple[bytes | None, tuple[float, float, float]]:
                now = self._clock()
                state = orjson.loads(value) if value is not None else None
                tokens, at = settle(state, now, rate)
                g = grant(tokens, need, rate.per_s)
                if g <= 0:
                    if state is not None and (state["rate"], state["burst"]) != (rate.per_s, rate.burst):
                        return bucket_value(tokens, at, rate), (0.0, tokens, now)
                    return None, (0.0, tokens, now)
                return bucket_value(tokens - g, at, rate), (g, tokens - g, now)

            g, tokens, now = await asyncio.wait_for(self._cas(b.cas, b.key, decide), ETCD_WAIT_S)
            if g > 0:
                b.held += g
                return None
            # refused: ask again only once the bucket holds the cost and a grant's worth
            b.seen_tokens, b.seen_at = tokens, now
            full = max(need, min(rate.burst, rate.per_s * GRANT_S))
            # strictly later than now, even when the wait is below the clock's resolution
            b.empty_until = max(now + retry_after(tokens, full, rate.per_s), math.nextafter(now, math.inf))
            return None
        except _Contended as exc:
            return str(exc)
        except Exception as exc:  # etcd unreachable or slow: limit locally for a while
            if self._clock() >= self._outage_until:
                log.warning("etcd rate-limit grant failed; limiting per router", extra={"error": repr(exc)})
            self._outage_until = self._clock() + OUTAGE_RETRY_S
            with contextlib.suppress(Exception):
                await self.store.reset()
            return None
        finally:
            b.fetch = None

    def _spend_fallback(self, b: _Bucket, scope: str, op_class: str, rate: Rate, cost: float, now: float):
        if b.fb_tokens < 0:
            b.fb_tokens, b.fb_at = rate.burst, now
        b.fb_tokens, b.fb_at = refill(b.fb_tokens, b.fb_at, now, rate.per_s, rate.burst)
        if b.fb_tokens + TOKENS_EPS < cost:
            wait = retry_after(b.fb_tokens, cost, rate.per_s)
            raise RateLimited(scope, op_class, rate, _whole(b.fb_tokens), wait)
        b.fb_tokens = max(0.0, b.fb_tokens - cost)

    async def _cas(self, cas: _Cas, key: bytes, decide) -> Any:
        """Read-decide-write one key: `decide(value or None)` returns (new value or None for no
        write, result). The write (or, for no write, the decision) stands only if the key is
        still as decided on; on a conflict the transaction returns the key as it is, and the
        decision is made again."""
        await self.store.client()
        t = self.store.txn
        for attempt in range(CAS_ATTEMPTS_MAX):
            new, result = decide(cas.value)
            guard = t.mod(key) == cas.rev if cas.rev else t.create(key) == 0
            ok, resp = await self.store.transaction(
                compare=[guard], success=[t.put(key, new)] if new is not None else [], failure=[t.get(key)]
            )
            if ok:
                if new is not None:
                    cas.value, cas.rev = new, resp[0].response_put.header.revision
                return result
            if resp[0]:
                cas.value, cas.rev = resp[0][0][0], resp[0][0][1].mod_revision
            else:
                cas.value, cas.rev = None, 0
            if attempt:
                await asyncio.sleep(random.uniform(0, CAS_BACKOFF_S_MAX))
        raise _Contended(f"{key.decode()} changed {CAS_ATTEMPTS_MAX} times while being updated; retry")

    def _too_big(self, scope: str, op_class: str, rate: Rate, cost: float) -> InvalidArgument:
        if cost < 0:
            return InvalidArgument(f"cost {cost:g} is negative")
        return InvalidArgument(
            f"a batch of {cost:g} exceeds the rate limit of {_scope_text(scope)}: {op_class} "
            f"{rate.describe()}; split it into batches of at most {rate.burst:g}"
        )

    # -- idle tokens --

    async def _sweep(self) -> None:
        """Every IDLE_RETURN_S: hand back the tokens of buckets not used since the last pass, and
        forget buckets with nothing held and nothing to remember."""
        while True:
            await asyncio.sleep(IDLE_RETURN_S)
            now = self._clock()
            for name, b in list(self._buckets.items()):
                if b.fetch is not None:
                    continue
                if b.used:
                    b.used = False
                elif b.held > TOKENS_EPS:
                    amount, b.held = b.held, 0.0
                    b.fetch = asyncio.create_task(self._give_back(b, amount))
                elif now >= b.empty_until and now >= self._outage_until:
                    del self._buckets[name]

    async def _give_back(self, b: _Bucket, amount: float) -> None:
        """Return unused tokens to the central bucket, never above its burst (tokens that do not
        fit are dropped, as a full bucket drops its refill)."""

        def decide(value: bytes | None) -> tuple[bytes | None, None]:
            if value is None:
                return None, None  # gone: nothing to return to
            state = orjson.loads(value)
            stored = Rate(state["rate"], state["burst"])
            tokens, at = settle(state, self._clock(), stored)
            return bucket_value(min(stored.burst, tokens + amount), at, stored), None

        try:
            await asyncio.wait_for(self._cas(b.cas, b.key, decide), ETCD_WAIT_S)
        except Exception as exc:  # the tokens are lost: the limit errs on the strict side
            log.info("returning idle tokens failed", extra={"error": repr(exc)})
        finally:
            b.fetch = None

    async def close(self) -> None:
        """Stop the sweeper and return every token held (best effort)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for b in list(self._buckets.values()):
            if b.fetch is not None:
                with contextlib.suppress(Exception):
                    await b.fetch
            if b.held > TOKENS_EPS:
                amount, b.held = b.held, 0.0
                b.fetch = asyncio.create_task(self._give_back(b, amount))
                await b.fetch

    # -- quota windows --

    async def acquire_window(self, scope: str, name: str, limit: int, period: str, cost: int = 1) -> int:
        """Count `cost` against the quota `name` of `scope` (at most `limit` per UTC `period`:
        "hour", "day" or "month"); returns the count after it. Raises QuotaExceeded if it would
        go over (nothing is counted), InvalidArgument if cost alone is over the limit."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {sorted(PERIODS)}, not {period!r}")
        if cost < 0:
            raise InvalidArgument(f"cost {cost} is negative")
        if cost > limit:
            raise InvalidArgument(
                f"a batch of {cost} exceeds the quota {name} of {_scope_text(scope)}: "
                f"{limit} {PERIOD_TEXT[period]}"
            )
        key = window_key(scope, name, period)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window()
        now = self._clock()
        label = window_label(period, now)
        seen = _window_count(w.cas.value, label)
        if seen + cost > limit:  # counts only grow within a window: refusing on a stale count is exact
            raise QuotaExceeded(scope, name, seen, limit, period, window_reset_after(period, now))

        def decide(value: bytes | None) -> tuple[bytes | None, tuple[bool, int]]:
            count = _window_count(value, label)
            if count + cost > limit:
                return None, (False, count)
            return orjson.dumps({"window": label, "count": count + cost}), (True, count + cost)

        try:
            async with w.lock:  # one CAS at a time per key in this router: contention only across routers
                ok, count = await self._cas(w.cas, key, decide)
        except Exception as exc:  # etcd unreachable or contended: the quota cannot be counted
            raise Unavailable(f"quota {name} of {_scope_text(scope)} cannot be counted: {exc}") from exc
        if not ok:
            raise QuotaExceeded(scope, name, count, limit, period, window_reset_after(period, now))
        return count

    async def window_usage(self, scope: str, name: str, period: str) -> int:
        """The count of the quota window `name` of `scope` for the current UTC `period`."""
        if period not in PERIODS:
            raise ValueError(f"period must be one of {sorted(PERIODS)}, not {period!r}")
        kv = await self.store.get(window_key(scope, name, period))
        return _window_count(kv.value if kv is not None else None, window_label(period, self._clock()))


def _whole(tokens: float) -> int:
    """Whole tokens, for `remaining` (19.9999999 after 0.2 s at 100/s is 20)."""
    return max(0, math.floor(tokens + 1e-6))


def _window_count(value: bytes | None, label: str) -> int:
    if value is None:
        return 0
    state = orjson.loads(value)
    return int(state["count"]) if state["window"] == label else 0


class _Contended(Exception):
    pass
