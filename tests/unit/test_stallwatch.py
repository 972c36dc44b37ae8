"""stallwatch.py: a stall of the whole interpreter is measured and logged."""

import logging
import re
import time

from quartz_cluster.stallwatch import StallWatch


def hold_the_gil(seconds: float) -> None:
    """A pure-Python loop lets other threads run (the interpreter switches every 5 ms), so the
    stall is made the way a C extension makes it: one call that never releases the GIL (the re
    module backtracking catastrophically), made longer until a single call lasts `seconds`."""
    n = 16
    while True:
        t0 = time.monotonic()
        re.match(r"(a+)+$", "a" * n + "b")
        if time.monotonic() - t0 >= seconds:
            return
        n += 1


def test_a_stall_is_measured_and_logged(caplog):
    watch = StallWatch(warn_s=0.25)
    with caplog.at_level(logging.WARNING, logger="quartz.stall"):
        watch.start()
        time.sleep(0.2)
        hold_the_gil(0.5)
        time.sleep(0.3)
        watch.stop()
        watch.join(5)
    assert watch.longest_s >= 0.25 and watch.stalls >= 1
    assert any(r.getMessage() == "process stalled" and r.stalled_s >= 0.25 for r in caplog.records)
