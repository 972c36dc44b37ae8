"""A node's lease kept alive by a child process of its own (ADR 18).

A keepalive thread shares the node's GIL, and a C call that holds it (protobuf encoding a 25 MB
replication batch, RocksDB writing one) is not interrupted: on a loaded 2-core machine the heavy
chaos load stalled every thread of a node for 1-2.5 s at a time, the keepalive missed its TTL and
the coordinator failed over a healthy node. The child has its own interpreter and does nothing
else, so the node's load cannot delay it.

The child holds the lease only for an owner that can still work:
  - the owner exits or dies: its end of the child's stdin closes; the child revokes the lease
    at once (a crashed node fails over without waiting out the TTL) and exits;
  - the owner is stopped (SIGSTOP, a frozen cgroup; /proc/<pid>/stat says T): the child stops
    refreshing and the lease lapses after the TTL, as before;
  - the owner is wedged: its feeder thread, which needs the GIL, has not beaten for
    OWNER_SILENT_S_MAX: the lease lapses too.

The owner reads the lease through shared memory (a memfd both map): the send time of the last
acknowledged keepalive (CLOCK_MONOTONIC is one clock for every process on Linux), the lease id
and the number of grants, so `valid_until()` and `alive()` fence writes exactly as LeaseKeeper's
do. The value under the key goes to the child over its stdin when it changes.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from quartz_cluster.meta.lease import DEFAULT_TTL_S, SAFETY_MARGIN_S
from quartz_cluster.meta.store import EtcdAuth

log = logging.getLogger("quartz.lease")

OWNER_SILENT_S_MAX = 30.0  # an owner whose feeder has not run for this long is wedged
FEED_S = 0.25  # how often the owner beats and sends a changed value
STOP_WAIT_S = 5.0
CHILD_START_S_MAX = 30.0

# shared memory: 8-byte slots
_ACKED_SENT_AT, _HEARTBEAT = 0, 1  # float64 slots
_LEASE_ID, _GRANTS = 2, 3  # int64 slots
_SLOTS = 4

# messages on the child's stdin: one byte of kind, 4 bytes of length, the body
MSG_VALUE, MSG_STOP, MSG_LEAVE = b"V", b"S", b"L"  # STOP revokes the lease, LEAVE leaves it


class SharedLease:
    """The lease's state as both processes see it, over one small shared mapping."""

    def __init__(self, fd: int) -> None:
        self.mm = mmap.mmap(fd, _SLOTS * 8)
        self.f = memoryview(self.mm).cast("d")
        self.q = memoryview(self.mm).cast("q")

    @classmethod
    def create(cls) -> tuple[SharedLease, int]:
        fd = os.memfd_create("quartz-lease", 0)
        os.ftruncate(fd, _SLOTS * 8)
        return cls(fd), fd


def owner_stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP or traced): state T or t in /proc/<pid>/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stopped_state(stat)


def stopped_state(stat: bytes) -> bool:
    """The state field of a /proc/<pid>/stat line (after the command name, which may hold
    spaces and parentheses) is T (stopped) or t (tracing stop)."""
    rest = stat[stat.rfind(b")") + 1 :].split()
    return bool(rest) and rest[0] in (b"T", b"t")


def owner_can_work(now: float, heartbeat: float, stopped: bool) -> bool:
    """Refresh the lease only for an owner that is running and not wedged."""
    return not stopped and now - heartbeat < OWNER_SILENT_S_MAX


class LeaseProcess:
    """LeaseKeeper's interface (start, granted, lease_id, grants, valid_until, alive, stop),
    the keepalive in a child process."""

    def __init__(
        self,
        endpoints: str | list[str],
        key: bytes,
        value: Callable[[], bytes],
        ttl_s: int = DEFAULT_TTL_S,
        name: str = "lease",
        auth: EtcdAuth | None = None,
        log_context: dict[str, str] | None = None,
    ) -> None:
        self.endpoints = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
        self.key, self.value, self.ttl_s, self.name, self.auth = key, value, ttl_s, name, auth
        self.log_context = log_context or {}
        self.granted = threading.Event()
        self.shared, self._fd = SharedLease.create()
        self.proc: subprocess.Popen | None = None
        self._halt = threading.Event()
        self._feeder: threading.Thread | None = None
        self._send_lock = threading.RLock()  # _spawn sends while holding it

    @property
    def lease_id(self) -> int | None:
        return self.shared.q[_LEASE_ID] or None

    @property
    def grants(self) -> int:
        return self.shared.q[_GRANTS]

    def valid_until(self) -> float:
        return self.shared.f[_ACKED_SENT_AT] + self.ttl_s - SAFETY_MARGIN_S

    def alive(self) -> bool:
        return self.lease_id is not None and time.monotonic() < self.valid_until()

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.shared.f[_HEARTBEAT] = time.monotonic()
        self._spawn()
        self._feeder = threading.Thread(target=self._feed, name=f"{self.name}-feeder", daemon=True)
        self._feeder.start()

    def _spawn(self) -> None:
        """Start a keeper child; its grants continue the count of the ones before it."""
        config = {
            "endpoints": self.endpoints,
            "key": self.key.decode(),
            "ttl_s": self.ttl_s,
            "owner": os.getpid(),
            "fd": self._fd,
            "auth": [self.auth.user, self.auth.password] if self.auth else None,
            "log": self.log_context,
            "grants_base": self.grants,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "quartz_cluster.meta.lease_child", json.dumps(config)],
            stdin=subprocess.PIPE,
            pass_fds=(self._fd,),
        )
        self._last_value = self.value()
        self._send(MSG_VALUE, self._last_value)

    def _send(self, kind: bytes, body: bytes = b"") -> bool:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            with self._send_lock:
                self.proc.stdin.write(kind + len(body).to_bytes(4, "big") + body)
                self.proc.stdin.flush()
            return True
        except (BrokenPipeError, ValueError, OSError):
            return False

    def _feed(self) -> None:
        """Beat (the owner can still run Python), pass on a changed value, see the first grant,
        replace a child that died (killed by an operator or the OOM killer): without one the
        node would run on, fenced, with no lease ever again."""
        while not self._halt.wait(FEED_S):
            assert self.proc is not None
            if self.proc.poll() is not None and not self._halt.is_set():
                code = self.proc.returncode
                log.error("lease keeper process exited; starting another", extra={"code": code})
                self.shared.q[_LEASE_ID] = 0
                with self._send_lock:
                    if self._halt.is_set():
                        return
                    self._spawn()
            self.shared.f[_HEARTBEAT] = time.monotonic()
            if self.grants and not self.granted.is_set():
                self.granted.set()
            try:
                value = self.value()
            except Exception as exc:  # the value is best effort; the lease is not
                log.warning("lease value failed", extra={"error": repr(exc)})
                continue
            if value != self._last_value and self._send(MSG_VALUE, value):
                self._last_value = value

    def stop(self, revoke: bool = True, timeout_s: float = STOP_WAIT_S) -> None:
        """Stop keeping the lease; with revoke, delete it now so others react at once."""
        with self._send_lock:
            self._halt.set()  # under the lock: no child is spawned after this
        if self.proc is not None:
            self._send(MSG_STOP if revoke else MSG_LEAVE)
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._feeder is not None:
            self._feeder.join(timeout_s)
        try:
            os.close(self._fd)
        except OSError:
            pass
