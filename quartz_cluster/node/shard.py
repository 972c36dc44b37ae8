"""One shard replica: durable state in its own RocksDB, derived HNSW + payload index in memory.

Write path on a primary (or a standalone node), one writer task per shard (DESIGN §4, §5):
  validated batch -> queue -> writer takes every queued batch (group commit) and, holding the
  commit lock:
    1. append: assigns LSNs and labels; ONE RocksDB WriteBatch of log entries + log_end, synced;
    2. replicate: the replicator sends the entries to every in-sync follower and returns once
       all hold them durably (shrinking in_sync in etcd first if one does not answer);
    3. apply: rows, free labels and applied_lsn (one WriteBatch, not synced: the log is), then
       the in-memory graph and indexes under the exclusive lock: only now are they visible;
  -> acknowledge. LSN n+1 is never durable without n (one atomic write per group). If step 2
  fails (this replica stopped being primary), the appended but uncommitted entries are
  truncated: nobody acknowledged them, and the new primary decides what the log holds.
A follower appends entries it receives together with their rows in one synced WriteBatch and
applies them at once (`append_replicated`), after the log-matching check of
replication/log_matching.py; a follower whose log diverged is resynchronised by snapshot.

Recovery: the in-memory state (graph, label maps, payload index) is a pure function of the
log. A checkpoint stores it with the LSN it covers (`ckpt-<lsn>.hnsw` then `ckpt-<lsn>.state`,
each temp + fsync + rename; the state file's presence marks it complete). On open: load the
newest checkpoint, replay the log after it with the labels recorded in each entry (the same
code that applies live writes), or, if that is impossible, rebuild from the stored rows; then
apply any log tail beyond applied_lsn (a primary that crashed between append and apply).

RocksDB key layout (raw bytes):
  m/applied_lsn, m/next_label        u64 big-endian (rows and labels reflect the log up to here)
  m/log_end, m/last_epoch            the log's last LSN and that entry's epoch
  m/epoch                            the highest epoch this replica accepted
  m/log_start, m/log_start_epoch     where a snapshot installed this replica's state
  g/<lsn u64 BE>                     LogEntry protobuf
  v/<id>                             label u64 LE + float32 vector as written
  p/<id>                             payload JSON
  f/<label u64 BE>                   a free (deleted, reusable) label
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import orjson
import rocksdict

from quartz_cluster import filters, limits, logs
from quartz_cluster.errors import FailedPrecondition, Internal, ResourceExhausted, Unavailable
from quartz_cluster.node.filter_plan import EXACT, filter_plan
from quartz_cluster.node.hnsw_index import (
    HnswIndex,
    best_first,
    exact_scores,
    fsync_path,
    scores_from_distances,
)
from quartz_cluster.node.payload_index import PayloadIndex
from quartz_cluster.node.rwlock import TaggedRWLock
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication import log_matching
from quartz_cluster.validation import WriteBatch

log = logging.getLogger("quartz.shard")

K_APPLIED = b"m/applied_lsn"
K_NEXT_LABEL = b"m/next_label"
K_LOG_END = b"m/log_end"
K_LAST_EPOCH = b"m/last_epoch"
K_EPOCH = b"m/epoch"
K_LOG_START = b"m/log_start"
K_LOG_START_EPOCH = b"m/log_start_epoch"
P_LOG, P_VEC, P_PAY, P_FREE = b"g/", b"v/", b"p/", b"f/"
SNAPSHOT_CHUNK_KEYS = 2000


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _log_key(lsn: int) -> bytes:
    return P_LOG + _u64(lsn)


@dataclass(frozen=True, slots=True)
class ShardSpec:
    collection_id: str
    shard: int
    dim: int
    metric: str
    m: int = limits.DEFAULT_HNSW_M
    ef_construction: int = limits.DEFAULT_EF_CONSTRUCTION
    ef: int = limits.DEFAULT_EF

    @property
    def name(self) -> str:
        return f"{self.collection_id}/{self.shard}"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> ShardSpec:
        return cls(**orjson.loads(raw))


@dataclass(slots=True)
class SearchHits:
    ids: list[str]
    scores: list[float]
    payloads: list[bytes]
    plan: str


@dataclass(slots=True)
class _Pending:
    batch: WriteBatch
    future: asyncio.Future[int]
    epoch: int = 0  # the router's view of the epoch; 0: no check
    min_in_sync: int = 1  # from write_consistency
    entry: node_pb2.LogEntry | None = None
    raw: bytes = b""


@dataclass(slots=True)
class ShardOptions:
    commit_mode: str = "group"  # "group" or "batch" (an fsync per batch)
    checkpoint_every_points: int = 50_000
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    log_retention_entries: int = limits.LOG_RETENTION_ENTRIES


class ShardReplica:
    def __init__(self, path: str, spec: ShardSpec, options: ShardOptions) -> None:
        self.path, self.spec, self.options = path, spec, options
        self.log = logs.ContextAdapter(log, {"shard": spec.name})
        self.db = self._open_db(os.path.join(path, "db"))
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self.ckpt_dir = os.path.join(path, "ckpt")
        os.makedirs(self.ckpt_dir, exist_ok=True)

        self.hnsw = self._new_index()
        self.lock = TaggedRWLock(lambda ef: self.hnsw.set_ef(ef))
        self.payload_index = PayloadIndex(limits.INITIAL_CAPACITY)
        self.ids_by_label = np.full(limits.INITIAL_CAPACITY, None, dtype=object)
        self.label_of: dict[str, int] = {}
        self.free: dict[int, None] = {}  # insertion-ordered set of reusable labels
        self.next_label = 0
        self.applied_lsn = 0
        self.checkpoint_lsn = 0
        # replication state (DESIGN §5)
        self.epoch = 0  # highest epoch accepted
        self.log_end = 0
        self.last_epoch = 0  # epoch of the entry at log_end
        self.log_start = 0  # a snapshot installed the state up to here; the log begins after it
        self.log_start_epoch = 0
        self.role = "standalone"  # "primary" | "follower" | "standalone" (no cluster)
        self.primary_hint = ""  # the primary this replica knows of (for error messages)
        self.replicator = None  # set on a primary by the node's membership
        self.lease_ok: Callable[[], bool] = lambda: True
        self.commit_lock: asyncio.Lock | None = None
        self._points_since_ckpt = 0
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._closing = False
        self._writer: asyncio.Task | None = None
        self.broken: str | None = None
        self.incarnation = ""  # set by the registry

    @staticmethod
    def _open_db(path: str) -> rocksdict.Rdict:
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        return rocksdict.Rdict(path, opts)

    def _new_index(self) -> HnswIndex:
        return HnswIndex(
            self.spec.dim, self.spec.metric, self.spec.m, self.spec.ef_construction, self.options.threads
        )

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> str:
        """Bring the in-memory state up to the end of the log. Returns how it got there."""
        for tmp in glob.glob(os.path.join(self.ckpt_dir, "*.tmp")):
            os.remove(tmp)
        applied = self._meta(K_APPLIED)
        log_end = self._meta(K_LOG_END) or applied
        self.epoch = self._meta(K_EPOCH)
        self.log_start, self.log_start_epoch = self._meta(K_LOG_START), self._meta(K_LOG_START_EPOCH)
        how = "empty"
        ckpt = self._newest_checkpoint(applied)
        if ckpt is not None and self._load_checkpoint(ckpt) and self._replay(ckpt, applied):
            how = f"checkpoint@{ckpt}+replay{applied - ckpt}"
        elif applied or self._meta(K_NEXT_LABEL):
            self._rebuild_from_rows()
            how = "rebuild"
        else:
            self.hnsw.init_empty()
        self.applied_lsn = self.log_end = applied
        self.last_epoch = self._meta(K_LAST_EPOCH) if self._meta(K_LOG_END) else self._entry_epoch(applied)
        if log_end > applied:
            self._commit_tail(log_end)
            how += f"+tail{log_end - applied}"
        return how

    def start(self) -> None:
        self.commit_lock = asyncio.Lock()
        self._queue = asyncio.Queue(maxsize=limits.WRITE_QUEUE_DEPTH_MAX)
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"writer-{self.spec.name}"
        )

    async def close(self, checkpoint: bool = True) -> None:
        """Finish queued writes, stop the writer, optionally checkpoint, close RocksDB."""
        self._closing = True
        if self._writer is not None and self._queue is not None:
            if not self._writer.done():
                await self._queue.put(None)  # after every queued batch
            await self._writer
            self._writer = None
        if checkpoint and self.applied_lsn > self.checkpoint_lsn and not self.broken:
            await asyncio.to_thread(self.checkpoint)
        self.db.close()

    def _meta(self, key: bytes) -> int:
        raw = self.db.get(key)
        return int.from_bytes(raw, "big") if raw else 0

    def _entry_epoch(self, lsn: int) -> int:
        """Epoch of the entry at lsn (0 for lsn 0; -1 if this replica does not hold it)."""
        if lsn == 0:
            return 0
        if lsn == self.log_start:
            return self.log_start_epoch
        if lsn == self.log_end and self.last_epoch:
            return self.last_epoch
        raw = self.db.get(_log_key(lsn))
        return node_pb2.LogEntry.FromString(raw).epoch if raw else -1

    # ---------------------------------------------------------------- writes (primary)

    async def write(self, batch: WriteBatch, epoch: int = 0, min_in_sync: int = 1) -> int:
        """Make a validated batch durable on every in-sync replica and visible; returns its LSN."""
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        if self._closing:
            raise Unavailable(f"shard {self.spec.name} is closing")
        refusal = self._refusal(epoch, min_in_sync)
        if refusal is not None:
            raise refusal
        assert self._queue is not None, "shard not started"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(batch, fut, epoch, min_in_sync))
        except asyncio.QueueFull:
            raise ResourceExhausted(
                f"write queue of shard {self.spec.name} is full ({limits.WRITE_QUEUE_DEPTH_MAX} batches)"
            ) from None
        return await fut

    def _refusal(self, epoch: int, min_in_sync: int) -> Exception | None:
        """Why this replica must not take a write now (fencing, DESIGN §5), or None."""
        if self.role == "follower":
            return FailedPrecondition(
                f"this replica of shard {self.spec.name} is a follower in epoch {self.epoch}; "
                f"the primary is {self.primary_hint or 'unknown'}",
                "epoch",
            )
        if epoch and epoch != self.epoch:
            return FailedPrecondition(
                f"epoch {epoch} is not the current epoch {self.epoch} of shard {self.spec.name}", "epoch"
            )
        if self.role == "primary" and not self.lease_ok():
            return Unavailable(f"the primary of shard {self.spec.name} cannot renew its lease", "epoch")
        if self.replicator is not None and self.replicator.in_sync_size() < min_in_sync:
            return Unavailable(
                f"shard {self.spec.name} has {self.replicator.in_sync_size()} in-sync replicas; "
                f"the write needs {min_in_sync}",
                "write_consistency",
            )
        return None

    def check_strong_read(self, epoch: int) -> None:
        """A strong read sees every acknowledged write only on the current primary, and the
        primary knows it is current only while its lease lives: a paused or cut-off primary
        whose lease lapsed may already have a successor acknowledging writes it never saw."""
        if self.role == "standalone":
            return
        if self.role != "primary":
            raise Unavailable(
                f"this replica of shard {self.spec.name} is a follower in epoch {self.epoch}; "
                "strong reads are served by the primary",
                "consistency",
            )
        if epoch and epoch != self.epoch:
            raise Unavailable(
                f"strong read for epoch {epoch}, but shard {self.spec.name} is in epoch {self.epoch}",
                "consistency",
            )
        if not self.lease_ok():
            raise Unavailable(
                f"the primary of shard {self.spec.name} cannot renew its lease; strong reads wait for it",
                "consistency",
            )

    async def _write_loop(self) -> None:
        assert self._queue is not None and self.commit_lock is not None
        group_max = 1 if self.options.commit_mode == "batch" else limits.GROUP_COMMIT_BATCHES_MAX
        while True:
            first = await self._queue.get()
            if first is None:
                return
            group = [first]
            stop = False
            while len(group) < group_max and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            async with self.commit_lock:
                if not await self._commit_group(group):
                    return  # out of service
            if self._points_since_ckpt >= self.options.checkpoint_every_points:
                await asyncio.to_thread(self.checkpoint)
            if stop:
                return

    async def _commit_group(self, group: list[_Pending]) -> bool:
        """Append, replicate, apply, acknowledge. False if the shard went out of service."""
        ready = []
        for p in group:
            refusal = self._refusal(p.epoch, p.min_in_sync)  # the role may have changed while queued
            if refusal is not None:
                p.future.set_exception(refusal)
            else:
                ready.append(p)
        if not ready:
            return True
        # What this group is accepted under, captured once: the shard map may demote this replica
        # while the group is in flight (the membership task runs concurrently). The group is
        # stamped with this epoch and must be replicated through this replicator; a demotion
        # stops it, so the group cannot commit. A primary is never treated as standalone.
        role, epoch, replicator = self.role, self.epoch, self.replicator
        if role == "primary" and replicator is None:
            self._fail(ready, Unavailable(f"shard {self.spec.name} is changing primary", "epoch"))
            return True
        try:
            prev_lsn, prev_epoch = await asyncio.to_thread(self._append, ready, epoch)
        except Exception as exc:  # storage failure: nothing was appended
            self.log.exception("append failed")
            self._fail(ready, Unavailable(f"storage write failed: {exc}"))
            return True
        if replicator is not None:
            try:
                await replicator.replicate([p.raw for p in ready], prev_lsn, prev_epoch)
            except Exception as exc:
                # Not committed: nobody was told it succeeded. Drop it from this log; if a
                # follower kept it, the next primary decides whether it stays.
                await asyncio.to_thread(self._truncate_uncommitted)
                self._fail(ready, Unavailable(f"write not committed on shard {self.spec.name}: {exc}"))
                return True
        try:
            await asyncio.to_thread(self._apply_committed, ready)
        except Exception as exc:
            # Durable but not applied: the in-memory state can no longer be trusted.
            # Refuse further traffic; a restart replays the log and recovers.
            self.broken = f"apply failed after a durable write: {exc}"
            self.log.exception("apply failed; shard out of service until restart")
            self._fail_all(ready, Internal(self.broken))
            return False
        for p in ready:
            if not p.future.done():
                assert p.entry is not None
                p.future.set_result(p.entry.lsn)
        self._points_since_ckpt += sum(len(p.batch.ids) + len(p.batch.delete_ids) for p in ready)
        return True

    @staticmethod
    def _fail(group: list[_Pending], exc: Exception) -> None:
        for p in group:
            if not p.future.done():
                p.future.set_exception(exc)

    def _fail_all(self, group: list[_Pending], exc: Exception) -> None:
        """Fail a group and everything still queued (the writer is about to stop)."""
        assert self._queue is not None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                group.append(item)
        self._fail(group, exc)

    def _append(self, group: list[_Pending], epoch: int) -> tuple[int, int]:
        """Assign LSNs and labels to a group and make its log entries durable in one WriteBatch.
        Touches no in-memory state but log_end: if the write fails, nothing needs undoing.
        Returns (prev_lsn, prev_epoch): where the group's entries attach."""
        prev_lsn, prev_epoch = self.log_end, self.last_epoch
        wb = rocksdict.WriteBatch(raw_mode=True)
        lsn, next_label = self.log_end, self.next_label
        assigned: dict[str, int | None] = {}  # this group's view of id -> label
        free_iter = iter(self.free)  # labels freed by this group are reused only by a later one
        for p in group:
            b = p.batch
            lsn += 1
            labels = np.empty(len(b.ids), dtype="<u8")
            for i, pid in enumerate(b.ids):
                label = assigned.get(pid) if pid in assigned else self.label_of.get(pid)
                if label is None:
                    label = next(free_iter, None)
                    if label is None:
                        label, next_label = next_label, next_label + 1
                    assigned[pid] = label
                labels[i] = label
            del_ids, del_labels = [], []
            for pid in b.delete_ids:
                label = assigned.get(pid) if pid in assigned else self.label_of.get(pid)
                if label is None:
                    continue  # deleting an absent id is a no-op (idempotent retries)
                assigned[pid] = None
                del_ids.append(pid)
                del_labels.append(label)
            entry = node_pb2.LogEntry(
                lsn=lsn,
                epoch=epoch,
                ids=b.ids,
                labels=labels.tobytes(),
                vectors=node_pb2.Vectors(
                    data=b.vectors.astype("<f4", copy=False).tobytes(), count=len(b.ids), dim=self.spec.dim
                ),
                payloads=b.payload_blobs,
                delete_ids=del_ids,
                delete_labels=np.asarray(del_labels, dtype="<u8").tobytes(),
            )
            p.entry, p.raw = entry, entry.SerializeToString()
            wb.put(_log_key(lsn), p.raw)
        wb.put(K_LOG_END, _u64(lsn))
        wb.put(K_LAST_EPOCH, _u64(epoch))
        self.db.write(wb, self._sync)
        self.log_end, self.last_epoch = lsn, epoch
        return prev_lsn, prev_epoch

    def _rows(self, wb: rocksdict.WriteBatch, entry: node_pb2.LogEntry) -> int:
        """Add an entry's row changes to wb; returns the label end it needs. Order within a batch
        matters (a label freed by one entry may be reused by a later one), and is kept."""
        del_labels = np.frombuffer(entry.delete_labels, dtype="<u8")
        for pid, label in zip(entry.delete_ids, del_labels.tolist(), strict=True):
            key = pid.encode()
            wb.delete(P_VEC + key)
            wb.delete(P_PAY + key)
            wb.put(P_FREE + _u64(label), b"")
        labels = np.frombuffer(entry.labels, dtype="<u8")
        row_bytes = self.spec.dim * 4
        data = entry.vectors.data
        payloads = entry.payloads
        for i, pid in enumerate(entry.ids):
            key = pid.encode()
            wb.put(P_VEC + key, labels[i : i + 1].tobytes() + data[i * row_bytes : (i + 1) * row_bytes])
            wb.put(P_PAY + key, payloads[i] if payloads else b"")
            wb.delete(P_FREE + _u64(int(labels[i])))
        return int(labels.max()) + 1 if len(labels) else 0

    def _apply_committed(self, group: list[_Pending]) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        end = self.next_label
        for p in group:
            assert p.entry is not None
            end = max(end, self._rows(wb, p.entry))
        wb.put(K_APPLIED, _u64(group[-1].entry.lsn))
        wb.put(K_NEXT_LABEL, _u64(end))
        self.db.write(wb)  # not synced: the log already is, and replay rebuilds these rows
        with self.lock.exclusive():
            for p in group:
                self._apply(p.entry, p.batch.vectors, p.batch.payloads)

    def _truncate_uncommitted(self) -> None:
        """Remove log entries after applied_lsn (appended, never committed)."""
        if self.log_end <= self.applied_lsn:
            return
        self.log.warning(
            "truncating uncommitted entries",
            extra={"from": self.applied_lsn + 1, "to": self.log_end, "epoch": self.epoch},
        )
        last_epoch = self._entry_epoch(self.applied_lsn)
        self.db.delete_range(_log_key(self.applied_lsn + 1), _log_key(self.log_end + 1))
        wb = rocksdict.WriteBatch(raw_mode=True)
        wb.put(K_LOG_END, _u64(self.applied_lsn))
        wb.put(K_LAST_EPOCH, _u64(last_epoch))
        self.db.write(wb, self._sync)
        self.log_end, self.last_epoch = self.applied_lsn, last_epoch

    def _commit_tail(self, log_end: int) -> None:
        """Apply log entries after applied_lsn (rows and memory), on open."""
        for _, raw in self._scan(P_LOG, _log_key(self.applied_lsn + 1)):
            entry = node_pb2.LogEntry.FromString(raw)
            if entry.lsn > log_end:
                break
            self._apply_entries([entry], sync=False)
        self.log_end, self.last_epoch = self.applied_lsn, self._entry_epoch(self.applied_lsn)

    def _apply_entries(
        self,
        entries: list[node_pb2.LogEntry],
        sync: bool,
        log_too: bool = False,
        raws: list[bytes] | None = None,
        epoch: int | None = None,
    ) -> None:
        """Rows (and, for a follower, the log entries and epoch) in one WriteBatch, then memory."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        end = self.next_label
        for i, entry in enumerate(entries):
            if log_too:
                wb.put(_log_key(entry.lsn), raws[i] if raws else entry.SerializeToString())
            end = max(end, self._rows(wb, entry))
        last = entries[-1]
        wb.put(K_APPLIED, _u64(last.lsn))
        wb.put(K_NEXT_LABEL, _u64(end))
        wb.put(K_LOG_END, _u64(last.lsn))
        wb.put(K_LAST_EPOCH, _u64(last.epoch))
        if epoch is not None and epoch > self.epoch:
            wb.put(K_EPOCH, _u64(epoch))
        if sync:
            self.db.write(wb, self._sync)
        else:
            self.db.write(wb)
        if epoch is not None and epoch > self.epoch:
            self.epoch = epoch
        with self.lock.exclusive():
            for entry in entries:
                vectors = np.frombuffer(entry.vectors.data, dtype="<f4").reshape(-1, self.spec.dim)
                self._apply(entry, vectors, [orjson.loads(b) if b else {} for b in entry.payloads])
        self.log_end, self.last_epoch = last.lsn, last.epoch

    # ---------------------------------------------------------------- roles and replication (follower)

    def set_epoch(self, epoch: int) -> None:
        """Durably accept a (higher) epoch: older ones are refused from now on."""
        if epoch > self.epoch:
            self.db.put(K_EPOCH, _u64(epoch), self._sync)
            self.epoch = epoch

    def become_primary(self, epoch: int, replicator) -> None:
        self.set_epoch(epoch)
        if self.replicator is not None and self.replicator is not replicator:
            self.replicator.stop()
        self.role, self.primary_hint, self.replicator = "primary", "", replicator

    def become_follower(self, epoch: int, primary: str) -> None:
        self.set_epoch(epoch)
        self.role, self.primary_hint = "follower", primary
        if self.replicator is not None:
            self.replicator.stop()
            self.replicator = None

    async def append_replicated(self, req: node_pb2.ReplicateRequest) -> node_pb2.ReplicateResponse:
        """A follower takes entries from its primary (DESIGN §5)."""
        assert self.commit_lock is not None
        async with self.commit_lock:
            return await asyncio.to_thread(self._append_replicated, req)

    def _append_replicated(self, req: node_pb2.ReplicateRequest) -> node_pb2.ReplicateResponse:
        entries = [node_pb2.LogEntry.FromString(raw) for raw in req.entries]
        for i, e in enumerate(entries):
            if e.lsn != req.prev_lsn + 1 + i:
                raise FailedPrecondition(
                    f"entry {i} has LSN {e.lsn}, expected {req.prev_lsn + 1 + i}", "entries"
                )
        if self.role == "primary" and req.epoch > self.epoch:
            self.role = "follower"  # a newer primary exists; the map will confirm
        decision = log_matching.decide(
            self.epoch,
            self.log_start,
            self.log_end,
            self._entry_epoch,
            req.epoch,
            req.prev_lsn,
            req.prev_epoch,
            [e.epoch for e in entries],
        )
        if isinstance(decision, log_matching.Fenced):
            raise FailedPrecondition(
                f"epoch {req.epoch} is fenced: shard {self.spec.name} accepted epoch {decision.epoch}",
                "epoch",
            )
        status = node_pb2.REPLICATE_OK
        if isinstance(decision, log_matching.Behind):
            status = node_pb2.REPLICATE_BEHIND
        elif isinstance(decision, log_matching.Diverged):
            status = node_pb2.REPLICATE_DIVERGED
        else:
            new = entries[decision.skip :]
            if new:
                self._apply_entries(
                    new, sync=True, log_too=True, raws=list(req.entries[decision.skip :]), epoch=req.epoch
                )
            else:
                self.set_epoch(req.epoch)
            if self.role == "standalone":
                self.role = "follower"
            self.primary_hint = req.primary
        return node_pb2.ReplicateResponse(
            status=status, log_end=self.log_end, last_epoch=self.last_epoch, incarnation=self.incarnation
        )

    # ---------------------------------------------------------------- snapshots

    def read_log(self, from_lsn: int, count: int) -> list[bytes] | None:
        """Serialized entries from_lsn.. (at most count, up to log_end); None if the log no
        longer reaches back to from_lsn (trimmed, or before a snapshot): send a snapshot."""
        if from_lsn <= self.log_start:
            return None
        out = []
        for _, raw in self._scan(P_LOG, _log_key(from_lsn)):
            if len(out) >= count or len(out) + from_lsn > self.log_end:
                break
            out.append(raw)
        if from_lsn <= self.log_end and (not out or node_pb2.LogEntry.FromString(out[0]).lsn != from_lsn):
            return None
        return out

    def snapshot_chunks(self) -> Iterator[tuple[int, int, int, list[tuple[bytes, bytes]]]]:
        """(lsn, lsn_epoch, next_label, rows) chunks of this replica's committed state, read from
        one RocksDB snapshot. Rows are raw v/, p/ and f/ keys."""
        snap = self.db.snapshot()
        meta = dict(snap.items(from_key=b"m/"))
        lsn = int.from_bytes(meta.get(K_APPLIED, b"\0" * 8), "big")
        next_label = int.from_bytes(meta.get(K_NEXT_LABEL, b"\0" * 8), "big")
        if lsn == self.log_start:
            lsn_epoch = self.log_start_epoch
        else:
            raw = dict(snap.items(from_key=_log_key(lsn))).get(_log_key(lsn))
            lsn_epoch = node_pb2.LogEntry.FromString(raw).epoch if raw else 0
        yield lsn, lsn_epoch, next_label, []  # the position first, even for an empty shard
        chunk: list[tuple[bytes, bytes]] = []
        for prefix in (P_VEC, P_PAY, P_FREE):
            for key, value in snap.items(from_key=prefix):
                if not key.startswith(prefix):
                    break
                chunk.append((key, value))
                if len(chunk) >= SNAPSHOT_CHUNK_KEYS:
                    yield lsn, lsn_epoch, next_label, chunk
                    chunk = []
        if chunk:
            yield lsn, lsn_epoch, next_label, chunk

    def install_snapshot(
        self,
        epoch: int,
        lsn: int,
        lsn_epoch: int,
        next_label: int,
        chunks: Iterator[list[tuple[bytes, bytes]]],
    ) -> None:
        """Replace this replica's whole state with a primary's snapshot (a follower whose log
        diverged or fell behind the primary's log). Blocking: run in a thread, under commit_lock."""
        if epoch < self.epoch:
            raise FailedPrecondition(f"epoch {epoch} is fenced: accepted epoch {self.epoch}", "epoch")
        incoming = os.path.join(self.path, "db.incoming")
        shutil.rmtree(incoming, ignore_errors=True)
        new = self._open_db(incoming)
        count = 0
        for rows in chunks:
            wb = rocksdict.WriteBatch(raw_mode=True)
            for key, value in rows:
                wb.put(key, value)
            new.write(wb)
            count += len(rows)
        wb = rocksdict.WriteBatch(raw_mode=True)
        for key, value in (
            (K_APPLIED, lsn),
            (K_NEXT_LABEL, next_label),
            (K_LOG_END, lsn),
            (K_LAST_EPOCH, lsn_epoch),
            (K_EPOCH, max(epoch, self.epoch)),
            (K_LOG_START, lsn),
            (K_LOG_START_EPOCH, lsn_epoch),
        ):
            wb.put(key, _u64(value))
        new.write(wb, self._sync)
        new.close()
        with self.lock.exclusive():
            self.db.close()
            old = os.path.join(self.path, "db.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(os.path.join(self.path, "db"), old)
            os.replace(incoming, os.path.join(self.path, "db"))
            shutil.rmtree(old, ignore_errors=True)
            for f in glob.glob(os.path.join(self.ckpt_dir, "ckpt-*")):
                os.remove(f)
            self.db = self._open_db(os.path.join(self.path, "db"))
            self.epoch = max(epoch, self.epoch)
            self.log_start, self.log_start_epoch = lsn, lsn_epoch
            self._rebuild_from_rows()
            self.applied_lsn = self.log_end = lsn
            self.last_epoch = lsn_epoch
            self.checkpoint_lsn = 0
            self.lock.reset_tag()
        self.log.info("snapshot installed", extra={"lsn": lsn, "rows": count, "epoch": self.epoch})

    def _apply(self, entry: node_pb2.LogEntry, vectors: np.ndarray, payloads: list[dict]) -> None:
        """Apply one log entry to the in-memory state. The only mutation path, shared by live
        writes and replay, so replay reproduces the same labels and rows."""
        del_labels = np.frombuffer(entry.delete_labels, dtype="<u8").astype(np.int64)
        if len(del_labels):
            self.hnsw.delete(del_labels)
            self.payload_index.remove(del_labels)
            self.ids_by_label[del_labels] = None
            for pid in entry.delete_ids:
                del self.label_of[pid]
            self.free.update(dict.fromkeys(del_labels.tolist()))
        labels = np.frombuffer(entry.labels, dtype="<u8").astype(np.int64)
        if len(labels):
            end = max(int(labels.max()) + 1, self.next_label)
            cap = self.hnsw.ensure_capacity(end)
            self._grow(cap)
            for label in labels.tolist():
                self.free.pop(label, None)
            self.hnsw.add(vectors, labels)
            ids = np.empty(len(labels), dtype=object)
            ids[:] = list(entry.ids)
            self.ids_by_label[labels] = ids
            self.label_of.update(zip(entry.ids, labels.tolist(), strict=True))
            self.payload_index.put(labels, payloads)
            self.next_label = end
        self.applied_lsn = entry.lsn

    def _grow(self, capacity: int) -> None:
        if capacity > len(self.ids_by_label):
            grown = np.full(capacity, None, dtype=object)
            grown[: len(self.ids_by_label)] = self.ids_by_label
            self.ids_by_label = grown
        self.payload_index.grow(capacity)

    # ---------------------------------------------------------------- checkpoint / recovery

    def checkpoint(self) -> None:
        """Persist the derived state at applied_lsn. Called only by the writer (or at close),
        so no mutation runs concurrently; searches may continue."""
        lsn = self.applied_lsn
        if lsn == self.checkpoint_lsn:
            return
        t0 = time.monotonic()
        base = os.path.join(self.ckpt_dir, f"ckpt-{lsn:020d}")
        self.hnsw.save(base + ".hnsw")
        state = {
            "lsn": lsn,
            "next_label": self.next_label,
            "free": list(self.free),
            "ids_by_label": self.ids_by_label[: self.next_label],
            "payload_index": self.payload_index,
        }
        tmp = base + ".state.tmp"
        with open(tmp, "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, base + ".state")
        fsync_path(self.ckpt_dir)
        for old in glob.glob(os.path.join(self.ckpt_dir, "ckpt-*")):
            if not old.startswith(base):
                os.remove(old)
        self.checkpoint_lsn = lsn
        self._points_since_ckpt = 0
        keep_from = lsn - self.options.log_retention_entries
        if keep_from > 1:
            self.db.delete_range(_log_key(0), _log_key(keep_from))
        self.log.info(
            "checkpoint",
            extra={"lsn": lsn, "seconds": round(time.monotonic() - t0, 3), "count": len(self.label_of)},
        )

    def _newest_checkpoint(self, applied: int) -> int | None:
        lsns = []
        for path in glob.glob(os.path.join(self.ckpt_dir, "ckpt-*.state")):
            lsn = int(os.path.basename(path)[5:25])
            if lsn <= applied and os.path.exists(path[: -len(".state")] + ".hnsw"):
                lsns.append(lsn)
        return max(lsns) if lsns else None

    def _load_checkpoint(self, lsn: int) -> bool:
        base = os.path.join(self.ckpt_dir, f"ckpt-{lsn:020d}")
        try:
            with open(base + ".state", "rb") as f:
                state = pickle.load(f)
            pidx: PayloadIndex = state["payload_index"]
            self.hnsw.load(base + ".hnsw", capacity=pidx.capacity)
        except Exception:
            self.log.exception("checkpoint unreadable; rebuilding", extra={"lsn": lsn})
            self.hnsw = self._new_index()
            return False
        self.payload_index = pidx
        self.ids_by_label = np.full(pidx.capacity, None, dtype=object)
        self.ids_by_label[: len(state["ids_by_label"])] = state["ids_by_label"]
        self.label_of = {pid: i for i, pid in enumerate(state["ids_by_label"].tolist()) if pid is not None}
        self.free = dict.fromkeys(state["free"])
        self.next_label = state["next_label"]
        self.applied_lsn = self.checkpoint_lsn = lsn
        return True

    def _replay(self, after: int, applied: int) -> bool:
        """Apply log entries (after, applied] to memory (their rows are already stored)."""
        lsn = after
        for _, raw in self._scan(P_LOG, _log_key(after + 1)):
            entry = node_pb2.LogEntry.FromString(raw)
            if entry.lsn != lsn + 1 or entry.lsn > applied:
                break
            vectors = np.frombuffer(entry.vectors.data, dtype="<f4").reshape(-1, self.spec.dim)
            payloads = [orjson.loads(b) if b else {} for b in entry.payloads]
            self._apply(entry, vectors, payloads)
            lsn = entry.lsn
        if lsn != applied:
            self.log.warning(
                "log does not reach from checkpoint to applied_lsn; rebuilding",
                extra={"checkpoint": after, "reached": lsn, "applied": applied},
            )
            return False
        return True

    def _rebuild_from_rows(self) -> None:
        """Recreate the derived state from the stored rows (no usable checkpoint)."""
        t0 = time.monotonic()
        self.hnsw = self._new_index()
        self.lock.reset_tag()
        next_label = self._meta(K_NEXT_LABEL)
        cap = limits.INITIAL_CAPACITY
        while cap < next_label:
            cap *= 2
        self.hnsw.init_empty(cap)
        self.payload_index = PayloadIndex(cap)
        self.ids_by_label = np.full(cap, None, dtype=object)
        self.label_of = {}
        self.free = {int.from_bytes(k[2:], "big"): None for k, _ in self._scan(P_FREE)}
        chunk_ids: list[str] = []
        chunk_rows: list[bytes] = []

        def flush() -> None:
            if not chunk_ids:
                return
            raw = b"".join(chunk_rows)
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(len(chunk_rows), -1)
            labels = rec[:, :8].copy().view("<u8").ravel().astype(np.int64)
            vectors = rec[:, 8:].copy().view("<f4")
            pays = self.db.get([P_PAY + pid.encode() for pid in chunk_ids])
            self.hnsw.add(vectors, labels)
            ids = np.empty(len(labels), dtype=object)
            ids[:] = chunk_ids
            self.ids_by_label[labels] = ids
            self.label_of.update(zip(chunk_ids, labels.tolist(), strict=True))
            self.payload_index.put(labels, [orjson.loads(p) if p else {} for p in pays])
            chunk_ids.clear()
            chunk_rows.clear()

        for key, row in self._scan(P_VEC):
            chunk_ids.append(key[2:].decode())
            chunk_rows.append(row)
            if len(chunk_ids) >= 10_000:
                flush()
        flush()
        self.next_label = next_label
        self.log.info(
            "rebuilt from rows",
            extra={"count": len(self.label_of), "seconds": round(time.monotonic() - t0, 3)},
        )

    def _scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start or prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()

    # ---------------------------------------------------------------- reads

    async def wait_applied(self, lsn: int, timeout_s: float) -> None:
        """For a session read: return once `lsn` is applied here, or refuse after timeout_s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.applied_lsn < lsn:
            if loop.time() >= deadline:
                raise Unavailable(
                    f"this replica of shard {self.spec.name} has applied LSN {self.applied_lsn}; "
                    f"the session needs {lsn}",
                    "session",
                )
            await asyncio.sleep(0.002)

    def search(
        self, queries: np.ndarray, k: int, ef: int, flt: filters.Filter | None, with_payload: bool
    ) -> list[SearchHits]:
        """Top-k per query, best first. Blocking: call from a worker thread."""
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        ef = max(ef or self.spec.ef, k)
        with self.lock.shared(ef):
            labels, scores, plan = self._search_labels(queries, k, flt)
            ids = self.ids_by_label[labels].tolist()  # one fancy index for the whole batch
        need_payloads = with_payload or flt is not None
        blobs: dict[str, bytes] = {}
        if need_payloads:
            unique = list({pid for row in ids for pid in row})
            if unique:
                blobs = dict(zip(unique, self.db.get([P_PAY + pid.encode() for pid in unique]), strict=True))
        if not need_payloads:  # nothing to re-check: hnswlib never returns a deleted label
            return [SearchHits(row, sc, [], plan) for row, sc in zip(ids, scores.tolist(), strict=True)]
        out = []
        for row_ids, row_scores in zip(ids, scores, strict=True):
            hits = SearchHits([], [], [], plan)
            for pid, score in zip(row_ids, row_scores.tolist(), strict=True):
                blob = blobs.get(pid) if need_payloads else b""
                if need_payloads and blob is None:
                    continue  # deleted after the graph search: not a hit any more
                if flt is not None and not filters.matches(flt, orjson.loads(blob) if blob else {}):
                    continue  # a hashed long string collided, or the payload just changed
                hits.ids.append(pid)
                hits.scores.append(score)
                if with_payload:
                    hits.payloads.append(blob or b"")
            out.append(hits)
        return out

    def _search_labels(
        self, queries: np.ndarray, k: int, flt: filters.Filter | None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        n_labels, live = self.next_label, len(self.label_of)
        empty = (np.empty((len(queries), 0), dtype=np.int64), np.empty((len(queries), 0)), "empty")
        if live == 0:
            return empty
        threads = min(self.options.threads, len(queries))
        if flt is None:
            try:
                labels, scores = self.hnsw.search(queries, min(k, live), threads)
                return labels, scores, "hnsw"
            except RuntimeError:  # hnswlib found fewer than k (many deletions): answer exactly
                return self._exact(queries, np.flatnonzero(self.payload_index.live[:n_labels]), k)
        mask = self.payload_index.mask(flt, n_labels)
        candidates = np.flatnonzero(mask)
        if len(candidates) == 0:
            return empty
        if filter_plan(len(candidates), live) == EXACT:
            return self._exact(queries, candidates, k)
        allowed = mask.tobytes()
        try:
            labels, dist = self.hnsw.index.knn_query(
                queries,
                k=min(k, len(candidates)),
                num_threads=threads,
                filter=lambda label: allowed[label] == 1,
            )
        except RuntimeError:
            return self._exact(queries, candidates, k)
        return labels.astype(np.int64), scores_from_distances(self.spec.metric, dist), "hnsw-filtered"

    def _exact(
        self, queries: np.ndarray, candidates: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Brute force over candidates, in chunks so memory stays bounded however many there are."""
        chunk = limits.EXACT_CHUNK_ROWS
        best_labels = np.empty((len(queries), 0), dtype=np.int64)
        best_scores = np.empty((len(queries), 0), dtype=np.float32)
        for start in range(0, len(candidates), chunk):
            part = candidates[start : start + chunk]
            scores = exact_scores(self.spec.metric, self.hnsw.vectors(part), queries)
            labels = np.broadcast_to(part, scores.shape)
            if best_labels.shape[1]:
                scores = np.concatenate([best_scores, scores], axis=1)
                labels = np.concatenate([best_labels, labels], axis=1)
            top = best_first(self.spec.metric, scores, k)
            best_labels = np.take_along_axis(labels, top, 1)
            best_scores = np.take_along_axis(scores, top, 1)
        return best_labels, best_scores, "exact"

    def get(self, ids: list[str], with_vectors: bool, with_payload: bool) -> list[tuple[str, bytes, bytes]]:
        """(id, vector bytes, payload JSON) for each id that exists, in request order."""
        keys = [pid.encode() for pid in ids]
        rows = self.db.get([P_VEC + k for k in keys])
        pays = self.db.get([P_PAY + k for k in keys]) if with_payload else [b""] * len(ids)
        return [
            (pid, row[8:] if with_vectors else b"", pay or b"")
            for pid, row, pay in zip(ids, rows, pays, strict=True)
            if row is not None
        ]

    def stats(self) -> dict[str, int]:
        return {
            "count": len(self.label_of),
            "applied_lsn": self.applied_lsn,
            "checkpoint_lsn": self.checkpoint_lsn,
            "index_bytes": self.hnsw.bytes_estimate(),
            "capacity": self.hnsw.capacity,
            "free_labels": len(self.free),
            "epoch": self.epoch,
            "log_end": self.log_end,
            "last_epoch": self.last_epoch,
        }
