"""The write pipeline of a primary (or a standalone replica), run by the shard's writer for each
group of client batches (DESIGN §4, §5):

  1. append: assign LSNs and labels; ONE RocksDB WriteBatch of log entries + log_end, synced;
  2. replicate: the replicator sends the entries to every in-sync follower and returns once
     all hold them durably (shrinking in_sync in etcd first if one does not answer);
  3. apply: rows, free labels and applied_lsn (one WriteBatch, not synced: the log is), then
     the in-memory graph and indexes under the exclusive lock: only now are they visible;
  4. acknowledge each batch whose write_consistency still holds: in_sync may have shrunk
     during step 2, and a batch that asked for more in-sync replicas than are left is refused
     after the append (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND), naming its points.
LSN n+1 is never durable without n (one atomic write per group). If step 2 fails (this
replica stopped being primary), the appended but uncommitted entries are truncated: nobody
acknowledged them, and the new primary decides what the log holds.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np
import rocksdict

from quartz_cluster.errors import Internal, Unavailable
from quartz_cluster.node.shard.role import PRIMARY, ReplicaRole
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import (
    K_APPLIED,
    K_LAST_EPOCH,
    K_LOG_END,
    K_NEXT_LABEL,
    ShardStore,
    entry_rows,
    log_key,
    u64,
)
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication.primary import NotCommitted
from quartz_cluster.validation import WriteBatch

IDS_NAMED_MAX = 10  # an error names at most this many points, then "and N more"


@dataclass(slots=True)
class Pending:
    batch: WriteBatch
    future: asyncio.Future
    epoch: int = 0  # the router's view of the epoch; 0: no check
    min_in_sync: int = 1  # from write_consistency
    entry: node_pb2.LogEntry | None = None
    raw: bytes = b""

    def points(self) -> int:
        return len(self.batch.ids) + len(self.batch.delete_ids)

    def size_bytes(self) -> int:
        b = self.batch
        return (
            b.vectors.nbytes
            + sum(map(len, b.payload_blobs))
            + sum(map(len, b.ids))
            + sum(map(len, b.delete_ids))
        )


def name_points(ids: list[str]) -> str:
    shown = ", ".join(ids[:IDS_NAMED_MAX])
    return shown + (f" and {len(ids) - IDS_NAMED_MAX} more" if len(ids) > IDS_NAMED_MAX else "")


class WritePipeline:
    def __init__(self, state: IndexState, store: ShardStore, role: ReplicaRole, log) -> None:
        self.state, self.store, self.role, self.log = state, store, role, log
        self.name = state.spec.name

    async def commit(self, group: list[Pending]) -> str | None:
        """Commit a group; returns a reason if the shard must go out of service."""
        ready = []
        for p in group:
            refusal = self.role.write_refusal(p.epoch, p.min_in_sync)  # the role may have changed
            if refusal is not None:
                p.future.set_exception(refusal)
            else:
                ready.append(p)
        if not ready:
            return None
        # What this group is accepted under, captured once: the shard map may demote this replica
        # while the group is in flight. The group is stamped with this epoch and must be
        # replicated through this replicator; a demotion stops it, so the group cannot commit.
        # A primary is never treated as standalone.
        role, epoch, replicator = self.role.role, self.role.epoch, self.role.replicator
        if role == PRIMARY and replicator is None:
            _fail(ready, Unavailable(f"shard {self.name} is changing primary", "epoch"))
            return None
        try:
            prev_lsn, prev_epoch = await asyncio.to_thread(self.append, ready, epoch)
        except Exception as exc:  # storage failure: nothing was appended
            self.log.exception("append failed")
            _fail(ready, Unavailable(f"storage write failed on shard {self.name}: {exc}"))
            return None
        if replicator is not None:
            try:
                await replicator.replicate([p.raw for p in ready], prev_lsn, prev_epoch)
            except NotCommitted as exc:
                # This replica is no longer the primary of `epoch`: nobody was told the group
                # succeeded and this replica will not append in `epoch` again. Drop it from this
                # log; if a follower kept it, the next primary decides whether it stays.
                await asyncio.to_thread(self.truncate_uncommitted)
                _fail(ready, Unavailable(f"write not committed on shard {self.name}: {exc}"))
                return None
            except Exception as exc:
                # Anything else leaves the epoch current: truncating would let the next group
                # reuse these LSNs in the same epoch with other contents, which a follower that
                # kept the first would take for the same entries. Out of service instead: the
                # coordinator moves the primary (a new epoch) and a restart recovers.
                reason = f"replication failed unexpectedly: {exc!r}"
                self.log.exception("replication failed; shard out of service")
                _fail(ready, Unavailable(f"write not committed on shard {self.name}: {exc}"))
                return reason
        try:
            await asyncio.to_thread(self.apply_committed, ready)
        except Exception as exc:
            # Durable but not applied: the in-memory state can no longer be trusted.
            # Refuse further traffic; a restart replays the log and recovers.
            reason = f"apply failed after a durable write: {exc}"
            self.log.exception("apply failed; shard out of service until restart")
            _fail(ready, Internal(reason))
            return reason
        in_sync = replicator.in_sync_size() if replicator is not None else 1
        for p in ready:
            if p.future.done():
                continue
            assert p.entry is not None
            if in_sync < p.min_in_sync:
                points = name_points([*p.batch.ids, *p.batch.delete_ids])
                p.future.set_exception(
                    Unavailable(
                        f"not enough replicas after append: shard {self.name} has {in_sync} in-sync "
                        f"replica(s) now, the write asked for {p.min_in_sync}; it is stored on those, "
                        f"not acknowledged at that consistency (points {points}); "
                        "retrying is safe",
                        "write_consistency",
                    )
                )
            else:
                p.future.set_result(p.entry.lsn)
        return None

    def append(self, group: list[Pending], epoch: int) -> tuple[int, int]:
        """Assign LSNs and labels to a group and make its log entries durable in one WriteBatch.
        Touches no in-memory state but the log end: if the write fails, nothing needs undoing.
        Returns (prev_lsn, prev_epoch): where the group's entries attach."""
        store, state = self.store, self.state
        prev_lsn, prev_epoch = store.log_end, store.last_epoch
        wb = rocksdict.WriteBatch(raw_mode=True)
        lsn, next_label = store.log_end, state.next_label
        assigned: dict[str, int | None] = {}  # this group's view of id -> label
        free_iter = iter(state.free)  # labels freed by this group are reused only by a later one
        for p in group:
            b = p.batch
            lsn += 1
            labels = np.empty(len(b.ids), dtype="<u8")
            for i, pid in enumerate(b.ids):
                label = assigned.get(pid) if pid in assigned else state.label_of.get(pid)
                if label is None:
                    label = next(free_iter, None)
                    if label is None:
                        label, next_label = next_label, next_label + 1
                    assigned[pid] = label
                labels[i] = label
            del_ids, del_labels = [], []
            for pid in b.delete_ids:
                label = assigned.get(pid) if pid in assigned else state.label_of.get(pid)
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
                    data=b.vectors.astype("<f4", copy=False).tobytes(),
                    count=len(b.ids),
                    dim=state.spec.dim,
                ),
                payloads=b.payload_blobs,
                delete_ids=del_ids,
                delete_labels=np.asarray(del_labels, dtype="<u8").tobytes(),
            )
            p.entry, p.raw = entry, entry.SerializeToString()
            wb.put(log_key(lsn), p.raw)
        wb.put(K_LOG_END, u64(lsn))
        wb.put(K_LAST_EPOCH, u64(epoch))
        store.write(wb, sync=True)
        store.log_end, store.last_epoch = lsn, epoch
        return prev_lsn, prev_epoch

    def apply_committed(self, group: list[Pending]) -> None:
        wb = rocksdict.WriteBatch(raw_mode=True)
        state = self.state
        end = state.next_label
        for p in group:
            assert p.entry is not None
            end = max(end, entry_rows(wb, p.entry, state.spec.dim))
        wb.put(K_APPLIED, u64(group[-1].entry.lsn))
        wb.put(K_NEXT_LABEL, u64(end))
        self.store.write(wb, sync=False)  # the log already is, and replay rebuilds these rows
        with state.lock.exclusive():
            for p in group:
                state.apply(p.entry, p.batch.vectors, p.batch.payloads)

    def truncate_uncommitted(self) -> None:
        """Remove log entries after applied_lsn (appended, never committed)."""
        applied = self.state.applied_lsn
        if self.store.log_end <= applied:
            return
        self.log.warning(
            "truncating uncommitted entries",
            extra={"from": applied + 1, "to": self.store.log_end, "epoch": self.role.epoch},
        )
        self.store.truncate_after(applied)


def _fail(group: list[Pending], exc: Exception) -> None:
    for p in group:
        if not p.future.done():
            p.future.set_exception(exc)
