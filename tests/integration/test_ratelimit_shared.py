"""Shared rate limits and quota windows (router/ratelimit.py, ADR 15) on a real etcd, with each
router a separate Python process: the sum granted by all of them stays within burst + rate x
time, a tenant hammering its limit does not slow another, and a quota window counts exactly.

The rate bounds do not depend on machine speed: 100 tokens/s is far below what one core can
attempt, so the limiter, not the machine, sets the figure."""

from __future__ import annotations

import asyncio
import multiprocessing
import time

import pytest

from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.router.ratelimit import GRANT_S, QuotaExceeded, Rate, RateLimited, SharedLimiter

pytestmark = pytest.mark.integration

RATE = Rate(per_s=100, burst=100)
ROUTERS = 2
TASKS = 8
DURATION_S = 3.0
OTHER_EVERY_S = 0.05  # the other tenant's pace: 20/s per router, well within its own 100/s
# Refill counts wall time (time.time); elapsed is measured with time.monotonic. NTP slews the
# wall clock by at most 500 ppm against the monotonic one: the bound allows twice that.
CLOCK_RATE_SLACK = 1e-3
JOIN_TIMEOUT_S = 60.0


def _run_workers(target, args_list) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(args_list))
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(barrier, results, *args)) for args in args_list]
    for p in procs:
        p.start()
    try:
        out = [results.get(timeout=JOIN_TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for item in out:
        if "error" in item:
            raise AssertionError(f"worker failed: {item['error']}")
    return out


# ---- token buckets ----


def _bucket_worker(barrier, results, endpoint: str, scope: str, other_scope: str) -> None:
    try:
        results.put(asyncio.run(_bucket_main(barrier, endpoint, scope, other_scope)))
    except Exception as exc:
        results.put({"error": repr(exc)})


async def _bucket_main(barrier, endpoint: str, scope: str, other_scope: str) -> dict:
    store = EtcdStore(endpoint)
    await store.client()  # connected before the clock starts
    lim = SharedLimiter(store)
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
    counts = {"accepted": 0, "refused": 0, "other_accepted": 0, "other_refused": 0}
    t0 = time.monotonic()
    end = t0 + DURATION_S

    async def hammer() -> None:
        while time.monotonic() < end:
            try:
                await lim.acquire(scope, "read", RATE, 1)
                counts["accepted"] += 1
            except RateLimited:
                counts["refused"] += 1
            await asyncio.sleep(0)

    async def other_tenant() -> None:
        while time.monotonic() < end:
            try:
                await lim.acquire(other_scope, "read", RATE, 1)
                counts["other_accepted"] += 1
            except RateLimited:
                counts["other_refused"] += 1
            await asyncio.sleep(OTHER_EVERY_S)

    await asyncio.gather(*(hammer() for _ in range(TASKS)), other_tenant())
    t1 = time.monotonic()  # every counted acceptance happened before this
    await lim.close()
    await store.close()
    return {**counts, "t0": t0, "t1": t1}


def test_routers_share_one_bucket(etcd):
    out = _run_workers(
        _bucket_worker, [(etcd.endpoint, "tenant/hammered", "tenant/quiet") for _ in range(ROUTERS)]
    )
    accepted = sum(o["accepted"] for o in out)
    # both clocks are CLOCK_MONOTONIC, one per machine: the workers' union interval
    elapsed = max(o["t1"] for o in out) - min(o["t0"] for o in out)
    # Every token spent was taken from the central bucket by a transaction; it starts full
    # (burst) when first written, inside the interval, and refills by wall time only up to the
    # last grant, also inside it. Tokens held but not spent are not counted. So:
    upper = RATE.burst + RATE.per_s * elapsed * (1 + CLOCK_RATE_SLACK)
    lower = 0.9 * RATE.per_s * elapsed
    print(
        f"\n{ROUTERS} routers x {TASKS} tasks, {elapsed:.3f} s: accepted {accepted} "
        f"(per router {[o['accepted'] for o in out]}, refused {sum(o['refused'] for o in out)}); "
        f"bounds [{lower:.1f}, {upper:.1f}]; without the burst {accepted - RATE.burst:.0f} = "
        f"{(accepted - RATE.burst) / elapsed:.1f}/s; at most {ROUTERS} x {RATE.per_s * GRANT_S:g} "
        f"tokens parked at the end; other tenant accepted "
        f"{sum(o['other_accepted'] for o in out)}, refused {sum(o['other_refused'] for o in out)}"
    )
    assert accepted <= upper
    assert accepted >= lower
    assert all(o["accepted"] > 0 for o in out)  # both routers took grants
    assert sum(o["other_refused"] for o in out) == 0
    assert sum(o["other_accepted"] for o in out) > 0


# ---- quota windows ----


def _window_worker(barrier, results, endpoint: str, scope: str) -> None:
    try:
        results.put(asyncio.run(_window_main(barrier, endpoint, scope)))
    except Exception as exc:
        results.put({"error": repr(exc)})


async def _window_main(barrier, endpoint: str, scope: str) -> dict:
    store = EtcdStore(endpoint)
    await store.client()
    lim = SharedLimiter(store)
    await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
    accepted = 0
    currents: list[int] = []
    messages: list[str] = []

    async def race() -> None:
        nonlocal accepted
        while True:
            try:
                await lim.acquire_window(scope, "calls_per_day", 10, "day", 1)
                accepted += 1
            except QuotaExceeded as exc:
                currents.append(exc.current)
                messages.append(str(exc))
                return

    await asyncio.gather(*(race() for _ in range(4)))
    usage = await lim.window_usage(scope, "calls_per_day", "day")
    await store.close()
    return {"accepted": accepted, "currents": currents, "usage": usage, "message": messages[0]}


def test_quota_window_is_exact_across_routers(etcd):
    out = _run_workers(_window_worker, [(etcd.endpoint, "tenant/t1") for _ in range(3)])
    print(f"\nquota 10/day, 3 routers x 4 tasks: accepted per router {[o['accepted'] for o in out]}")
    assert sum(o["accepted"] for o in out) == 10
    assert all(c == 10 for o in out for c in o["currents"])
    assert all(o["usage"] == 10 for o in out)
    assert out[0]["message"] == "quota calls_per_day of tenant t1 reached: 10 of 10 used today (UTC)"
