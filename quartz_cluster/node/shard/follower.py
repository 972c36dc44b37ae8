"""A follower takes entries from its primary (DESIGN §5), as a job of the shard's writer.

The log-matching check (replication/log_matching.py) decides whether the entries attach to this
log; if they do, the entries, their rows and the epoch are written in one synced WriteBatch and
applied at once. A follower whose log diverged or fell too far behind is resynchronised by
snapshot (snapshot.py).
"""

from __future__ import annotations

import asyncio

import numpy as np
from google.protobuf.message import DecodeError

from quartz_cluster import limits, validation
from quartz_cluster.errors import FailedPrecondition, InvalidArgument
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.node.shard.role import ReplicaRole
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import ShardStore
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication import log_matching


def parse_entries(req: node_pb2.ReplicateRequest, dim: int) -> list[node_pb2.LogEntry]:
    """The request's entries, each checked as strictly as the router checks a write (a malformed
    entry refuses the whole request, before anything is stored): ids, vectors of the shard's
    dimension, finite and within the norm bound, JSON-object payloads, one label per id."""
    entries = []
    for i, raw in enumerate(req.entries):
        where = f"entries[{i}]"
        try:
            e = node_pb2.LogEntry.FromString(raw)
        except DecodeError:
            raise InvalidArgument("not a LogEntry", where) from None
        if e.lsn != req.prev_lsn + 1 + i:
            raise FailedPrecondition(f"entry {i} has LSN {e.lsn}, expected {req.prev_lsn + 1 + i}", "entries")
        check_entry(e, dim, where)
        entries.append(e)
    return entries


def check_labels(entries: list[node_pb2.LogEntry], next_label: int, first: int) -> None:
    """Entries that attach to this log assign labels below next_label plus the points they add
    (a label is an index row: a forged huge one would make the index grow without bound)."""
    label_end = next_label
    for i, e in enumerate(entries):
        label_end += len(e.ids)
        for field, packed in (("labels", e.labels), ("delete_labels", e.delete_labels)):
            if packed and int(np.frombuffer(packed, dtype="<u8").max()) >= label_end:
                raise InvalidArgument(f"a label beyond {label_end - 1}", f"entries[{first + i}].{field}")


def check_entry(e: node_pb2.LogEntry, dim: int, where: str) -> None:
    if len(e.ids) + len(e.delete_ids) > limits.BATCH_POINTS_MAX:
        raise InvalidArgument(f"more than {limits.BATCH_POINTS_MAX} points", where)
    ids = validation.point_ids(e.ids, f"{where}.ids")
    dels = validation.point_ids(e.delete_ids, f"{where}.delete_ids")
    if set(ids).intersection(dels):
        raise InvalidArgument("an id is both upserted and deleted", f"{where}.delete_ids")
    for field, packed, n in (("labels", e.labels, len(ids)), ("delete_labels", e.delete_labels, len(dels))):
        if len(packed) != 8 * n:
            raise InvalidArgument(f"must hold {n} packed uint64 labels", f"{where}.{field}")
    if ids:
        validation.vectors(e.vectors.data, e.vectors.count, e.vectors.dim, dim, f"{where}.vectors")
        if e.vectors.count != len(ids):
            raise InvalidArgument(f"{e.vectors.count} vectors for {len(ids)} ids", f"{where}.vectors")
    elif e.vectors.count or e.vectors.data:
        raise InvalidArgument("vectors without ids", f"{where}.vectors")
    if e.payloads:
        validation.payloads(e.payloads, len(ids), f"{where}.payloads")


async def append_replicated(
    state: IndexState, store: ShardStore, role: ReplicaRole, req: node_pb2.ReplicateRequest, incarnation: str
) -> tuple[node_pb2.ReplicateResponse, int]:
    """Returns the reply and the number of points applied."""
    entries = parse_entries(req, state.spec.dim)
    role.heard_from_primary(req.epoch)
    decision = await asyncio.to_thread(
        log_matching.decide,
        role.epoch,
        store.log_start,
        store.log_end,
        store.entry_epoch,
        req.epoch,
        req.prev_lsn,
        req.prev_epoch,
        [e.epoch for e in entries],
    )
    if isinstance(decision, log_matching.Fenced):
        raise FailedPrecondition(
            f"epoch {req.epoch} is fenced: shard {state.spec.name} accepted epoch {decision.epoch}", "epoch"
        )
    status, points = node_pb2.REPLICATE_OK, 0
    if isinstance(decision, log_matching.Behind):
        status = node_pb2.REPLICATE_BEHIND
    elif isinstance(decision, log_matching.Diverged):
        status = node_pb2.REPLICATE_DIVERGED
    else:
        new = entries[decision.skip :]
        check_labels(new, state.next_label, decision.skip)
        if new:
            epoch = req.epoch if req.epoch > role.epoch else None
            await asyncio.to_thread(
                commit_entries,
                state,
                store,
                new,
                True,
                True,
                list(req.entries[decision.skip :]),
                epoch,
            )
            role.accepted_durably(req.epoch)
            points = sum(len(e.ids) + len(e.delete_ids) for e in new)
        else:
            role.accept_epoch(req.epoch)  # one synced key, and only for a newer epoch
        role.following(req.primary)
    reply = node_pb2.ReplicateResponse(
        status=status, log_end=store.log_end, last_epoch=store.last_epoch, incarnation=incarnation
    )
    return reply, points
