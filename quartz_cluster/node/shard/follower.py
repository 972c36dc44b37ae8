"""A follower takes entries from its primary (DESIGN §5), as a job of the shard's writer.

The log-matching check (replication/log_matching.py) decides whether the entries attach to this
log; if they do, the entries, their rows and the epoch are written in one synced WriteBatch and
applied at once. A follower whose log diverged or fell too far behind is resynchronised by
snapshot (snapshot.py).
"""

from __future__ import annotations

import asyncio

from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.node.shard.role import ReplicaRole
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import ShardStore
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.replication import log_matching


def parse_entries(req: node_pb2.ReplicateRequest) -> list[node_pb2.LogEntry]:
    entries = [node_pb2.LogEntry.FromString(raw) for raw in req.entries]
    for i, e in enumerate(entries):
        if e.lsn != req.prev_lsn + 1 + i:
            raise FailedPrecondition(f"entry {i} has LSN {e.lsn}, expected {req.prev_lsn + 1 + i}", "entries")
    return entries


async def append_replicated(
    state: IndexState, store: ShardStore, role: ReplicaRole, req: node_pb2.ReplicateRequest, incarnation: str
) -> tuple[node_pb2.ReplicateResponse, int]:
    """Returns the reply and the number of points applied."""
    entries = parse_entries(req)
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
