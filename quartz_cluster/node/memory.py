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

import psutil

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
