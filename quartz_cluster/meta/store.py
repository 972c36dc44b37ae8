"""A thin asyncio wrapper over aetcd: multiple endpoints, prefix listing at a revision, and a
list-then-watch loop that survives watch errors and compaction.

The data path never waits on etcd: routers and nodes keep what they need from watches.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aetcd
import aetcd.exceptions

from quartz_cluster.observability.metrics import ETCD_SECONDS

log = logging.getLogger("quartz.etcd")

CALL_TIMEOUT_S = 5
RECONCILE_INTERVAL_S = 2.0
RETRY_BACKOFF_S_MAX = 2.0
ROOT_SENTINEL = b"/quartz/\x00revision"  # never written: reading it just returns the header


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    lease: int


PORT_MAX = 65535


def parse_endpoints(spec: str | list[str]) -> list[tuple[str, int]]:
    items = spec.split(",") if isinstance(spec, str) else spec
    out = []
    for item in items:
        item = item.strip().removeprefix("http://")
        host, _, port = item.rpartition(":")
        if not (port.isdigit() and 0 < int(port) <= PORT_MAX):
            raise ValueError(f"etcd endpoint {item!r} is not host:port (port 1-{PORT_MAX})")
        out.append((host or "127.0.0.1", int(port)))
    return out


@dataclass(frozen=True, slots=True)
class EtcdAuth:
    """etcd credentials (a cluster started by `quartz up` runs etcd with auth on)."""

    user: str
    password: str


def _retry_on_stale_token(method):
    """etcd forgets its auth tokens when it restarts (and after --auth-token-ttl idle): a call
    refused as UNAUTHENTICATED reconnects, which authenticates again, and is retried once.
    Every call's round trip goes into quartz_etcd_request_duration_seconds{op}."""
    seconds = ETCD_SECONDS.labels(method.__name__)

    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return await method(self, *args, **kwargs)
        except aetcd.exceptions.UnauthenticatedError:
            if self.auth is None:
                raise
            await self.reset()
            return await method(self, *args, **kwargs)
        finally:
            seconds.observe(time.perf_counter() - t0)

    return wrapper


class EtcdStore:
    """One etcd client bound to the current event loop. Connects to the first endpoint that
    answers; on failure the caller's retry reconnects to another."""

    def __init__(self, endpoints: str | list[str], auth: EtcdAuth | None = None) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.auth = auth
        self._client: aetcd.Client | None = None

    async def client(self) -> aetcd.Client:
        if self._client is None:
            last: Exception | None = None
            for host, port in random.sample(self.endpoints, len(self.endpoints)):
                c = aetcd.Client(
                    host,
                    port,
                    username=self.auth.user if self.auth else None,
                    password=self.auth.password if self.auth else None,
                    timeout=CALL_TIMEOUT_S,
                    connect_wait_timeout=CALL_TIMEOUT_S,
                )
                try:
                    await c.connect()
                    await c.status()
                    self._client = c
                    break
                except Exception as exc:  # try the next endpoint
                    last = exc
                    await c.close()
            else:
                raise ConnectionError(f"no etcd endpoint answered: {last}")
        return self._client

    async def reset(self) -> None:
        if self._client is not None:
            c, self._client = self._client, None
            try:
                await c.close()
            except Exception:
                pass

    async def close(self) -> None:
        await self.reset()

    @property
    def txn(self):
        assert self._client is not None
        return self._client.transactions

    @_retry_on_stale_token
    async def list(self, prefix: bytes) -> tuple[int, list[KV]]:
        """(revision, kvs) of every key under prefix, as of one revision."""
        c = await self.client()
        resp = await c.get_prefix(prefix)
        return resp.header.revision, [
            KV(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease) for kv in resp
        ]

    @_retry_on_stale_token
    async def range(self, start: bytes, end: bytes) -> list[KV]:
        """Every key in [start, end), sorted by key."""
        c = await self.client()
        resp = await c.get_range(start, end)
        return [KV(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease) for kv in resp]

    @_retry_on_stale_token
    async def delete_range(self, start: bytes, end: bytes) -> None:
        c = await self.client()
        await c.delete_range(start, end)

    @_retry_on_stale_token
    async def revision(self) -> int:
        """etcd's current revision (>= that of every write this client has seen acknowledged)."""
        c = await self.client()
        return (await c.get_prefix(ROOT_SENTINEL)).header.revision

    @_retry_on_stale_token
    async def get(self, key: bytes) -> KV | None:
        c = await self.client()
        kv = await c.get(key)
        return None if kv is None else KV(kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.lease)

    @_retry_on_stale_token
    async def put(self, key: bytes, value: bytes, lease=None) -> None:
        c = await self.client()
        await c.put(key, value, lease=lease)

    @_retry_on_stale_token
    async def delete(self, key: bytes) -> None:
        c = await self.client()
        await c.delete(key)

    @_retry_on_stale_token
    async def transaction(self, compare, success, failure=()) -> tuple[bool, list]:
        c = await self.client()
        return await c.transaction(compare=compare, success=success, failure=list(failure))

    async def follow(
        self,
        prefix: bytes,
        on_state: Callable[[int, list[KV]], Awaitable[None]],
        stop: asyncio.Event,
        interval_s: float = RECONCILE_INTERVAL_S,
    ) -> None:
        """List `prefix` at revision R and call on_state(R, kvs); then watch from R+1 and list
        again on every change, on every watch error (compaction, lost connection) and at least
        every interval_s. Runs until `stop` is set. on_state sees whole snapshots, never
        individual events, so a missed event can only delay a reaction, never lose it."""
        backoff = 0.1
        while not stop.is_set():
            watch = None
            try:
                revision, kvs = await self.list(prefix)
                await on_state(revision, kvs)
                c = await self.client()
                changed = asyncio.Event()

                async def pump(w, changed: asyncio.Event = changed) -> None:
                    async for _ in w:
                        changed.set()

                watch = await c.watch_prefix(prefix, start_revision=revision + 1)
                pump_task = asyncio.create_task(pump(watch))
                backoff = 0.1
                while not stop.is_set():
                    stop_task = asyncio.create_task(stop.wait())
                    changed_task = asyncio.create_task(changed.wait())
                    done, _ = await asyncio.wait(
                        {stop_task, changed_task, pump_task},
                        timeout=interval_s,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    for t in (stop_task, changed_task):
                        if t not in done:
                            t.cancel()
                    if pump_task in done:
                        pump_task.result()  # raise the watch error
                        raise ConnectionError("watch ended")
                    changed.clear()
                    if stop.is_set():
                        break
                    revision, kvs = await self.list(prefix)
                    await on_state(revision, kvs)
                pump_task.cancel()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "etcd follow error; re-listing", extra={"prefix": prefix.decode(), "error": repr(exc)}
                )
                await self.reset()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, RETRY_BACKOFF_S_MAX)
            finally:
                if watch is not None:
                    try:
                        await watch.cancel()
                    except Exception:
                        pass
