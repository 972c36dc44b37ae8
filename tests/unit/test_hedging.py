import asyncio

import pytest

from quartz_cluster.router.hedging import (
    HEDGE_DELAY_S_DEFAULT,
    HEDGE_DELAY_S_MIN,
    SAMPLES_MAX,
    SAMPLES_MIN,
    HedgeBudget,
    Latencies,
    hedged,
    size_class,
)


def run(coro):
    return asyncio.run(coro)


def call(value, delay_s=0.0, fail=False, log=None):
    async def go():
        try:
            await asyncio.sleep(delay_s)
        except asyncio.CancelledError:
            if log is not None:
                log.append(f"cancelled {value}")
            raise
        if fail:
            raise RuntimeError(value)
        return value

    return go


def test_fast_first_replica_needs_no_hedge():
    assert run(hedged(call("a"), call("b"), delay_s=1.0)) == ("a", False)


def test_slow_first_replica_is_hedged_and_the_loser_cancelled():
    log: list[str] = []
    assert run(hedged(call("a", 10.0, log=log), call("b"), delay_s=0.01)) == ("b", True)
    assert log == ["cancelled a"]


def test_a_failing_hedge_does_not_hide_a_good_first_answer():
    assert run(hedged(call("a", 0.05), call("b", fail=True), delay_s=0.01)) == ("a", True)


def test_both_failing_raises_the_first_error():
    with pytest.raises(RuntimeError, match="a"):
        run(hedged(call("a", 0.05, fail=True), call("b", fail=True), delay_s=0.01))


def test_fast_failure_is_not_hedged_but_raised():
    with pytest.raises(RuntimeError, match="a") as err:
        run(hedged(call("a", fail=True), call("b"), delay_s=1.0))
    assert err.value.hedge_sent is False  # the caller must still try the second replica


def test_errors_say_whether_the_hedge_was_tried():
    with pytest.raises(RuntimeError) as err:
        run(hedged(call("a", 0.05, fail=True), call("b", fail=True), delay_s=0.01))
    assert err.value.hedge_sent is True


def test_delay_follows_each_replicas_p95():
    lat = Latencies()
    assert lat.hedge_delay_s("n1") == HEDGE_DELAY_S_DEFAULT
    for i in range(100):
        lat.record("n1", 0.001 * (i + 1))  # 1..100 ms
        lat.record("n2", 0.0)
    assert 0.09 < lat.hedge_delay_s("n1") < 0.1
    assert lat.hedge_delay_s("n2") == HEDGE_DELAY_S_MIN
    # recomputed as samples come: a replica that turned slow gets a longer delay
    for _ in range(SAMPLES_MAX):
        lat.record("n2", 0.5)
    assert lat.hedge_delay_s("n2") == 0.5


def test_hedge_budget_caps_hedges_at_a_fraction_of_reads():
    steady = HedgeBudget(fraction=0.05, burst=2)
    sent = 0
    for _ in range(10_000):  # every read wants a hedge: a saturated machine
        steady.read()
        sent += steady.take()
    assert 0.04 * 10_000 <= sent <= 0.06 * 10_000 + 2
    # 1,000 reads slow at the same moment: each asks when its delay runs out, before any answer
    # is back; still only ~5 % may hedge
    burst = HedgeBudget(fraction=0.05, burst=2)
    for _ in range(1000):
        burst.read()
    assert sum(burst.take() for _ in range(1000)) == 52
    fresh = HedgeBudget(fraction=0.05, burst=2)
    assert [fresh.take() for _ in range(3)] == [True, True, False]  # the burst, then nothing


def test_a_refused_hedge_waits_for_the_first_replica():
    async def main():
        async def slow():
            await asyncio.sleep(0.05)
            return "first"

        async def never():
            raise AssertionError("the hedge was sent")

        return await hedged(slow, never, 0.001, may_hedge=lambda: False)

    assert asyncio.run(main()) == ("first", False)


def test_calls_are_hedged_against_calls_of_their_own_size():
    """A call of 100 queries is not slow next to calls of one query: each size class keeps its
    own p95 (a benchmark's batched pass was being hedged call after call)."""
    lat = Latencies()
    for _ in range(SAMPLES_MIN):
        lat.record(("n1", "search", size_class(1)), 0.002)
        lat.record(("n1", "search", size_class(100)), 0.040)
    assert lat.hedge_delay_s(("n1", "search", size_class(1))) == pytest.approx(0.002)
    assert lat.hedge_delay_s(("n1", "search", size_class(100))) == pytest.approx(0.040)
    assert lat.hedge_delay_s(("n1", "search", size_class(1000))) == HEDGE_DELAY_S_DEFAULT  # no history yet
    assert size_class(0) == size_class(1) == 1
    assert size_class(4) == size_class(7) != size_class(8)
    assert size_class(10**9) == size_class(1 << 12)
