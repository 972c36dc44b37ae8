"""Checkpoints of a shard replica's in-memory state, and recovery on open (ADR 1).

A checkpoint stores the derived state with the LSN it covers and the history it belongs to
(`ckpt-<lsn>.hnsw` then `ckpt-<lsn>.state`, each temp + fsync + rename; the state file's
presence marks it complete). A checkpoint is taken only by the shard's writer, so nothing
mutates the state, the log or the database handle meanwhile; searches may go on.

On open: load the newest checkpoint of this history, replay the log after it with the labels
recorded in each entry (the same `apply` as live writes), or, if that is impossible, rebuild from
the stored rows; then apply any log tail beyond applied_lsn (a primary that crashed between
append and apply).
"""

from __future__ import annotations

import glob
import os
import pickle
import time

import numpy as np
import rocksdict

from quartz_cluster.node.hnsw_index import fsync_path
from quartz_cluster.node.payload_index import PayloadIndex
from quartz_cluster.node.shard.state import IndexState, StateLost
from quartz_cluster.node.shard.storage import (
    K_APPLIED,
    K_EPOCH,
    K_LAST_EPOCH,
    K_LOG_END,
    K_NEXT_LABEL,
    P_LOG,
    ShardStore,
    entry_rows,
    log_key,
    u64,
)
from quartz_cluster.proto.quartz.v1 import node_pb2


class Checkpoints:
    def __init__(self, path: str) -> None:
        self.dir = os.path.join(path, "ckpt")
        os.makedirs(self.dir, exist_ok=True)
        self.lsn = 0  # what the newest checkpoint covers

    def _base(self, lsn: int) -> str:
        return os.path.join(self.dir, f"ckpt-{lsn:020d}")

    def save(self, state: IndexState, store: ShardStore, retention_entries: int) -> float:
        """Persist the state at its applied_lsn, then trim the log behind it. Returns seconds."""
        lsn = state.applied_lsn
        if lsn == self.lsn:
            return 0.0
        t0 = time.monotonic()
        base = self._base(lsn)
        state.hnsw.save(base + ".hnsw")
        payload = {
            "lsn": lsn,
            "history": store.history(),
            "next_label": state.next_label,
            "free": list(state.free),
            "ids_by_label": state.ids_by_label[: state.next_label],
            "payload_index": state.payload_index,
        }
        tmp = base + ".state.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, base + ".state")
        fsync_path(self.dir)
        for old in glob.glob(os.path.join(self.dir, "ckpt-*")):
            if not old.startswith(base):
                os.remove(old)
        self.lsn = lsn
        store.trim_log_before(lsn - retention_entries)
        return time.monotonic() - t0

    def remove_all(self) -> None:
        for f in glob.glob(os.path.join(self.dir, "ckpt-*")):
            os.remove(f)
        fsync_path(self.dir)
        self.lsn = 0

    def newest(self, applied: int) -> int | None:
        lsns = []
        for path in glob.glob(os.path.join(self.dir, "ckpt-*.state")):
            lsn = int(os.path.basename(path)[5:25])
            if lsn <= applied and os.path.exists(path[: -len(".state")] + ".hnsw"):
                lsns.append(lsn)
        return max(lsns) if lsns else None

    def load(self, lsn: int, state: IndexState, history: bytes) -> bool:
        base = self._base(lsn)
        try:
            with open(base + ".state", "rb") as f:
                saved = pickle.load(f)
            if saved.get("history", b"") != history:
                state.log.warning("checkpoint of another history; ignored", extra={"lsn": lsn})
                return False
            pidx: PayloadIndex = saved["payload_index"]
            state.hnsw.load(base + ".hnsw", capacity=pidx.capacity)
        except Exception:
            state.log.exception("checkpoint unreadable; rebuilding", extra={"lsn": lsn})
            state.hnsw = state.new_index()
            return False
        state.payload_index = pidx
        state.ids_by_label = np.full(pidx.capacity, None, dtype=object)
        state.ids_by_label[: len(saved["ids_by_label"])] = saved["ids_by_label"]
        state.label_of = {pid: i for i, pid in enumerate(saved["ids_by_label"].tolist()) if pid is not None}
        state.free = dict.fromkeys(saved["free"])
        state.next_label = saved["next_label"]
        state.applied_lsn = self.lsn = lsn
        return True


