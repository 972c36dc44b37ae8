"""A node's life in the cluster: registration under a lease (kept by its own thread), and a
watch on the shard map that creates the replicas assigned to this node, reports each one to
etcd, and deletes a replica only when its collection has a tombstone (never because a possibly
stale map stopped listing it)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import replace

import orjson

from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity
from quartz_cluster.backup import manifest as backup_manifest
from quartz_cluster.backup import shard as backup_shard
from quartz_cluster.backup.repository import RepositoryError, open_repository
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import NotFound, QuartzError, ResourceExhausted
from quartz_cluster.meta import schema
from quartz_cluster.meta.lease import DEFAULT_TTL_S
from quartz_cluster.meta.lease_process import LeaseProcess
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.node.health import node_health
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.shard import ShardReplica, ShardSpec
from quartz_cluster.replication.primary import Replicator
from quartz_cluster.rpc.channels import NodeChannels

log = logging.getLogger("quartz.membership")
GRANT_TIMEOUT_S = 30.0
REPLICA_DELETE_GRACE_S = 5.0
RESTORE_ATTEMPTS = 3


class ClusterMember:
    def __init__(
        self,
        node_id: str,
        etcd: str,
        address: str,
        incarnation: str,
        registry: ShardRegistry,
        ttl_s: int = DEFAULT_TTL_S,
        credentials: ClusterCredentials | None = None,
    ) -> None:
        self.node_id, self.registry = node_id, registry
        self.health = ""  # as last reported (node/health.py)
        etcd_auth = credentials.etcd_auth if credentials else None
        self.store = EtcdStore(etcd, etcd_auth)
        self.keeper = LeaseProcess(
            etcd,
            schema.node_key(node_id),
            lambda: schema.NodeRecord(
                node_id,
                address,
                incarnation,
                len(registry.shards),
                registry.budget.memory_bytes_max if registry.budget else 0,
                self._health(),
            ).to_json(),
            ttl_s,
            name="node-lease",
            auth=etcd_auth,
            log_context={"node": node_id},
        )
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.channels = NodeChannels(MemberIdentity(credentials, node_id) if credentials else None)
        self._tombstoned_at: dict[tuple[str, int], float] = {}
        self.view: ClusterView | None = None  # the shard map as last seen
        self._refused: dict[tuple[str, int], str] = {}  # replicas the node's budget refused (logged once)
        self._restores: dict[tuple[str, int], asyncio.Task] = {}  # replicas being restored from a backup
        self._restore_failed: dict[tuple[str, int], str] = {}

    def _health(self) -> str:
        """Why this node cannot write ("" when it can), logged when it changes."""
        health = node_health(self.registry, self.registry.data_dir)
        if health != self.health:
            if health:
                free = shutil.disk_usage(self.registry.data_dir).free
                log.error(
                    "node cannot write; reporting unhealthy",
                    extra={"reason": health, "disk_free_bytes": free},
                )
            else:
                log.info("node can write again; reporting healthy", extra={"was": self.health})
            self.health = health
        return health

    def placed(self, collection_id: str, shard: int) -> bool:
        """The shard map names this node as a replica of the shard of a live collection."""
        view = self.view
        if view is None or collection_id in view.tombstones:
            return False
        entry = view.shards.get(collection_id, {}).get(shard)
        return entry is not None and self.node_id in entry[0].replicas

    async def start(self) -> None:
        self.keeper.start()
        if not await asyncio.to_thread(self.keeper.granted.wait, GRANT_TIMEOUT_S):
            raise ConnectionError("could not register with etcd")
        self._task = asyncio.create_task(self.store.follow(schema.ROOT, self._on_state, self._stop))

    async def stop(self) -> None:
        self._stop.set()
        for task in list(self._restores.values()):
            task.cancel()
        if self._task is not None:
            await self._task
        for replica in self.registry.shards.values():
            if replica.replicator is not None:
                replica.replicator.stop()
        self.keeper.stop(revoke=True)
        await self.store.close()
        await self.channels.close()

    async def _on_state(self, revision: int, kvs) -> None:
        view = ClusterView.from_kvs(revision, kvs)
        self.view = view
        now = asyncio.get_running_loop().time()
        for cid, shard in list(self.registry.shards):
            if cid in view.tombstones:
                await self.registry.drop(cid, shard)
                continue
            # A replica moved away (drain, repair): delete exactly that replica, after a grace
            # period during which routers with an older map can still read from it.
            doomed = view.replica_tombstones.get((cid, shard, self.node_id))
            if doomed is not None and doomed == self.registry.shards[(cid, shard)].incarnation:
                first = self._tombstoned_at.setdefault((cid, shard), now)
                if now - first >= REPLICA_DELETE_GRACE_S:
                    await self.registry.drop(cid, shard)
                    self._tombstoned_at.pop((cid, shard), None)
                    log.info("moved replica deleted", extra={"shard": f"{cid}/{shard}"})
        for cid, by_shard in view.shards.items():
            if cid in view.tombstones:
                continue
            for shard, (rec, _) in by_shard.items():
                if self.node_id not in rec.replicas:
                    continue
                local = self.registry.shards.get((cid, shard))
                if (
                    local is not None
                    and view.replica_tombstones.get((cid, shard, self.node_id)) == local.incarnation
                ):
                    continue  # re-assigned here after a move: the old copy goes first, then a fresh one
                if (cid, shard) not in self.registry.shards and rec.restore and not rec.in_sync:
                    # a restore's own replicas; once the shard is live, a new replica (a repair or a
                    # move) starts empty and catches up from the primary like any other
                    self._start_restore(rec)  # reported once its data is in place
                    continue
                if (cid, shard) not in self.registry.shards:
                    try:
                        await self.registry.create(
                            ShardSpec(cid, shard, rec.dim, rec.metric, rec.m, rec.ef_construction, rec.ef)
                        )
                    except ResourceExhausted as exc:  # over this node's budget: not created here
                        if self._refused.get((cid, shard)) != str(exc):
                            self._refused[(cid, shard)] = str(exc)
                            log.error(
                                "replica not created", extra={"shard": f"{cid}/{shard}", "error": str(exc)}
                            )
                        continue
                replica = self.registry.shards[(cid, shard)]
                reported = view.replicas.get((cid, shard, self.node_id))
                if reported is None or reported.incarnation != replica.incarnation:
                    await self.store.put(
                        schema.replica_key(cid, shard, self.node_id),
                        schema.ReplicaRecord(self.node_id, replica.incarnation).to_json(),
                    )
                    log.info("replica reported", extra={"shard": f"{cid}/{shard}"})
                if rec.in_sync:
                    self._apply_role(replica, rec, view)

    def _start_restore(self, rec: schema.ShardRecord) -> None:
        key = (rec.collection_id, rec.shard)
        if key in self._restores or key in self._restore_failed:
            return
        task = asyncio.create_task(self._restore(rec))
        self._restores[key] = task
        task.add_done_callback(lambda _t, key=key: self._restores.pop(key, None))

    async def _restore(self, rec: schema.ShardRecord) -> None:
        """Fill a new replica from a backup's part, then create it (the next pass reports it).
        A failure is reported as the replica's state, naming the reason (e.g. a corrupt object),
        and not retried: the restore fails as a whole."""
        cid, shard = rec.collection_id, rec.shard
        src = orjson.loads(rec.restore)
        staging = os.path.join(self.registry.restoring_dir(), f"{cid}-{shard}-{uuid.uuid4().hex[:8]}")
        t0 = time.monotonic()
        try:
            repo = open_repository(src["repository"])
            key = backup_manifest.manifest_key(src["backup"])
            m = backup_manifest.decode_manifest(await asyncio.to_thread(repo.get_bytes, key), key)
            part = next(  # the manifest's own part (what the restore's epochs came from)
                (
                    p
                    for c in m["collections"]
                    if c["id"] == src["source"]
                    for p in c["parts"]
                    if p["shard"] == shard
                ),
                None,
            )
            if part is None:
                raise NotFound(f"backup {src['backup']} has no shard {src['source']}/{shard}", "backup")
            for attempt in range(RESTORE_ATTEMPTS):  # a transient repository error is retried
                try:
                    await asyncio.to_thread(backup_shard.download_part, part, repo, staging)
                    break
                except RepositoryError:
                    if attempt + 1 == RESTORE_ATTEMPTS:
                        raise
                    await asyncio.to_thread(shutil.rmtree, staging, True)
                    await asyncio.sleep(2.0**attempt)
            spec = ShardSpec(cid, shard, rec.dim, rec.metric, rec.m, rec.ef_construction, rec.ef)
            await self.registry.create(spec, restored_from=staging)
            log.info(
                "replica restored",
                extra={
                    "shard": f"{cid}/{shard}",
                    "backup": src["backup"],
                    "lsn": part["lsn"],
                    "seconds": round(time.monotonic() - t0, 3),
                },
            )
        except Exception as exc:
            reason = str(exc) if isinstance(exc, QuartzError) else f"{type(exc).__name__}: {exc}"
            self._restore_failed[(cid, shard)] = reason
            log.error("restore failed", extra={"shard": f"{cid}/{shard}", "error": reason})
            with contextlib.suppress(Exception):
                await self.store.put(
                    schema.replica_key(cid, shard, self.node_id),
                    schema.ReplicaRecord(self.node_id, "", f"failed: {reason}"[:2000]).to_json(),
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    def _apply_role(self, replica: ShardReplica, rec: schema.ShardRecord, view: ClusterView) -> None:
        """Make the replica primary or follower as the shard map says (DESIGN §5)."""
        replica.set_lease_check(self.keeper.alive)
        peers = {n: view.nodes[n].address for n in rec.replicas if n != self.node_id and n in view.nodes}
        if rec.primary == self.node_id:
            current = replica.replicator
            if replica.role != "primary" or replica.epoch != rec.epoch or current is None or current.stopped:
                in_sync = {i.node: i.incarnation for i in rec.in_sync}

                async def isr_change(node: str, incarnation: str | None, rec=rec) -> bool:
                    return await self._isr_change(rec.collection_id, rec.shard, rec.epoch, node, incarnation)

                replica.become_primary(
                    rec.epoch,
                    Replicator(replica, self.node_id, rec.epoch, peers, in_sync, isr_change, self.channels),
                )
                log.info("primary", extra={"shard": f"{rec.collection_id}/{rec.shard}", "epoch": rec.epoch})
                replica.replicator.start()
            replica.replicator.update(peers, rec.replicas)
        elif replica.role != "follower" or replica.epoch < rec.epoch or replica.primary_hint != rec.primary:
            replica.become_follower(rec.epoch, rec.primary)
            log.info(
                "follower",
                extra={
                    "shard": f"{rec.collection_id}/{rec.shard}",
                    "epoch": rec.epoch,
                    "primary": rec.primary,
                },
            )

    async def _isr_change(self, cid: str, shard: int, epoch: int, node: str, incarnation: str | None) -> bool:
        """Compare-and-swap the shard's in_sync in etcd, as its primary in `epoch`."""
        try:
            key = schema.shard_key(cid, shard)
            kv = await self.store.get(key)
            if kv is None:
                return False
            rec = schema.ShardRecord.from_json(kv.value)
            if rec.epoch != epoch or rec.primary != self.node_id:
                return False  # the map moved on: not ours to change
            keep = tuple(i for i in rec.in_sync if i.node != node)
            in_sync = (*keep, schema.InSync(node, incarnation)) if incarnation else keep
            t = self.store.txn
            ok, _ = await self.store.transaction(
                compare=[t.mod(key) == kv.mod_revision],
                success=[t.put(key, replace(rec, in_sync=in_sync).to_json())],
            )
            log.info(
                "in_sync changed" if ok else "in_sync change lost a race",
                extra={"shard": f"{cid}/{shard}", "epoch": epoch, "node": node, "added": bool(incarnation)},
            )
            return ok
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # grpc.aio cancels a call whose channel another caller closed (a reset of the shared
            # etcd client): a failed change like any other, not the end of the caller.
            log.warning("in_sync change interrupted", extra={"shard": f"{cid}/{shard}"})
            return False
        except Exception as exc:
            log.warning("in_sync change failed", extra={"shard": f"{cid}/{shard}", "error": repr(exc)})
            await self.store.reset()
            return False
