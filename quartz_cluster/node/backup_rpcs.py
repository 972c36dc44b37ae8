"""The node's backup RPC (DESIGN §13): a thin handler over quartz_cluster.backup.shard."""

from __future__ import annotations

import orjson

from quartz_cluster.backup import manifest, shard
from quartz_cluster.backup.repository import open_repository
from quartz_cluster.errors import InvalidArgument
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.rpc.status import rpc

PARENT_BYTES_MAX = 4 << 20


class NodeBackupRpcs:
    """Mixed into NodeService (which provides `_shard` and `node_id`)."""

    @rpc
    async def BackupShard(self, request, context):
        replica = self._shard(request.ref)
        manifest.check_id(request.backup_id, "backup_id")
        repo = open_repository(request.repository)
        parent = None
        if request.parent:
            if len(request.parent) > PARENT_BYTES_MAX:
                raise InvalidArgument(f"over {PARENT_BYTES_MAX} bytes", "parent")
            try:
                parent = manifest.check_part(orjson.loads(request.parent), "parent")
            except ValueError:
                raise InvalidArgument("not JSON", "parent") from None
        replica.check_strong_read(request.epoch)  # only the primary of that epoch, holding its lease
        part = await shard.backup_replica(
            replica,
            repo,
            getattr(self, "node_id", ""),
            parent,
            lambda: replica.check_strong_read(request.epoch),
        )
        return node_pb2.BackupShardResponse(part=orjson.dumps(part))
