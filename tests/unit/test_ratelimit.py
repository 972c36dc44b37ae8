"""router/ratelimit.py without etcd: the bucket arithmetic, and SharedLimiter against an
in-memory store with etcd's transaction semantics (compare on create/mod revision)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartz_cluster.errors import InvalidArgument, ResourceExhausted, Unavailable
from quartz_cluster.router import ratelimit
from quartz_cluster.router.ratelimit import (
    GRANT_S,
    QuotaExceeded,
    Rate,
    RateLimited,
    SharedLimiter,
    bucket_key,
    grant,
    refill,
    retry_after,
    settle,
    window_key,
    window_reset_after,
)

R100 = Rate(per_s=100, burst=100)

# ---- arithmetic ----


def test_refill_adds_elapsed_times_rate_and_caps_at_burst():
    assert refill(10, 1000.0, 1000.5, 100, 100) == (60, 1000.5)
    assert refill(10, 1000.0, 1002.0, 100, 100) == (100, 1002.0)
    assert refill(100, 1000.0, 1000.0, 100, 100) == (100, 1000.0)


def test_refill_clock_going_backwards_mints_nothing():
    tokens, at = refill(10, 1000.0, 990.0, 100, 100)
    assert (tokens, at) == (10, 1000.0)  # `at` stays: the interval is not counted again later
    assert refill(tokens, at, 1000.1, 100, 100) == pytest.approx((20, 1000.1))


@given(
    tokens=st.floats(0, 1e6),
    at=st.floats(0, 1e9),
    dt=st.floats(-1e6, 1e6),
    per_s=st.floats(1e-3, 1e6),
    burst=st.floats(1e-3, 1e6),
)
def test_refill_never_exceeds_burst_nor_mints_on_a_step_back(tokens, at, dt, per_s, burst):
    got, new_at = refill(tokens, at, at + dt, per_s, burst)
    assert got <= max(burst, 0)
    assert new_at >= at
    if dt <= 0:
        assert got <= tokens


def test_grant():
    assert grant(100, 1, 100) == 100 * GRANT_S  # about GRANT_S of the rate
    assert grant(5, 1, 100) == 5  # never more than there is
    assert grant(50, 30, 100) == 30  # at least what is needed
    assert grant(0.5, 1, 100) == 0  # not enough: nothing taken
    assert grant(1, 1, 100) == 1


@given(available=st.floats(0, 1e6), need=st.floats(0, 1e6), per_s=st.floats(1e-3, 1e6))
def test_grant_never_exceeds_tokens_and_covers_the_need(available, need, per_s):
    g = grant(available, need, per_s)
    assert 0 <= g <= available
    assert g == 0 or g >= need
    assert (g > 0) == (available >= need and available > 0)


def test_retry_after_is_exact():
    assert retry_after(0, 1, 100) == pytest.approx(0.01)
    assert retry_after(0.25, 1, 100) == pytest.approx(0.0075)
    assert retry_after(30, 65, 100) == pytest.approx(0.35)
    assert retry_after(65, 65, 100) == 0
    # after exactly that long, refill brings the bucket to the need
    wait = retry_after(12.5, 40, 10)
    assert refill(12.5, 0.0, wait, 10, 1000)[0] == pytest.approx(40)


def test_settle_fresh_bucket_starts_full():
    assert settle(None, 1000.0, R100) == (100, 1000.0)


def test_settle_changed_limits_clamp_and_apply_from_now():
    state = {"tokens": 80.0, "at": 1000.0, "rate": 100.0, "burst": 100.0}
    # the elapsed second refilled at the old rate (to the old burst), then the new burst clamps
    assert settle(state, 1001.0, Rate(10, 20)) == (20, 1001.0)
    # raised limits mint nothing at once: tokens grow at the new rate from now on
    assert settle(state, 1000.0, Rate(1000, 5000)) == (80, 1000.0)
    assert settle(state, 1000.1, Rate(1000, 5000)) == pytest.approx((90, 1000.1))


def test_rate_validates():
    for per_s, burst in [(0, 1), (-1, 1), (1, 0), (float("inf"), 1), (1, float("nan"))]:
        with pytest.raises(InvalidArgument, match="rate_limit"):
            Rate(per_s, burst)
    assert R100.describe() == "100/s (burst 100)"


def test_window_reset_after():
    # 2026-05-09 23:59:00 UTC
    t = 1778371140.0
    assert window_reset_after("day", t) == 60
    assert window_reset_after("hour", t) == 60
    assert window_reset_after("month", t) == 60 + 22 * 86400


# ---- SharedLimiter against a fake etcd ----


class Txn:
    """Builders shaped like aetcd's `client.transactions`."""

    class _Cmp:
        def __init__(self, kind, key):
            self.kind, self.key = kind, key

        def __eq__(self, other):
            return (self.kind, self.key, other)

    def mod(self, key):
        return self._Cmp("mod", key)

    def create(self, key):
        return self._Cmp("create", key)

    def put(self, key, value):
        return ("put", key, value)

    def get(self, key):
        return ("get", key)


