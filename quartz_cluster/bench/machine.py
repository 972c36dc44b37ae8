"""Run metadata every benchmark records: the machine, the commit, the time."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def git(*args: str) -> str:
    cwd = Path(__file__).parent
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return ""


def run_info() -> dict:
    """The machine, the commit (and whether the tree had uncommitted changes) and the time."""
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
    except (OSError, StopIteration):
        mem_kib = 0
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memory_gib": round(mem_kib / 2**20, 1),
            "load_avg_at_start": list(os.getloadavg()),
        },
        "commit": git("rev-parse", "--short", "HEAD"),
        "worktree_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
