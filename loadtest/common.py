"""What every benchmark in loadtest/ reports the same way: latency percentiles and run metadata."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil


def percentiles_ms(samples_s) -> dict[str, float]:
    """p50/p95/p99 in milliseconds of latencies given in seconds."""
    a = np.asarray(samples_s, dtype=float) * 1000
    return {f"p{p}_ms": float(np.percentile(a, p)) for p in (50, 95, 99)}


def git(*args: str) -> str:
    cwd = Path(__file__).parent
    return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd).stdout.strip()


def run_info() -> dict:
    """The machine, the commit (and whether the tree had uncommitted changes) and the time."""
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_at_start": list(os.getloadavg()),
        },
        "commit": git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
