"""A shard replica's durable state: one RocksDB, its key layout, and the log on it.

The database directory in use is `db` or, after a snapshot was installed, the `db-<uuid>` that
the file `db.current` names (each install is a new generation in a directory of its own).

RocksDB key layout (raw bytes):
  m/applied_lsn, m/next_label        u64 big-endian (rows and labels reflect the log up to here)
  m/log_end, m/last_epoch            the log's last LSN and that entry's epoch
  m/epoch                            the highest epoch this replica accepted
  m/log_start, m/log_start_epoch     where a snapshot installed this replica's state
  m/history                          random bytes, new with every installed snapshot: a
                                     checkpoint taken of another history is never loaded
  g/<lsn u64 BE>                     LogEntry protobuf
  v/<id>                             label u64 LE + float32 vector as written
  p/<id>                             payload JSON
  f/<label u64 BE>                   a free (deleted, reusable) label

Mutations are made only by the shard's writer (writer.py); readers (search, get, snapshot
reads) may run in other threads at any time. The database handle is replaced only when a
snapshot is installed (`swap`), under `lock`, which also covers the synced epoch write.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator

import numpy as np
import rocksdict

from quartz_cluster.node.hnsw_index import fsync_path
from quartz_cluster.proto.quartz.v1 import node_pb2

K_APPLIED = b"m/applied_lsn"
K_NEXT_LABEL = b"m/next_label"
K_LOG_END = b"m/log_end"
K_LAST_EPOCH = b"m/last_epoch"
K_EPOCH = b"m/epoch"
K_LOG_START = b"m/log_start"
K_LOG_START_EPOCH = b"m/log_start_epoch"
K_HISTORY = b"m/history"
P_LOG, P_VEC, P_PAY, P_FREE = b"g/", b"v/", b"p/", b"f/"
CURRENT_FILE = "db.current"  # names the database directory in use (absent: "db")


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def log_key(lsn: int) -> bytes:
    return P_LOG + u64(lsn)


def open_db(path: str) -> rocksdict.Rdict:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    return rocksdict.Rdict(path, opts)


def entry_rows(wb: rocksdict.WriteBatch, entry: node_pb2.LogEntry, dim: int) -> int:
    """Add an entry's row changes to wb; returns the label end it needs. Order within a batch
    matters (a label freed by one entry may be reused by a later one), and is kept."""
    del_labels = np.frombuffer(entry.delete_labels, dtype="<u8")
    for pid, label in zip(entry.delete_ids, del_labels.tolist(), strict=True):
        key = pid.encode()
        wb.delete(P_VEC + key)
        wb.delete(P_PAY + key)
        wb.put(P_FREE + u64(label), b"")
    labels = np.frombuffer(entry.labels, dtype="<u8")
    row_bytes = dim * 4
    data = entry.vectors.data
    payloads = entry.payloads
    for i, pid in enumerate(entry.ids):
        key = pid.encode()
        wb.put(P_VEC + key, labels[i : i + 1].tobytes() + data[i * row_bytes : (i + 1) * row_bytes])
        wb.put(P_PAY + key, payloads[i] if payloads else b"")
        wb.delete(P_FREE + u64(int(labels[i])))
    return int(labels.max()) + 1 if len(labels) else 0


def write_synced(db: rocksdict.Rdict, wb: rocksdict.WriteBatch) -> None:
    """Write a batch durably without holding the GIL through the fsync. rocksdict keeps the GIL
    for the whole of a `write` with `sync`, so a slow disk (a 25 MB batch beside a busy etcd)
    froze every thread of the node, its lease keepalive too: a false failover (the chaos
    heavy-load scenario, measured 1.3-3 s). Writing to the WAL unsynced and then syncing it with
    `flush_wal(True)`, which releases the GIL, is as durable: write() returns only after the
    sync, and the log is read only up to the in-memory log_end, which moves after it."""
    db.write(wb)
    db.flush_wal(True)


class ShardStore:
    """The RocksDB of one replica and the log positions kept in it (mirrored in memory)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()  # held to replace the handle and for the synced epoch write
        self.db_path = self._recover_swap()
        self.db = open_db(self.db_path)
        self.log_end = 0
        self.last_epoch = 0  # epoch of the entry at log_end
        self.log_start = 0  # a snapshot installed the state up to here; the log begins after it
        self.log_start_epoch = 0

    def size_bytes(self) -> int:
        """What the replica's RocksDB holds: its live-data estimate plus the memtables (what
        storage is billed by; docs/billing.md)."""
        db = self.db
        live = db.property_int_value("rocksdb.estimate-live-data-size") or 0
        return live + (db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0)

    def _current_name(self) -> str:
        try:
            with open(os.path.join(self.path, CURRENT_FILE)) as f:
                return f.read().strip() or "db"
        except FileNotFoundError:
            return "db"

    def _recover_swap(self) -> str:
        """The database in use is named by CURRENT_FILE ("db" when absent). Every other database
        directory is a leftover: a staging directory of an interrupted snapshot, or the previous
        generation of a swap that crashed before removing it."""
        if os.path.isdir(os.path.join(self.path, "db.old")) and not os.path.isdir(
            os.path.join(self.path, "db")
        ):
            os.replace(
                os.path.join(self.path, "db.old"), os.path.join(self.path, "db")
            )  # an older release's swap
        current = self._current_name()
        for name in os.listdir(self.path) if os.path.isdir(self.path) else ():
            leftover = name in ("db", "db.old") or name.startswith(("db-", "db.incoming"))
            if leftover and name != current:
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
        return os.path.join(self.path, current)

    # ---------------------------------------------------------------- metadata

    def meta(self, key: bytes) -> int:
        raw = self.db.get(key)
        return int.from_bytes(raw, "big") if raw else 0

    def history(self) -> bytes:
        return self.db.get(K_HISTORY) or b""

    def load_positions(self) -> None:
        self.log_start, self.log_start_epoch = self.meta(K_LOG_START), self.meta(K_LOG_START_EPOCH)

    def put_epoch(self, epoch: int) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        wb.put(K_EPOCH, u64(epoch))
        with self.lock:
            write_synced(self.db, wb)

    def entry_epoch(self, lsn: int) -> int:
        """Epoch of the entry at lsn (0 for lsn 0; -1 if this replica does not hold it)."""
        if lsn == 0:
            return 0
        if lsn == self.log_start:
            return self.log_start_epoch
        if lsn == self.log_end and self.last_epoch:
            return self.last_epoch
        raw = self.db.get(log_key(lsn))
        return node_pb2.LogEntry.FromString(raw).epoch if raw else -1

    def write(self, wb: rocksdict.WriteBatch, sync: bool) -> None:
        if sync:
            write_synced(self.db, wb)
        else:
            self.db.write(wb)

    # ---------------------------------------------------------------- the log

    def truncate_after(self, lsn: int) -> None:
        """Remove log entries after lsn (appended, never committed)."""
        last_epoch = self.entry_epoch(lsn)
        self.db.delete_range(log_key(lsn + 1), log_key(self.log_end + 1))
        wb = rocksdict.WriteBatch(raw_mode=True)
        wb.put(K_LOG_END, u64(lsn))
        wb.put(K_LAST_EPOCH, u64(last_epoch))
        write_synced(self.db, wb)
        self.log_end, self.last_epoch = lsn, last_epoch

    def trim_log_before(self, lsn: int) -> None:
        if lsn > 1:
            self.db.delete_range(log_key(0), log_key(lsn))

    def scan(self, prefix: bytes, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        it = self.db.iter()
        it.seek(start or prefix)
        while it.valid():
            key = it.key()
            if not key.startswith(prefix):
                break
            yield key, it.value()
            it.next()

    def read_log(
        self, from_lsn: int, count: int, bytes_max: int | None = None, upto: int | None = None
    ) -> list[bytes] | None:
        """Serialized entries from_lsn.. (at most count and, after the first, bytes_max; up to
        `upto`, default log_end); None if the log no longer reaches back to from_lsn, or no
        longer holds the entry before it, whose epoch the receiver checks (trimmed, or before a
        snapshot): send a snapshot."""
        if from_lsn <= self.log_start:
            return None
        if from_lsn - 1 > self.log_start and self.entry_epoch(from_lsn - 1) < 0:
            return None
        last = self.log_end if upto is None else min(upto, self.log_end)
        out: list[bytes] = []
        size = 0
        for _, raw in self.scan(P_LOG, log_key(from_lsn)):
            if len(out) >= count or len(out) + from_lsn > last:
                break
            if out and bytes_max is not None and size + len(raw) > bytes_max:
                break
            out.append(raw)
            size += len(raw)
        if from_lsn <= last and (not out or node_pb2.LogEntry.FromString(out[0]).lsn != from_lsn):
            return None
        return out

    # ---------------------------------------------------------------- points

    def payloads(self, ids: list[str]) -> list[bytes | None]:
        return self.db.get([P_PAY + pid.encode() for pid in ids])

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

    # ---------------------------------------------------------------- snapshot install

    def swap(self, incoming: str) -> None:
        """Make the database at `incoming` this replica's database, as a new generation with a
        directory of its own (`db-<uuid>`) named in CURRENT_FILE (temp + fsync + rename). The old
        instance may outlive its handle here (a reader's iterator or snapshot keeps it open), so
        it must never share a path with the new one: it could still write its files there. A
        crash at any point leaves CURRENT_FILE naming one complete database."""
        name = f"db-{uuid.uuid4().hex[:12]}"
        new_path = os.path.join(self.path, name)
        os.replace(incoming, new_path)
        fsync_path(self.path)
        tmp = os.path.join(self.path, CURRENT_FILE + ".tmp")
        with open(tmp, "w") as f:
            f.write(name)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.path, CURRENT_FILE))
        fsync_path(self.path)
        with self.lock:
            old, old_path = self.db, self.db_path
            self.db, self.db_path = open_db(new_path), new_path
        _close_quietly(old)
        shutil.rmtree(old_path, ignore_errors=True)

    def close(self) -> None:
        with self.lock:
            _close_quietly(self.db)


def _close_quietly(db: rocksdict.Rdict) -> None:
    """Close a handle; if a reader thread is inside a call on it (rocksdict refuses: "Already
    borrowed"), the last reference closes it when that call returns."""
    try:
        db.close()
    except RuntimeError:
        pass


def new_history() -> bytes:
    return uuid.uuid4().bytes
