"""Snapshots: a primary streams its committed state; a follower whose log diverged or fell behind
installs it, replacing its whole state (DESIGN §5).

Reading (`snapshot_chunks`) works from one RocksDB snapshot, in any thread.

Installing has two phases. The incoming rows are written to a staging database of their own
(`Staging`) as they arrive, outside the shard's writer: a slow or broken stream holds nothing
the shard needs. Only a complete stream is installed, as one job of the writer (`install`),
which swaps the database and rebuilds the state. A stream that fails or is cancelled at any
point aborts its staging: closed and deleted, its RocksDB lock released, no thread left
waiting. A newer install of the same replica aborts an older one still streaming.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator

import rocksdict

from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.node.shard.checkpoint import Checkpoints
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import (
    K_APPLIED,
    K_EPOCH,
    K_HISTORY,
    K_LAST_EPOCH,
    K_LOG_END,
    K_LOG_START,
    K_LOG_START_EPOCH,
    K_NEXT_LABEL,
    P_FREE,
    P_PAY,
    P_VEC,
    ShardStore,
    log_key,
    new_history,
    open_db,
    u64,
    write_synced,
)
from quartz_cluster.proto.quartz.v1 import node_pb2

SNAPSHOT_CHUNK_KEYS = 2000
ROW_PREFIXES = (P_VEC, P_PAY, P_FREE)  # the only keys a snapshot may carry


def _snapshot_get(snap, key: bytes) -> bytes | None:
    """One key of a RocksDB snapshot, None when absent (the first item from `key` on, if it is
    that key: a snapshot has no get, and its [] raises a bare Exception for a missing key)."""
    found, value = next(iter(snap.items(from_key=key)), (None, None))
    return value if found == key else None


def snapshot_chunks(store: ShardStore) -> Iterator[tuple[int, int, int, list[tuple[bytes, bytes]]]]:
    """(lsn, lsn_epoch, next_label, rows) chunks of a replica's committed state, read from one
    RocksDB snapshot. Rows are raw v/, p/ and f/ keys."""
    snap = store.db.snapshot()
    # the two positions by name: iterating from "m/" ran on through every p/ and v/ row (they
    # sort after it) and held the whole shard in memory before the first chunk went out
    lsn = int.from_bytes(_snapshot_get(snap, K_APPLIED) or b"\0" * 8, "big")
    next_label = int.from_bytes(_snapshot_get(snap, K_NEXT_LABEL) or b"\0" * 8, "big")
    if lsn == store.log_start:
        lsn_epoch = store.log_start_epoch
    else:
        key, raw = next(iter(snap.items(from_key=log_key(lsn))), (None, None))
        raw = raw if key == log_key(lsn) else None
        lsn_epoch = node_pb2.LogEntry.FromString(raw).epoch if raw else 0
    yield lsn, lsn_epoch, next_label, []  # the position first, even for an empty shard
    chunk: list[tuple[bytes, bytes]] = []
    for prefix in ROW_PREFIXES:
        for key, value in snap.items(from_key=prefix):
            if not key.startswith(prefix):
                break
            chunk.append((key, value))
            if len(chunk) >= SNAPSHOT_CHUNK_KEYS:
                yield lsn, lsn_epoch, next_label, chunk
                chunk = []
    if chunk:
        yield lsn, lsn_epoch, next_label, chunk


class Staging:
    """The incoming database of one snapshot stream. Thread-safe: chunks are written from worker
    threads while `abort` may come from the event loop (a cancelled stream)."""

    def __init__(self, shard_path: str, epoch: int, lsn: int, lsn_epoch: int, next_label: int) -> None:
        self.epoch, self.lsn, self.lsn_epoch, self.next_label = epoch, lsn, lsn_epoch, next_label
        self.path = os.path.join(shard_path, f"db.incoming-{uuid.uuid4().hex[:12]}")
        self._lock = threading.Lock()
        self._db: rocksdict.Rdict | None = open_db(self.path)
        self.rows = 0
        self.state = "streaming"  # -> "installing" -> "installed", or -> "aborted"

    def write(self, keys: list[bytes], values: list[bytes]) -> None:
        if len(keys) != len(values):
            raise FailedPrecondition("a snapshot chunk has keys and values of different lengths", "chunks")
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, value in zip(keys, values, strict=True):
            if not key.startswith(ROW_PREFIXES):
                raise FailedPrecondition("a snapshot chunk carries a key that is not a row", "chunks")
            wb.put(key, value)
        with self._lock:
            if self.state != "streaming" or self._db is None:
                raise FailedPrecondition("this snapshot install was superseded or aborted", "chunks")
            self._db.write(wb)
            self.rows += len(keys)

    def claim(self) -> bool:
        """The writer takes over a complete stream; False if it was aborted meanwhile."""
        with self._lock:
            if self.state != "streaming":
                return False
            self.state = "installing"
            return True

    def finish(self, epoch: int) -> None:
        """Write the position and epoch, synced, and close: the directory is ready to swap in."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, value in (
            (K_APPLIED, self.lsn),
            (K_NEXT_LABEL, self.next_label),
            (K_LOG_END, self.lsn),
            (K_LAST_EPOCH, self.lsn_epoch),
            (K_EPOCH, epoch),
            (K_LOG_START, self.lsn),
            (K_LOG_START_EPOCH, self.lsn_epoch),
        ):
            wb.put(key, u64(value))
        wb.put(K_HISTORY, new_history())
        with self._lock:
            assert self._db is not None
            write_synced(self._db, wb)
            self._db.close()
            self._db = None

    def abort(self) -> None:
        """Release everything (idempotent; a no-op once the writer claimed the stream)."""
        with self._lock:
            if self.state not in ("streaming", "failed"):
                return
            self.state = "aborted"
            if self._db is not None:
                self._db.close()
                self._db = None
        shutil.rmtree(self.path, ignore_errors=True)

    def failed(self) -> None:
        """The writer could not install it: clean up like an abort."""
        with self._lock:
            self.state = "failed"
        self.abort()


def install(
    staging: Staging, state: IndexState, store: ShardStore, checkpoints: Checkpoints, epoch: int
) -> None:
    """Replace the replica's whole state with a staged snapshot. Blocking; run by the writer.
    Checkpoints go first: a crash after that rebuilds from rows, never loads a stale one (and a
    checkpoint names its history, so one of another history is refused anyway)."""
    staging.finish(epoch)
    with state.lock.exclusive():
        checkpoints.remove_all()
        store.swap(staging.path)
        staging.state = "swapped"  # from here on a failure leaves a state no longer trusted
        store.load_positions()
        state.rebuild_from_rows(store)
        state.applied_lsn = store.log_end = staging.lsn
        store.last_epoch = staging.lsn_epoch
        staging.state = "installed"