class FakeStore:
    """etcd's KV with revisions and Txn semantics; `down` makes every call fail."""

    def __init__(self):
        self.kv: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, create_rev, mod_rev)
        self.rev = 1
        self.txns = 0
        self.down = False
        self.txn = Txn()

    async def client(self):
        if self.down:
            raise ConnectionError("etcd down")
        return self

    async def reset(self):
        pass

    async def get(self, key):
        if self.down:
            raise ConnectionError("etcd down")
        item = self.kv.get(key)
        return None if item is None else SimpleNamespace(value=item[0], mod_revision=item[2])

    async def transaction(self, compare, success, failure=()):
        if self.down:
            raise ConnectionError("etcd down")
        self.txns += 1
        await asyncio.sleep(0)  # a round trip: let other tasks run
        ok = True
        for kind, key, want in compare:
            item = self.kv.get(key)
            have = 0 if item is None else (item[1] if kind == "create" else item[2])
            ok = ok and have == want
        out = []
        for op in success if ok else failure:
            if op[0] == "put":
                self.rev += 1
                old = self.kv.get(op[1])
                self.kv[op[1]] = (op[2], old[1] if old else self.rev, self.rev)
                out.append(
                    SimpleNamespace(response_put=SimpleNamespace(header=SimpleNamespace(revision=self.rev)))
                )
            else:
                item = self.kv.get(op[1])
                out.append([] if item is None else [(item[0], SimpleNamespace(mod_revision=item[2]))])
        return ok, out

    def bucket(self, scope, op_class):
        return orjson.loads(self.kv[bucket_key(scope, op_class)][0])


class Clock:
    def __init__(self, t=1_000_000.0):
        self.t = t

    def __call__(self):
        return self.t


def run(coro):
    return asyncio.run(coro)


def test_hot_path_spends_a_grant_without_etcd():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        for _ in range(10):
            await lim.acquire("key/k1", "read", R100, 1)
        assert store.txns == 1  # one grant of rate * GRANT_S = 10 tokens
        assert store.bucket("key/k1", "read") == {"tokens": 90, "at": clock.t, "rate": 100, "burst": 100}
        await lim.acquire("key/k1", "read", R100, 1)
        assert store.txns == 2
        await lim.close()

    run(go())


def test_grants_are_single_flight():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await asyncio.gather(*(lim.acquire("key/k1", "read", R100, 1) for _ in range(10)))
        assert store.txns == 1
        await lim.close()

    run(go())


def test_refusal_names_the_limit_and_is_then_local():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("key/abc", "read", R100, 100)  # the whole burst
        with pytest.raises(RateLimited) as e:
            await lim.acquire("key/abc", "read", R100, 35)
        err = e.value
        assert isinstance(err, ResourceExhausted) and err.code == "RESOURCE_EXHAUSTED"
        assert (err.scope, err.op_class, err.limit, err.remaining) == ("key/abc", "read", R100, 0)
        assert err.retry_after_s == pytest.approx(0.35)
        assert str(err) == "rate limit of key abc: read 100/s (burst 100); retry in 0.35 s"
        txns = store.txns
        clock.t += 0.2  # still refused, without asking etcd
        with pytest.raises(RateLimited) as e:
            await lim.acquire("key/abc", "read", R100, 35)
        assert e.value.retry_after_s == pytest.approx(0.15)
        assert e.value.remaining == 20
        assert store.txns == txns
        clock.t += 0.1500001  # (unix times have a resolution of ~2e-7 s)
        await lim.acquire("key/abc", "read", R100, 35)
        await lim.close()

    run(go())


