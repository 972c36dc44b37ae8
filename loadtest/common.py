"""What every benchmark in loadtest/ reports the same way: latency percentiles and run metadata."""

from __future__ import annotations

import numpy as np

from quartz_cluster.bench.machine import git, run_info

__all__ = ["git", "percentiles_ms", "run_info"]


def percentiles_ms(samples_s) -> dict[str, float]:
    """p50/p95/p99 in milliseconds of latencies given in seconds."""
    a = np.asarray(samples_s, dtype=float) * 1000
    return {f"p{p}_ms": float(np.percentile(a, p)) for p in (50, 95, 99)}
