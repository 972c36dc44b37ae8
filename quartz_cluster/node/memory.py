"""Giving memory back to the system after shards are dropped, and what the node holds.

A dropped replica's HNSW index, payload index and RocksDB instance are freed when the last
reference goes; the objects of a replica refer to each other (replica, writer, role, pipeline),
so they go only at the next full garbage collection, which a quiet node may not run for a long
time. And glibc keeps freed heap memory for reuse rather than returning it: after a first
large index is freed, glibc raises its mmap threshold (up to 32 MiB), so the next indexes of
that size are carved from the heap and stay resident after they are freed. Issue 12 measured a
node at 3,399 MiB with no collection left; `release` after every drop is the fix."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import resource
from pathlib import Path

import psutil

from quartz_cluster import limits
from quartz_cluster.capacity import replica_bytes
from quartz_cluster.errors import ResourceExhausted

log = logging.getLogger("quartz.memory")
_libc = None


def _malloc_trim() -> bool:
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        _libc = ctypes.CDLL(name) if name else False
    trim = getattr(_libc, "malloc_trim", None) if _libc else None
    if trim is None:  # not glibc: nothing to trim
        return False
    return bool(trim(0))


def release() -> int:
    """Collect unreachable objects (freeing the native memory they hold), then return free heap
    pages to the system. Blocking (tens of ms): run it in a worker thread. Returns the RSS."""
    gc.collect()
    _malloc_trim()
    return rss_bytes()


def rss_bytes() -> int:
    return psutil.Process().memory_info().rss


def available_bytes() -> int:
    """The memory this process may use: the cgroup limit when there is one, else physical RAM."""
    total = psutil.virtual_memory().total
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (each replica holds RocksDB files);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


class NodeBudget:
    """A node's admission control: no request the API accepts may get the process killed.
    New replicas and writes are refused (RESOURCE_EXHAUSTED, naming the limit) once the node's
    resident memory plus what they would add exceeds its memory budget, or once it holds as many
    replicas as the replica limit (and its open-file limit) allows."""

    def __init__(self, node_id: str, memory_bytes_max: int | None = None, fds_max: int | None = None):
        self.node_id = node_id
        self.memory_bytes_max = memory_bytes_max or int(available_bytes() * limits.NODE_MEMORY_FRACTION)
        fds = fds_max if fds_max is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        by_fds = max(1, (fds - 256) // limits.FDS_PER_REPLICA)  # 256 for sockets and the rest
        self.replicas_max = min(limits.REPLICAS_PER_NODE_MAX, by_fds)
        self.rss = rss_bytes  # replaced in tests

    def check_replica(self, replicas: int, dim: int, m: int, field: str = "spec") -> None:
        if replicas >= self.replicas_max:
            raise ResourceExhausted(
                f"node {self.node_id} holds {replicas} shard replicas, its limit (REPLICAS_PER_NODE_MAX = "
                f"{limits.REPLICAS_PER_NODE_MAX}, or what its open-file limit allows) is "
                f"{self.replicas_max}",
                field,
            )
        self.check_memory(replica_bytes(dim, m), "a new replica", field)

    def check_memory(self, extra_bytes: int, what: str, field: str) -> None:
        rss = self.rss()
        if rss + extra_bytes > self.memory_bytes_max:
            budget_mib = self.memory_bytes_max / 2**20
            raise ResourceExhausted(
                f"node {self.node_id} uses {rss / 2**20:,.0f} MiB of its {budget_mib:,.0f} MiB memory "
                f"budget (--memory-max); {what} needs {extra_bytes / 2**20:,.1f} MiB more",
                field,
            )
