"""One shard replica: durable state in its own RocksDB, derived HNSW + payload index in memory.

Write path (one writer task per shard, DESIGN §4):
  validated batch -> queue -> writer assigns LSN and labels -> ONE RocksDB WriteBatch holding
  the log entry, rows, free-label changes and `applied_lsn` -> sync write (fsync) -> apply the
  entry to the in-memory state under the exclusive lock -> acknowledge.
With group commit the writer takes every batch already queued (up to GROUP_COMMIT_BATCHES_MAX)
into the same WriteBatch, so one fsync covers them; LSN n+1 can never be durable without n
because they are in one atomic write.

Recovery: the in-memory state (graph, label maps, payload index) is a pure function of the
log. A checkpoint stores it with the LSN it covers (`ckpt-<lsn>.hnsw` then `ckpt-<lsn>.state`,
each temp + fsync + rename; the state file's presence marks it complete). On open: load the
newest checkpoint, replay the log after it with the labels recorded in each entry (the same
code that applies live writes), or, if that is impossible, rebuild from the stored rows.

RocksDB key layout (raw bytes):
  m/applied_lsn, m/next_label        u64 big-endian
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
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import orjson
import rocksdict

from quartz_cluster import filters, limits, logs
from quartz_cluster.errors import Internal, ResourceExhausted, Unavailable
from quartz_cluster.node.hnsw_index import (
    HnswIndex,
    best_first,
    exact_scores,
    fsync_dir,
    scores_from_distances,
)
from quartz_cluster.node.payload_index import PayloadIndex
from quartz_cluster.node.rwlock import TaggedRWLock
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.validation import WriteBatch

log = logging.getLogger("quartz.shard")

K_APPLIED = b"m/applied_lsn"
K_NEXT_LABEL = b"m/next_label"
P_LOG, P_VEC, P_PAY, P_FREE = b"g/", b"v/", b"p/", b"f/"


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
    entry: node_pb2.LogEntry | None = None
    labels: np.ndarray | None = None


@dataclass(slots=True)
class ShardOptions:
    commit_mode: str = "group"  # "group" or "batch" (an fsync per batch)
    checkpoint_every_points: int = 50_000
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)


class ShardReplica:
    def __init__(self, path: str, spec: ShardSpec, options: ShardOptions) -> None:
        self.path, self.spec, self.options = path, spec, options
        self.log = logs.ContextAdapter(log, {"shard": spec.name})
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = rocksdict.Rdict(os.path.join(path, "db"), opts)
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self.ckpt_dir = os.path.join(path, "ckpt")
        os.makedirs(self.ckpt_dir, exist_ok=True)

        self.hnsw = HnswIndex(spec.dim, spec.metric, spec.m, spec.ef_construction, options.threads)
        self.lock = TaggedRWLock(self.hnsw.set_ef)
        self.payload_index = PayloadIndex(limits.INITIAL_CAPACITY)
        self.ids_by_label = np.full(limits.INITIAL_CAPACITY, None, dtype=object)
        self.label_of: dict[str, int] = {}
        self.free: dict[int, None] = {}  # insertion-ordered set of reusable labels
        self.next_label = 0
        self.applied_lsn = 0
        self.checkpoint_lsn = 0
        self._points_since_ckpt = 0
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._closing = False
        self._writer: asyncio.Task | None = None
        self.broken: str | None = None
        self.incarnation = ""  # set by the registry

    # ---------------------------------------------------------------- lifecycle

    def load(self) -> str:
        """Bring the in-memory state up to `applied_lsn`. Returns how: checkpoint / rebuild."""
        for tmp in glob.glob(os.path.join(self.ckpt_dir, "*.tmp")):
            os.remove(tmp)
        applied = self._meta(K_APPLIED)
        how = "empty"
        ckpt = self._newest_checkpoint(applied)
        if ckpt is not None and self._load_checkpoint(ckpt) and self._replay(ckpt, applied):
            how = f"checkpoint@{ckpt}+replay{applied - ckpt}"
        elif applied or self._meta(K_NEXT_LABEL):
            self._rebuild_from_rows()
            how = "rebuild"
        else:
            self.hnsw.init_empty()
        self.applied_lsn = applied
        return how

    def start(self) -> None:
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

    # ---------------------------------------------------------------- writes

    async def write(self, batch: WriteBatch) -> int:
        """Make a validated batch durable and visible; returns its LSN."""
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        if self._closing:
            raise Unavailable(f"shard {self.spec.name} is closing")
        assert self._queue is not None, "shard not started"
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Pending(batch, fut))
        except asyncio.QueueFull:
            raise ResourceExhausted(
                f"write queue of shard {self.spec.name} is full ({limits.WRITE_QUEUE_DEPTH_MAX} batches)"
            ) from None
        return await fut

    async def _write_loop(self) -> None:
        assert self._queue is not None
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
            try:
                await asyncio.to_thread(self._plan_and_write, group)
            except Exception as exc:  # storage failure: nothing was applied in memory
                self.log.exception("write failed")
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(Unavailable(f"storage write failed: {exc}"))
                continue
            try:
                await asyncio.to_thread(self._apply_group, group)
            except Exception as exc:
                # Durable but not applied: the in-memory state can no longer be trusted.
                # Refuse further traffic; a restart replays the log and recovers.
                self.broken = f"apply failed after a durable write: {exc}"
                self.log.exception("apply failed; shard out of service until restart")
                self._fail_all(group, Internal(self.broken))
                return
            for p in group:
                if not p.future.done():
                    assert p.entry is not None
                    p.future.set_result(p.entry.lsn)
            self._points_since_ckpt += sum(len(p.batch.ids) + len(p.batch.delete_ids) for p in group)
            if self._points_since_ckpt >= self.options.checkpoint_every_points:
                await asyncio.to_thread(self.checkpoint)
            if stop:
                return

    def _fail_all(self, group: list[_Pending], exc: Exception) -> None:
        """Fail a group and everything still queued (the writer is about to stop)."""
        assert self._queue is not None
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                group.append(item)
        for p in group:
            if not p.future.done():
                p.future.set_exception(exc)

    def _plan_and_write(self, group: list[_Pending]) -> None:
        self.db.write(self._plan(group), self._sync)

    def _plan(self, group: list[_Pending]) -> rocksdict.WriteBatch:
        """Assign LSNs and labels to a group and build its one atomic WriteBatch. Touches no
        in-memory state: if the write fails, nothing needs undoing."""
        wb = rocksdict.WriteBatch(raw_mode=True)
        lsn, next_label = self.applied_lsn, self.next_label
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
                    else:
                        wb.delete(P_FREE + _u64(label))
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
                wb.delete(P_VEC + pid.encode())
                wb.delete(P_PAY + pid.encode())
                wb.put(P_FREE + _u64(label), b"")
            vec_bytes = b.vectors.astype("<f4", copy=False).tobytes()
            entry = node_pb2.LogEntry(
                lsn=lsn,
                ids=b.ids,
                labels=labels.tobytes(),
                vectors=node_pb2.Vectors(data=vec_bytes, count=len(b.ids), dim=self.spec.dim),
                payloads=b.payload_blobs,
                delete_ids=del_ids,
                delete_labels=np.asarray(del_labels, dtype="<u8").tobytes(),
            )
            wb.put(_log_key(lsn), entry.SerializeToString())
            row_bytes = self.spec.dim * 4
            for i, pid in enumerate(b.ids):
                key = pid.encode()
                wb.put(
                    P_VEC + key, labels[i : i + 1].tobytes() + vec_bytes[i * row_bytes : (i + 1) * row_bytes]
                )
                wb.put(P_PAY + key, b.payload_blobs[i])
            p.entry, p.labels = entry, labels
        wb.put(K_APPLIED, _u64(lsn))
        wb.put(K_NEXT_LABEL, _u64(next_label))
        return wb

    def _apply_group(self, group: list[_Pending]) -> None:
        with self.lock.exclusive():
            for p in group:
                assert p.entry is not None
                self._apply(p.entry, p.batch.vectors, p.batch.payloads)

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
        fsync_dir(self.ckpt_dir)
        for old in glob.glob(os.path.join(self.ckpt_dir, "ckpt-*")):
            if not old.startswith(base):
                os.remove(old)
        self.checkpoint_lsn = lsn
        self._points_since_ckpt = 0
        keep_from = lsn - limits.LOG_RETENTION_ENTRIES
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
            self.hnsw = HnswIndex(
                self.spec.dim, self.spec.metric, self.spec.m, self.spec.ef_construction, self.options.threads
            )
            self.lock = TaggedRWLock(self.hnsw.set_ef)
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
        self.hnsw = HnswIndex(
            self.spec.dim, self.spec.metric, self.spec.m, self.spec.ef_construction, self.options.threads
        )
        self.lock = TaggedRWLock(self.hnsw.set_ef)
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

    def search(
        self, queries: np.ndarray, k: int, ef: int, flt: filters.Filter | None, with_payload: bool
    ) -> list[SearchHits]:
        """Top-k per query, best first. Blocking: call from a worker thread."""
        if self.broken:
            raise Unavailable(f"shard {self.spec.name} is out of service: {self.broken}")
        ef = max(ef or self.spec.ef, k)
        with self.lock.shared(ef):
            labels, scores, plan = self._search_labels(queries, k, flt)
            ids = [self.ids_by_label[row].tolist() for row in labels]
        need_payloads = with_payload or flt is not None
        blobs: dict[str, bytes] = {}
        if need_payloads:
            unique = list({pid for row in ids for pid in row})
            if unique:
                blobs = dict(zip(unique, self.db.get([P_PAY + pid.encode() for pid in unique]), strict=True))
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
        if len(candidates) <= limits.EXACT_SEARCH_CANDIDATES_MAX:
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
        }
