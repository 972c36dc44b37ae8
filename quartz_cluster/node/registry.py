"""The shard replicas a node hosts, on disk under DATA_DIR/shards/<collection_id>/<shard>/.

A replica directory is complete once its spec.json exists (written last, atomically); an
incomplete one left by a crash during create is removed on start. Drop renames the directory
into DATA_DIR/trash/ first, so a crash mid-delete never leaves a half-replica that looks real.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import uuid

from quartz_cluster.backup import shard as backup_shard
from quartz_cluster.errors import AlreadyExists, NotFound
from quartz_cluster.node import memory
from quartz_cluster.node.hnsw_index import fsync_path
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec

log = logging.getLogger("quartz.registry")


def _incarnation(path: str) -> str:
    """The replica's identity: a uuid made when its directory was created. A replica whose data
    dir was lost and re-created gets a new one, so it is never mistaken for an in-sync copy."""
    f = os.path.join(path, "incarnation")
    if not os.path.exists(f):
        tmp = f + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(uuid.uuid4().hex)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, f)
    with open(f) as fh:
        return fh.read().strip()


class ShardRegistry:
    def __init__(self, data_dir: str, options: ShardOptions) -> None:
        self.data_dir = data_dir
        self.options = options
        self.root = os.path.join(data_dir, "shards")
        self.trash = os.path.join(data_dir, "trash")
        self.shards: dict[tuple[str, int], ShardReplica] = {}
        self._lock = asyncio.Lock()
        self.budget: memory.NodeBudget | None = None  # admission control, when the node sets one

    def _dir(self, collection_id: str, shard: int) -> str:
        return os.path.join(self.root, collection_id, str(shard))

    async def open_all(self) -> None:
        os.makedirs(self.root, exist_ok=True)
        shutil.rmtree(self.trash, ignore_errors=True)
        shutil.rmtree(self.restoring_dir(), ignore_errors=True)  # restores cut short by a crash
        for cid in sorted(os.listdir(self.root)):
            for num in sorted(os.listdir(os.path.join(self.root, cid))):
                path = os.path.join(self.root, cid, num)
                spec_path = os.path.join(path, "spec.json")
                if not os.path.exists(spec_path):
                    log.warning("removing incomplete shard directory", extra={"path": path})
                    shutil.rmtree(path, ignore_errors=True)
                    continue
                with open(spec_path, "rb") as f:
                    spec = ShardSpec.from_json(f.read())
                backup_shard.clean_staging(path)
                replica = ShardReplica(path, spec, self.options)
                replica.incarnation = _incarnation(path)
                how = await asyncio.to_thread(replica.load)
                replica.start()
                self.shards[(spec.collection_id, spec.shard)] = replica
                log.info(
                    "shard opened",
                    extra={
                        "shard": spec.name,
                        "how": how,
                        "count": len(replica.label_of),
                        "lsn": replica.applied_lsn,
                    },
                )

    def get(self, collection_id: str, shard: int) -> ShardReplica:
        replica = self.shards.get((collection_id, shard))
        if replica is None:
            raise NotFound(f"shard {collection_id}/{shard} is not hosted on this node", "ref")
        return replica

    def restoring_dir(self) -> str:
        """Where replicas restored from a backup are assembled before they are opened."""
        return os.path.join(self.data_dir, "restoring")

    async def create(self, spec: ShardSpec, restored_from: str | None = None) -> bool:
        """Create a replica: empty, or (restored_from) from a directory holding a backup's db/
        and ckpt/ (on this filesystem), which becomes the replica's."""
        async with self._lock:
            existing = self.shards.get((spec.collection_id, spec.shard))
            if existing is not None:
                if existing.spec != spec:
                    raise AlreadyExists(f"shard {spec.name} exists with a different spec", "spec")
                return False
            if self.budget is not None:
                self.budget.check_replica(len(self.shards), spec.dim, spec.m)
            path = self._dir(spec.collection_id, spec.shard)
            shutil.rmtree(path, ignore_errors=True)
            if restored_from is not None:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                os.replace(restored_from, path)
            else:
                os.makedirs(path)
            replica = ShardReplica(path, spec, self.options)
            replica.incarnation = _incarnation(path)
            await asyncio.to_thread(replica.load)
            tmp = os.path.join(path, "spec.json.tmp")
            with open(tmp, "wb") as f:
                f.write(spec.to_json())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, os.path.join(path, "spec.json"))
            fsync_path(path)
            replica.start()
            self.shards[(spec.collection_id, spec.shard)] = replica
            log.info("shard created", extra={"shard": spec.name})
            return True

    async def drop(self, collection_id: str, shard: int) -> bool:
        async with self._lock:
            replica = self.shards.pop((collection_id, shard), None)
            if replica is None:
                return False
            await replica.close(checkpoint=False)
            os.makedirs(self.trash, exist_ok=True)
            doomed = os.path.join(self.trash, uuid.uuid4().hex)
            os.replace(replica.path, doomed)
            with contextlib.suppress(OSError):  # the collection's directory, once its last shard goes
                os.rmdir(os.path.dirname(replica.path))
            await asyncio.to_thread(shutil.rmtree, doomed, True)
            name = replica.spec.name
            del replica
            rss = await asyncio.to_thread(memory.release)
            log.info("shard dropped", extra={"shard": name, "rss_bytes": rss})
            return True

    async def close(self) -> None:
        async with self._lock:
            for replica in self.shards.values():
                await replica.close(checkpoint=True)
            self.shards.clear()