def test_local_refusal_lasts_until_a_grant_is_there():
    """A refused cost of 1 waits for GRANT_S of the rate, not 1 token: one transaction per
    bucket per router per GRANT_S under abuse."""
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("key/k", "read", R100, 100)
        with pytest.raises(RateLimited) as e:
            await lim.acquire("key/k", "read", R100, 1)
        assert e.value.retry_after_s == pytest.approx(GRANT_S)
        txns = store.txns
        for _ in range(9):
            clock.t += 0.01
            with pytest.raises(RateLimited):
                await lim.acquire("key/k", "read", R100, 1)
        assert store.txns == txns
        clock.t += 0.0100001
        await lim.acquire("key/k", "read", R100, 1)
        await lim.close()

    run(go())


def test_cost_above_burst_is_invalid_not_rate_limited():
    async def go():
        lim = SharedLimiter(FakeStore(), Clock())
        with pytest.raises(InvalidArgument) as e:
            await lim.acquire("key/abc", "write", Rate(100, 500), 1000)
        assert "batch of 1000" in str(e.value) and "write 100/s (burst 500)" in str(e.value)
        with pytest.raises(InvalidArgument):
            await lim.acquire("key/abc", "write", R100, -1)
        with pytest.raises(InvalidArgument):
            await lim.acquire_all([("key/a", "write", R100, 1), ("tenant/t", "write", R100, 101)])

    run(go())


def test_two_routers_never_exceed_burst_plus_rate_times_time():
    store, clock = FakeStore(), Clock()

    async def go():
        routers = [SharedLimiter(store, clock), SharedLimiter(store, clock)]
        accepted = 0
        start = clock.t
        for step in range(3000):  # 3 s in 1 ms steps, 5 attempts per router per step
            clock.t = start + step * 0.001
            for lim in routers:
                for _ in range(5):
                    try:
                        await lim.acquire("tenant/t", "write", R100, 1)
                        accepted += 1
                    except RateLimited:
                        pass
        elapsed = clock.t - start
        assert accepted <= 100 + 100 * elapsed
        assert accepted >= 100 + 100 * elapsed - 2 * 100 * GRANT_S - 2  # at most a grant parked each
        for lim in routers:
            await lim.close()

    run(go())


def test_changed_limits_take_effect_on_the_next_grant():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("key/k", "read", R100, 1)
        lower = Rate(10, 20)
        for _ in range(9):  # the tokens held under the old limit are still spent
            await lim.acquire("key/k", "read", lower, 1)
        await lim.acquire("key/k", "read", lower, 1)  # a new grant: the new limit, clamped
        assert store.bucket("key/k", "read") == {"tokens": 19, "at": clock.t, "rate": 10, "burst": 20}
        await lim.acquire("key/k", "read", Rate(1, 5), 5)  # clamped to 5: all of them
        assert store.bucket("key/k", "read") == {"tokens": 0, "at": clock.t, "rate": 1, "burst": 5}
        # a refusal under changed limits records them too
        with pytest.raises(RateLimited) as e:
            await lim.acquire("key/k", "read", Rate(2, 4), 1)
        assert e.value.retry_after_s == pytest.approx(0.5)  # 1 token at 2/s
        assert store.bucket("key/k", "read") == {"tokens": 0, "at": clock.t, "rate": 2, "burst": 4}
        await lim.close()

    run(go())


def test_acquire_all_gives_back_what_it_took():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("tenant/t", "write", R100, 100)  # the tenant's bucket is empty
        await lim.acquire("key/k", "write", R100, 1)  # the key's: 9 tokens held
        held = lim._buckets[("key/k", "write")].held
        with pytest.raises(RateLimited) as e:
            await lim.acquire_all([("key/k", "write", R100, 5), ("tenant/t", "write", R100, 5)])
        assert e.value.scope == "tenant/t"
        assert lim._buckets[("key/k", "write")].held == held
        clock.t += 1
        await lim.acquire_all([("key/k", "write", R100, 5), ("tenant/t", "write", R100, 5)])
        assert lim._buckets[("key/k", "write")].held == held - 5
        await lim.close()

    run(go())


def test_contention_beyond_the_attempts_is_unavailable(monkeypatch):
    store, clock = FakeStore(), Clock()
    real = store.transaction

    async def meddling(compare, success, failure=()):
        key = bucket_key("key/k", "read")
        store.rev += 1
        store.kv[key] = (
            orjson.dumps({"tokens": 100, "at": clock.t, "rate": 100, "burst": 100}),
            1,
            store.rev,
        )
        return await real(compare, success, failure)

    store.transaction = meddling

    async def go():
        lim = SharedLimiter(store, clock)
        with pytest.raises(Unavailable):
            await lim.acquire("key/k", "read", R100, 1)
        assert store.txns == ratelimit.CAS_ATTEMPTS_MAX

    run(go())


