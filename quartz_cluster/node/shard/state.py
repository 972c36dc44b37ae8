"""A shard replica's in-memory state: the HNSW graph, label maps and payload index.

All of it is derived from the log (ADR 1): `apply` is the only mutation path, shared by live
writes, follower appends and replay, so replay reproduces the same labels and rows. Mutations
hold `lock` exclusively (readers hold it shared, tagged with their ef: rwlock.py); they are
made only by the shard's writer.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import orjson

from quartz_cluster import limits
from quartz_cluster.node.hnsw_index import HnswIndex
from quartz_cluster.node.payload_index import PayloadIndex
from quartz_cluster.node.rwlock import TaggedRWLock
from quartz_cluster.node.shard.spec import ShardOptions, ShardSpec
from quartz_cluster.node.shard.storage import K_NEXT_LABEL, P_FREE, P_VEC, ShardStore
from quartz_cluster.proto.quartz.v1 import node_pb2

REBUILD_CHUNK_ROWS = 10_000


class StateLost(Exception):
    """Durable state changed but the in-memory state could not follow: it is no longer trusted
    until a restart rebuilds it from the log."""


def entry_vectors(entry: node_pb2.LogEntry, dim: int) -> np.ndarray:
    return np.frombuffer(entry.vectors.data, dtype="<f4").reshape(-1, dim)


def entry_payloads(entry: node_pb2.LogEntry) -> list[dict]:
    return [orjson.loads(b) if b else {} for b in entry.payloads]


class IndexState:
    def __init__(self, spec: ShardSpec, options: ShardOptions, log: logging.LoggerAdapter) -> None:
        self.spec, self.options, self.log = spec, options, log
        self.hnsw = self.new_index()
        self.lock = TaggedRWLock(lambda ef: self.hnsw.set_ef(ef))
        self.payload_index = PayloadIndex(limits.INITIAL_CAPACITY)
        self.ids_by_label = np.full(limits.INITIAL_CAPACITY, None, dtype=object)
        self.label_of: dict[str, int] = {}
        self.free: dict[int, None] = {}  # insertion-ordered set of reusable labels
        self.next_label = 0
        self.applied_lsn = 0

    def new_index(self) -> HnswIndex:
        s = self.spec
        return HnswIndex(s.dim, s.metric, s.m, s.ef_construction, self.options.threads)

    def apply(self, entry: node_pb2.LogEntry, vectors: np.ndarray, payloads: list[dict]) -> None:
        """Apply one log entry. The caller holds `lock` exclusively (or no reader can exist yet)."""
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

    def apply_entries(self, entries: list[node_pb2.LogEntry]) -> None:
        with self.lock.exclusive():
            for entry in entries:
                self.apply(entry, entry_vectors(entry, self.spec.dim), entry_payloads(entry))

    def _grow(self, capacity: int) -> None:
        if capacity > len(self.ids_by_label):
            grown = np.full(capacity, None, dtype=object)
            grown[: len(self.ids_by_label)] = self.ids_by_label
            self.ids_by_label = grown
        self.payload_index.grow(capacity)

    def rebuild_from_rows(self, store: ShardStore) -> None:
        """Recreate the whole state from the stored rows (no usable checkpoint, or a snapshot
        was installed). The caller holds `lock` exclusively or no reader can exist yet."""
        t0 = time.monotonic()
        self.hnsw = self.new_index()
        self.lock.reset_tag()
        next_label = store.meta(K_NEXT_LABEL)
        cap = limits.INITIAL_CAPACITY
        while cap < next_label:
            cap *= 2
        self.hnsw.init_empty(cap)
        self.payload_index = PayloadIndex(cap)
        self.ids_by_label = np.full(cap, None, dtype=object)
        self.label_of = {}
        self.free = {int.from_bytes(k[2:], "big"): None for k, _ in store.scan(P_FREE)}
        chunk_ids: list[str] = []
        chunk_rows: list[bytes] = []

        def flush() -> None:
            if not chunk_ids:
                return
            rec = np.frombuffer(b"".join(chunk_rows), dtype=np.uint8).reshape(len(chunk_rows), -1)
            labels = rec[:, :8].copy().view("<u8").ravel().astype(np.int64)
            vectors = rec[:, 8:].copy().view("<f4")
            pays = store.payloads(chunk_ids)
            self.hnsw.add(vectors, labels)
            ids = np.empty(len(labels), dtype=object)
            ids[:] = chunk_ids
            self.ids_by_label[labels] = ids
            self.label_of.update(zip(chunk_ids, labels.tolist(), strict=True))
            self.payload_index.put(labels, [orjson.loads(p) if p else {} for p in pays])
            chunk_ids.clear()
            chunk_rows.clear()

        for key, row in store.scan(P_VEC):
            chunk_ids.append(key[2:].decode())
            chunk_rows.append(row)
            if len(chunk_ids) >= REBUILD_CHUNK_ROWS:
                flush()
        flush()
        self.next_label = next_label
        self.log.info(
            "rebuilt from rows",
            extra={"count": len(self.label_of), "seconds": round(time.monotonic() - t0, 3)},
        )

    def stats(self) -> dict[str, int]:
        return {
            "count": len(self.label_of),
            "applied_lsn": self.applied_lsn,
            "index_bytes": self.hnsw.bytes_estimate(),
            "capacity": self.hnsw.capacity,
            "free_labels": len(self.free),
        }
