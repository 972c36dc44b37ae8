"""Client processes for closed-loop benchmarks: each its own spawned OS process (so no client
shares a GIL with another or with the parent), started together behind a barrier."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable

JOIN_TIMEOUT_S = 30.0


def run_processes(target: Callable, per_client_args: list[tuple], timeout_s: float, what: str) -> list:
    """Spawn one process per args tuple running target(*args, barrier, results); each puts
    ("ok", value) or ("error", text) on results (client errors often do not pickle). Returns the
    values; raises if any client failed. Every process is reaped, killed if it has to be."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(per_client_args)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, barrier, results)) for args in per_client_args]
    try:
        for p in procs:
            p.start()
        out = [results.get(timeout=timeout_s) for _ in procs]
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    failed = [r for status, r in out if status == "error"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(procs)} {what} clients failed: {failed[0]}")
    return [r for _, r in out]
