"""The router's opportunistic search batching: no waiting when idle, batches when busy, every
caller gets its own result or the error of its call, cancelled callers are dropped."""

from __future__ import annotations

import asyncio

import pytest

from quartz_cluster.router.coalesce import Coalescer


async def settle() -> None:
    """Let every ready task run (submit -> sender task -> send)."""
    for _ in range(5):
        await asyncio.sleep(0)


class Sender:
    """Records each call's items; each call waits until released."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.release = asyncio.Event()
        self.fail_with: BaseException | None = None

    async def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [f"r:{i}" for i in items]


def test_idle_sends_at_once_and_busy_batches():
    async def main():
        c: Coalescer[str, str] = Coalescer(inflight_max=1)
        send = Sender()
        first = asyncio.ensure_future(c.submit("k", "a", 1, send))
        await settle()
        assert send.calls == [["a"]]  # no waiting for company
        rest = [asyncio.ensure_future(c.submit("k", x, 1, send)) for x in "bcd"]
        other = asyncio.ensure_future(c.submit("other-key", "z", 1, send))
        await settle()
        assert send.calls == [["a"], ["z"]]  # b, c, d wait for the call in flight; other keys do not
        send.release.set()
        assert await first == "r:a"
        assert [await r for r in rest] == ["r:b", "r:c", "r:d"]
        assert await other == "r:z"
        assert send.calls == [["a"], ["z"], ["b", "c", "d"]]
        assert c._keys == {}  # nothing left behind

    asyncio.run(main())


def test_batches_respect_the_query_limit():
    async def main():
        c: Coalescer[str, str] = Coalescer(inflight_max=1, batch_max=5)
        send = Sender()
        futs = [asyncio.ensure_future(c.submit("k", f"q{i}", 2, send)) for i in range(6)]
        await settle()
        send.release.set()
        await asyncio.gather(*futs)
        assert [len(call) for call in send.calls] == [2, 2, 2]  # 2 queries per item, at most 5 per call

    asyncio.run(main())


def test_an_error_reaches_every_caller_of_that_call_only():
    async def main():
        c: Coalescer[str, str] = Coalescer(inflight_max=1)
        send = Sender()
        first = asyncio.ensure_future(c.submit("k", "a", 1, send))
        await settle()
        rest = [asyncio.ensure_future(c.submit("k", x, 1, send)) for x in "bc"]
        await settle()
        send.fail_with = ValueError("bad")
        send.release.set()
        with pytest.raises(ValueError):
            await first
        for r in rest:
            with pytest.raises(ValueError):
                await r
        send.fail_with = None
        assert await c.submit("k", "d", 1, send) == "r:d"  # the key works again

    asyncio.run(main())


def test_a_cancelled_caller_is_not_sent():
    async def main():
        c: Coalescer[str, str] = Coalescer(inflight_max=1)
        send = Sender()
        first = asyncio.ensure_future(c.submit("k", "a", 1, send))
        await settle()
        gone = asyncio.ensure_future(c.submit("k", "b", 1, send))
        kept = asyncio.ensure_future(c.submit("k", "c", 1, send))
        await settle()
        gone.cancel()
        send.release.set()
        assert await first == "r:a" and await kept == "r:c"
        assert send.calls == [["a"], ["c"]]

    asyncio.run(main())