def test_etcd_outage_limits_each_router_alone():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        store.down = True
        for _ in range(100):  # the local bucket starts full
            await lim.acquire("key/k", "read", R100, 1)
        with pytest.raises(RateLimited) as e:
            await lim.acquire("key/k", "read", R100, 1)
        assert e.value.retry_after_s == pytest.approx(0.01)
        store.down = False
        clock.t += ratelimit.OUTAGE_RETRY_S
        await lim.acquire("key/k", "read", R100, 1)  # back to etcd
        assert store.txns == 1
        await lim.close()

    run(go())


def test_idle_tokens_go_back_without_exceeding_burst(monkeypatch):
    monkeypatch.setattr(ratelimit, "IDLE_RETURN_S", 0.01)
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("key/k", "read", R100, 1)  # 10 granted, 9 held, central 90
        clock.t += 0.05  # central refills to 95
        for _ in range(20):
            await asyncio.sleep(0.01)
            if ("key/k", "read") not in lim._buckets:
                break
        assert store.bucket("key/k", "read")["tokens"] == 100  # 95 + 9, capped at the burst
        await lim.close()

    run(go())


def test_close_returns_held_tokens():
    store, clock = FakeStore(), Clock()

    async def go():
        lim = SharedLimiter(store, clock)
        await lim.acquire("key/k", "read", R100, 1)
        await lim.close()
        assert store.bucket("key/k", "read")["tokens"] == 99

    run(go())


# ---- quota windows ----


def test_window_counts_exactly_and_refuses_naming_the_quota():
    store, clock = FakeStore(), Clock(1778371140.0 - 3600)  # 2026-05-09 22:59 UTC

    async def go():
        lim = SharedLimiter(store, clock)
        counts = [await lim.acquire_window("tenant/t1", "calls_per_day", 100, "day") for _ in range(100)]
        assert counts == list(range(1, 101))
        txns = store.txns
        with pytest.raises(QuotaExceeded) as e:
            await lim.acquire_window("tenant/t1", "calls_per_day", 100, "day")
        assert store.txns == txns  # full is known locally: counts never fall within a window
        err = e.value
        assert isinstance(err, ResourceExhausted)
        assert (err.quota, err.current, err.limit, err.scope) == ("calls_per_day", 100, 100, "tenant/t1")
        assert str(err) == "quota calls_per_day of tenant t1 reached: 100 of 100 used today (UTC)"
        assert err.reset_after_s == 3660
        assert await lim.window_usage("tenant/t1", "calls_per_day", "day") == 100
        # a raised limit (plan upgrade) counts on
        assert await lim.acquire_window("tenant/t1", "calls_per_day", 1000, "day", cost=5) == 105
        clock.t += 3660  # the next UTC day
        assert await lim.window_usage("tenant/t1", "calls_per_day", "day") == 0
        assert await lim.acquire_window("tenant/t1", "calls_per_day", 100, "day") == 1
        assert orjson.loads(store.kv[window_key("tenant/t1", "calls_per_day", "day")][0]) == {
            "window": "2026-05-10",
            "count": 1,
        }
        with pytest.raises(InvalidArgument):
            await lim.acquire_window("tenant/t1", "calls_per_day", 100, "day", cost=101)
        with pytest.raises(ValueError):
            await lim.acquire_window("tenant/t1", "calls_per_day", 100, "week")
        store.down = True  # the quota is not counted, and not granted, without etcd
        with pytest.raises(Unavailable):
            await lim.acquire_window("tenant/t1", "calls_per_day", 100, "day")

    run(go())


def test_window_two_routers_share_the_count():
    store, clock = FakeStore(), Clock()

    async def go():
        a, b = SharedLimiter(store, clock), SharedLimiter(store, clock)

        async def hammer(lim):
            n = 0
            for _ in range(20):
                try:
                    await lim.acquire_window("tenant/t", "calls", 10, "day")
                    n += 1
                except QuotaExceeded as e:
                    assert e.current == 10
            return n

        got = await asyncio.gather(*(hammer(lim) for lim in (a, b, a, b)))
        assert sum(got) == 10

    run(go())
