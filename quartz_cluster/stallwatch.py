"""A watchdog for stalls: a daemon thread sleeps STALL_TICK_S in a loop and logs a warning when
it woke much later than asked, i.e. when no Python thread could run for that long (one C call
holding the GIL, such as protobuf serializing a huge message, or the process paused or swapping).
Lease keepalives run on such a thread: a stall near the lease TTL means a false failover, and
this log line says why (issue 12, item 1: a 1 GB search reply stalled a node for 3-9 s)."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("quartz.stall")
STALL_TICK_S = 0.1
STALL_WARN_S = 1.0  # a stall at least this long is logged


class StallWatch(threading.Thread):
    def __init__(self, warn_s: float = STALL_WARN_S) -> None:
        super().__init__(name="stall-watch", daemon=True)
        self.warn_s = warn_s
        self.longest_s = 0.0
        self.stalls = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            t0 = time.monotonic()
            self._halt.wait(STALL_TICK_S)
            late = time.monotonic() - t0 - STALL_TICK_S
            self.longest_s = max(self.longest_s, late)
            if late >= self.warn_s:
                self.stalls += 1
                log.warning("process stalled", extra={"stalled_s": round(late, 2), "stalls": self.stalls})

    def stop(self) -> None:
        self._halt.set()
