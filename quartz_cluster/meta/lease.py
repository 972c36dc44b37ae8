"""Keep a key alive under an etcd lease from a dedicated thread with its own event loop and
etcd channel, so a busy main event loop (a long search, a checkpoint) can never delay the
keepalive into a false failover (DESIGN §5).

`valid_until()` is the monotonic instant until which the lease is certainly still alive:
the send time of the last acknowledged keepalive + TTL - a safety margin. A node serves
writes and strong reads only before it (fencing, issue 4).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from quartz_cluster.meta.store import EtcdAuth, EtcdStore

log = logging.getLogger("quartz.lease")

DEFAULT_TTL_S = 3
SAFETY_MARGIN_S = 0.5


class LeaseKeeper(threading.Thread):
    def __init__(
        self,
        endpoints: str | list[str],
        key: bytes,
        value: Callable[[], bytes],
        ttl_s: int = DEFAULT_TTL_S,
        name: str = "lease-keeper",
        auth: EtcdAuth | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.endpoints, self.key, self.value, self.ttl_s = endpoints, key, value, ttl_s
        self.auth = auth
        self.lease_id: int | None = None
        self.granted = threading.Event()  # set once the key is first registered
        self._acked_sent_at = 0.0
        self._halt = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.grants = 0  # how many leases were granted (more than 1: the lease was lost once)

    def may_refresh(self) -> bool:
        """Whether to keep the lease alive now (LeaseProcess's child asks whether its owner can
        still work; otherwise the lease lapses after the TTL)."""
        return True

    def published(self) -> None:
        """Called after the lease id, the grant count or the acknowledged send time changed."""

    def valid_until(self) -> float:
        return self._acked_sent_at + self.ttl_s - SAFETY_MARGIN_S

    def alive(self) -> bool:
        return self.lease_id is not None and time.monotonic() < self.valid_until()

    def run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    def stop(self, revoke: bool = True, timeout_s: float = 5.0) -> None:
        """Stop keeping the lease; with revoke, delete it now so others react at once."""
        self._revoke = revoke
        self._halt.set()
        self.join(timeout_s)

    async def _main(self) -> None:
        store = EtcdStore(self.endpoints, self.auth)
        lease = None
        period = max(self.ttl_s / 3, 0.2)
        last_value = b""
        while not self._halt.is_set():
            try:
                if not self.may_refresh():
                    pass  # the lease lapses after its TTL
                elif lease is None:
                    c = await store.client()
                    sent = time.monotonic()
                    lease = await c.lease(self.ttl_s)
                    last_value = self.value()
                    await store.put(self.key, last_value, lease=lease)
                    self.lease_id = lease.id
                    self._acked_sent_at = sent
                    self.grants += 1
                    self.published()
                    self.granted.set()
                    log.info("lease granted", extra={"key": self.key.decode(), "lease": lease.id})
                else:
                    sent = time.monotonic()
                    resp = await lease.refresh()
                    if resp.TTL <= 0:  # expired while we could not reach etcd: start over
                        log.warning("lease expired; re-registering", extra={"key": self.key.decode()})
                        lease, self.lease_id = None, None
                        self.published()
                        continue
                    self._acked_sent_at = sent
                    self.published()
                    value = self.value()
                    if value != last_value:
                        await store.put(self.key, value, lease=lease)
                        last_value = value
            except Exception as exc:
                log.warning("keepalive failed", extra={"key": self.key.decode(), "error": repr(exc)})
                await store.reset()
                if lease is not None and not self.alive():
                    lease, self.lease_id = None, None
                    self.published()
            await asyncio.get_running_loop().run_in_executor(None, self._halt.wait, period)
        if lease is not None and getattr(self, "_revoke", True):
            try:
                await lease.revoke()
            except Exception:
                pass
        await store.close()
