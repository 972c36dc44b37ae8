"""A node's life in the cluster: registration under a lease (kept by its own thread), and a
watch on the shard map that creates the replicas assigned to this node, reports each one to
etcd, and deletes a replica only when its collection has a tombstone (never because a possibly
stale map stopped listing it)."""

from __future__ import annotations

import asyncio
import logging

from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.meta import schema
from quartz_cluster.meta.lease import DEFAULT_TTL_S, LeaseKeeper
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.shard import ShardSpec

log = logging.getLogger("quartz.membership")
GRANT_TIMEOUT_S = 30.0


class ClusterMember:
    def __init__(
        self,
        node_id: str,
        etcd: str,
        address: str,
        incarnation: str,
        registry: ShardRegistry,
        ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self.node_id, self.registry = node_id, registry
        self.store = EtcdStore(etcd)
        self.keeper = LeaseKeeper(
            etcd,
            schema.node_key(node_id),
            lambda: schema.NodeRecord(node_id, address, incarnation, len(registry.shards)).to_json(),
            ttl_s,
            name="node-lease",
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.keeper.start()
        if not await asyncio.to_thread(self.keeper.granted.wait, GRANT_TIMEOUT_S):
            raise ConnectionError("could not register with etcd")
        self._task = asyncio.create_task(self.store.follow(schema.ROOT, self._on_state, self._stop))

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.keeper.stop(revoke=True)
        await self.store.close()

    async def _on_state(self, revision: int, kvs) -> None:
        view = ClusterView.from_kvs(revision, kvs)
        for cid, shard in list(self.registry.shards):
            if cid in view.tombstones:
                await self.registry.drop(cid, shard)
        for cid, by_shard in view.shards.items():
            if cid in view.tombstones:
                continue
            for shard, (rec, _) in by_shard.items():
                if self.node_id not in rec.replicas:
                    continue
                if (cid, shard) not in self.registry.shards:
                    await self.registry.create(
                        ShardSpec(cid, shard, rec.dim, rec.metric, rec.m, rec.ef_construction, rec.ef)
                    )
                replica = self.registry.shards[(cid, shard)]
                reported = view.replicas.get((cid, shard, self.node_id))
                if reported is None or reported.incarnation != replica.incarnation:
                    await self.store.put(
                        schema.replica_key(cid, shard, self.node_id),
                        schema.ReplicaRecord(self.node_id, replica.incarnation).to_json(),
                    )
                    log.info("replica reported", extra={"shard": f"{cid}/{shard}"})
