"""The child process of a LeaseProcess (meta/lease_process.py): keeps its owner's lease alive
while the owner can work, publishes the lease through shared memory, and revokes it when the
owner's end of stdin closes (the owner exited or died). Run as
`python -m quartz_cluster.meta.lease_child CONFIG_JSON`; it imports only what a keepalive needs."""

from __future__ import annotations

import json
import logging
import sys
import time

from quartz_cluster import logs
from quartz_cluster.meta.lease import LeaseKeeper
from quartz_cluster.meta.lease_process import (
    _ACKED_SENT_AT,
    _GRANTS,
    _HEARTBEAT,
    _LEASE_ID,
    MSG_LEAVE,
    MSG_STOP,
    MSG_VALUE,
    SharedLease,
    owner_can_work,
    owner_stopped,
)
from quartz_cluster.meta.store import EtcdAuth

log = logging.getLogger("quartz.lease")


class ChildKeeper(LeaseKeeper):
    def __init__(self, config: dict, shared: SharedLease, first_value: bytes) -> None:
        auth = EtcdAuth(*config["auth"]) if config["auth"] else None
        super().__init__(
            config["endpoints"], config["key"].encode(), self.current, config["ttl_s"], auth=auth
        )
        self.shared, self.owner, self.latest = shared, config["owner"], first_value
        self._could_work = True
        self.grants_base = config.get("grants_base", 0)  # grants of the children before this one

    def current(self) -> bytes:
        return self.latest

    def may_refresh(self) -> bool:
        stopped = owner_stopped(self.owner)
        ok = owner_can_work(time.monotonic(), self.shared.f[_HEARTBEAT], stopped)
        if ok != self._could_work:
            self._could_work = ok
            why = "stopped" if stopped else "silent (wedged)"
            log.warning(
                "owner can work again; keeping the lease" if ok else f"owner {why}; letting the lease lapse",
                extra={"key": self.key.decode()},
            )
        return ok

    def published(self) -> None:
        self.shared.f[_ACKED_SENT_AT] = self._acked_sent_at
        self.shared.q[_GRANTS] = self.grants_base + self.grants
        self.shared.q[_LEASE_ID] = self.lease_id or 0


def read_message(stream) -> tuple[bytes, bytes] | None:
    head = stream.read(5)
    if len(head) < 5:
        return None  # end of file: the owner is gone
    body = stream.read(int.from_bytes(head[1:], "big"))
    return head[:1], body


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    logs.configure("info", **config["log"])
    shared = SharedLease(config["fd"])
    stdin = sys.stdin.buffer
    first = read_message(stdin)
    if first is None or first[0] != MSG_VALUE:
        return 0
    keeper = ChildKeeper(config, shared, first[1])
    keeper.start()
    revoke = True  # the owner died or asked to stop: others should react at once
    while True:
        msg = read_message(stdin)
        if msg is None or msg[0] == MSG_STOP:
            break
        if msg[0] == MSG_LEAVE:
            revoke = False
            break
        if msg[0] == MSG_VALUE:
            keeper.latest = msg[1]
    keeper.stop(revoke=revoke)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