def _replay(state: IndexState, store: ShardStore, after: int, applied: int) -> bool:
    """Apply log entries (after, applied] to memory (their rows are already stored)."""
    lsn = after
    for _, raw in store.scan(P_LOG, log_key(after + 1)):
        entry = node_pb2.LogEntry.FromString(raw)
        if entry.lsn != lsn + 1 or entry.lsn > applied:
            break
        state.apply_entries([entry])
        lsn = entry.lsn
    if lsn != applied:
        state.log.warning(
            "log does not reach from checkpoint to applied_lsn; rebuilding",
            extra={"checkpoint": after, "reached": lsn, "applied": applied},
        )
        return False
    return True


def commit_entries(
    state: IndexState,
    store: ShardStore,
    entries: list[node_pb2.LogEntry],
    sync: bool,
    log_too: bool = False,
    raws: list[bytes] | None = None,
    epoch: int | None = None,
) -> None:
    """Rows (and, for a follower, the log entries and its epoch) in one WriteBatch, then memory."""
    wb = rocksdict.WriteBatch(raw_mode=True)
    end = state.next_label
    for i, entry in enumerate(entries):
        if log_too:
            wb.put(log_key(entry.lsn), raws[i] if raws else entry.SerializeToString())
        end = max(end, entry_rows(wb, entry, state.spec.dim))
    last = entries[-1]
    wb.put(K_APPLIED, u64(last.lsn))
    wb.put(K_NEXT_LABEL, u64(end))
    wb.put(K_LOG_END, u64(last.lsn))
    wb.put(K_LAST_EPOCH, u64(last.epoch))
    if epoch is not None:
        wb.put(K_EPOCH, u64(epoch))
    store.write(wb, sync)
    store.log_end, store.last_epoch = last.lsn, last.epoch
    try:
        state.apply_entries(entries)
    except Exception as exc:
        raise StateLost(f"apply failed after a durable write: {exc!r}") from exc


def recover(state: IndexState, store: ShardStore, checkpoints: Checkpoints) -> str:
    """Bring the in-memory state up to the end of the log. Returns how it got there."""
    for tmp in glob.glob(os.path.join(checkpoints.dir, "*.tmp")):
        os.remove(tmp)
    applied = store.meta(K_APPLIED)
    log_end = store.meta(K_LOG_END) or applied
    store.load_positions()
    how = "empty"
    ckpt = checkpoints.newest(applied)
    if (
        ckpt is not None
        and checkpoints.load(ckpt, state, store.history())
        and _replay(state, store, ckpt, applied)
    ):
        how = f"checkpoint@{ckpt}+replay{applied - ckpt}"
    elif applied or store.meta(K_NEXT_LABEL):
        state.rebuild_from_rows(store)
        how = "rebuild"
    else:
        state.hnsw.init_empty()
    state.applied_lsn = store.log_end = applied
    store.last_epoch = store.meta(K_LAST_EPOCH) if store.meta(K_LOG_END) else store.entry_epoch(applied)
    if log_end > applied:
        _commit_tail(state, store, log_end)
        how += f"+tail{log_end - applied}"
    return how


def _commit_tail(state: IndexState, store: ShardStore, log_end: int) -> None:
    """Apply log entries after applied_lsn (rows and memory), on open."""
    for _, raw in store.scan(P_LOG, log_key(state.applied_lsn + 1)):
        entry = node_pb2.LogEntry.FromString(raw)
        if entry.lsn > log_end:
            break
        commit_entries(state, store, [entry], sync=False)
    store.log_end, store.last_epoch = state.applied_lsn, store.entry_epoch(state.applied_lsn)
