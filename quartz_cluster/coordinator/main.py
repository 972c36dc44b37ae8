"""`quartz coordinator`: campaign for leadership in etcd; while leader, keep the shard map in
line with the cluster (coordinator/reconcile.py decides, this module applies).

Every write is one etcd transaction that compares the leader key's create revision (unique
to this election win) and the target key's revision, so a deposed leader that wakes up late
writes nothing (DESIGN §5, coordinator hygiene). Leadership is bound to a lease kept alive by
a dedicated thread; when it lapses, the key vanishes and a standby wins the next campaign.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from dataclasses import dataclass

import grpc

from quartz_cluster import limits, logs, observability
from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity
from quartz_cluster.coordinator.backups import BackupRunner
from quartz_cluster.coordinator.billing import Billing, BillingSettings
from quartz_cluster.coordinator.metrics import coordinator_collector
from quartz_cluster.coordinator.reconcile import (
    Action,
    ClusterView,
    PlaceShards,
    PurgeCollection,
    UpdateShard,
    failover_candidates,
    reconcile,
)
from quartz_cluster.meta import schema
from quartz_cluster.meta.lease import DEFAULT_TTL_S, LeaseKeeper
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.observability import ObservabilitySettings, tracing
from quartz_cluster.observability.metrics import FAILOVERS
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.rpc.channels import NodeChannels
from quartz_cluster.rpc.server import build_server, set_serving, write_info_file

log = logging.getLogger("quartz.coordinator")
CAMPAIGN_POLL_S = 0.5
POSITION_TIMEOUT_S = 1.0
GRANT_TIMEOUT_S = 30.0


@dataclass(slots=True)
class CoordinatorSettings:
    coordinator_id: str
    etcd: str
    lease_ttl_s: int = DEFAULT_TTL_S
    repair_grace_s: float = 60.0  # a node gone this long has its replicas re-created elsewhere
    rebalance_after_s: float = 10.0  # primaries move back to a returned node once it is up this long
    listen: str = "127.0.0.1:0"  # gRPC health (and reflection) for probes; port 0 picks a free one
    info_file: str | None = None  # where to write {"address", "pid"} once serving
    credentials: ClusterCredentials | None = None  # None: --no-auth
    billing: BillingSettings | None = None  # storage sampling, usage alerts, Stripe (auth on only)
    observability: ObservabilitySettings | None = None  # metrics port, trace export


class Coordinator:
    def __init__(self, settings: CoordinatorSettings, address: str = "") -> None:
        self.settings, self.address = settings, address
        creds = settings.credentials
        self.store = EtcdStore(settings.etcd, creds.etcd_auth if creds else None)
        self.keeper = LeaseKeeper(
            settings.etcd,
            schema.coordinator_key(settings.coordinator_id),
            lambda: schema.LeaderRecord(settings.coordinator_id, address).to_json(),
            settings.lease_ttl_s,
            name="coordinator-lease",
            auth=creds.etcd_auth if creds else None,
        )
        self.leader_revision: int | None = None  # create revision of our leader key
        self.channels = NodeChannels(MemberIdentity(creds, settings.coordinator_id) if creds else None)
        self.absent_since: dict[str, float] = {}  # node -> when this leader first saw it without a lease
        self.present_since: dict[str, float] = {}  # node -> when this leader first saw it with one
        self.is_leader = asyncio.Event()
        self.view: ClusterView | None = None  # the latest the leader decided on
        self.backups: BackupRunner | None = None  # the leader's (metrics read its schedules)

    async def run(self, stop: asyncio.Event) -> None:
        self.keeper.start()
        if not await asyncio.to_thread(self.keeper.granted.wait, GRANT_TIMEOUT_S):
            raise ConnectionError("could not register with etcd")
        try:
            while not stop.is_set():
                if await self._campaign():
                    await self._lead(stop)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), CAMPAIGN_POLL_S)
                    except TimeoutError:
                        pass
        finally:
            self.keeper.stop(revoke=True)
            await self.store.close()

    async def _campaign(self) -> bool:
        lease_id = self.keeper.lease_id
        if lease_id is None:
            return False
        me = schema.LeaderRecord(self.settings.coordinator_id, self.address).to_json()
        try:
            await self.store.client()
            t = self.store.txn
            ok, resp = await self.store.transaction(
                compare=[t.create(schema.LEADER) == 0],
                success=[t.put(schema.LEADER, me, lease=lease_id)],
                failure=[t.get(schema.LEADER)],
            )
        except Exception as exc:
            log.warning("campaign failed", extra={"error": repr(exc)})
            await self.store.reset()
            return False
        if ok:
            self.leader_revision = resp[0].response_put.header.revision
        else:
            kv = await self.store.get(schema.LEADER)
            if kv is None or kv.value != me or kv.lease != lease_id:
                return False
            self.leader_revision = kv.create_revision  # still ours from before
        log.info("elected leader", extra={"revision": self.leader_revision})
        return True

    async def _lead(self, stop: asyncio.Event) -> None:
        deposed = asyncio.Event()
        self.is_leader.set()

        async def relay_stop() -> None:
            await stop.wait()
            deposed.set()

        relay = asyncio.create_task(relay_stop())
        billing = None
        if self.settings.billing is not None and self.settings.credentials is not None:
            b = Billing(self.store, self.channels, self.settings.billing, lambda: self.leader_revision)
            billing = asyncio.create_task(b.run(lambda: self.view, deposed))
        runner = BackupRunner(
            self.store, self.channels, self.settings.coordinator_id, lambda: self.leader_revision
        )
        self.backups = runner
        backups = asyncio.create_task(runner.run(lambda: self.view, deposed))

        async def on_state(revision: int, kvs) -> None:
            leader = next((kv for kv in kvs if kv.key == schema.LEADER), None)
            if leader is None or leader.create_revision != self.leader_revision or not self.keeper.alive():
                log.warning("lost leadership")
                deposed.set()
                return
            view = ClusterView.from_kvs(revision, kvs)
            self.view = view
            view.positions = await self._positions(view, failover_candidates(view))
            now = time.monotonic()
            named = {n for by in view.shards.values() for rec, _ in by.values() for n in rec.replicas}
            for n in named:
                if n in view.nodes:
                    self.absent_since.pop(n, None)
                else:
                    self.absent_since.setdefault(n, now)
            # (a new leader starts the clock afresh: repair may come later, never earlier)
            view.dead_for_s = {n: now - t for n, t in self.absent_since.items()}
            view.repair_grace_s = self.settings.repair_grace_s
            for n in list(self.present_since):
                if n not in view.nodes:
                    del self.present_since[n]
            for n in view.nodes:
                self.present_since.setdefault(n, now)
            view.live_for_s = {n: now - t for n, t in self.present_since.items()}
            view.rebalance_after_s = self.settings.rebalance_after_s
            for action in reconcile(view):
                if not await self._apply(action):
                    break  # the view is stale: re-list before deciding more

        try:
            await self.store.follow(schema.ROOT, on_state, deposed)
        finally:
            relay.cancel()
            deposed.set()
            if billing is not None:
                await billing
            await backups
            self.is_leader.clear()
            self.leader_revision = None

    async def _positions(self, view: ClusterView, wanted) -> dict[tuple[str, int, str], tuple[int, int]]:
        """Ask each failover candidate where its log ends (short deadline; no answer: not a candidate)."""

        async def ask(cid: str, shard: int, node: str):
            stub = self.channels.stub(view.nodes[node].address)
            req = node_pb2.StatsRequest(ref=node_pb2.ShardRef(collection_id=cid, shard=shard))
            try:
                s = await stub.Stats(req, timeout=POSITION_TIMEOUT_S)
                return (cid, shard, node), (s.last_epoch, s.log_end)
            except grpc.RpcError:
                return None

        answers = await asyncio.gather(*(ask(*w) for w in wanted))
        return dict(a for a in answers if a is not None)

    async def _apply(self, action: Action) -> bool:
        t = self.store.txn
        guard = [t.create(schema.LEADER) == self.leader_revision]
        if isinstance(action, PlaceShards):
            first = schema.shard_key(action.collection_id, 0)
            compare = [*guard, t.create(first) == 0]
            ops = [t.put(schema.shard_key(r.collection_id, r.shard), r.to_json()) for r in action.records]
            detail = {
                "collection_id": action.collection_id,
                "placement": {str(r.shard): list(r.replicas) for r in action.records},
            }
        elif isinstance(action, UpdateShard):
            key = schema.shard_key(action.record.collection_id, action.record.shard)
            compare = [*guard, t.mod(key) == action.mod_revision]
            ops = [t.put(key, action.record.to_json())]
            for cid, shard, node, incarnation in action.removed:
                ops.append(t.put(schema.replica_tombstone_key(cid, shard, node), incarnation.encode()))
                ops.append(t.delete(schema.replica_key(cid, shard, node)))
            detail = {
                "shard": f"{action.record.collection_id}/{action.record.shard}",
                "epoch": action.record.epoch,
                "reason": action.reason,
            }
        else:
            assert isinstance(action, PurgeCollection)
            return await self._purge(action, guard)
        ok, _ = await self.store.transaction(compare=compare, success=ops)
        log.info(type(action).__name__ if ok else f"{type(action).__name__} skipped (stale)", extra=detail)
        if ok and isinstance(action, UpdateShard) and action.reason.startswith("failover"):
            FAILOVERS.inc()
        return ok

    async def _purge(self, action: PurgeCollection, guard: list) -> bool:
        """Delete a dropped collection's shard and replica keys, in transactions of at most
        ETCD_TXN_OPS_MAX operations (a purge need not be atomic: a tombstone already hides it)."""
        t = self.store.txn
        prefix = action.collection_id.encode() + b"/"
        _, kvs = await self.store.list(schema.SHARDS + prefix)
        _, reps = await self.store.list(schema.REPLICAS + prefix)
        keys = [kv.key for kv in kvs + reps]
        for start in range(0, len(keys), limits.ETCD_TXN_OPS_MAX):
            chunk = keys[start : start + limits.ETCD_TXN_OPS_MAX]
            ok, _ = await self.store.transaction(compare=guard, success=[t.delete(k) for k in chunk])
            if not ok:
                log.info("PurgeCollection skipped (stale)", extra={"collection_id": action.collection_id})
                return False
        log.info("PurgeCollection", extra={"collection_id": action.collection_id, "keys": len(keys)})
        return True


def run(settings: CoordinatorSettings, log_level: str = "info") -> int:
    logs.configure(log_level, coordinator=settings.coordinator_id)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A port for probes (grpc.health.v1: SERVING while registered in etcd); it serves no API.
        server, port, health = build_server(settings.listen, lambda s: None, [])
        await set_serving(health, [], False)
        await server.start()
        address = f"{settings.listen.rsplit(':', 1)[0]}:{port}"
        coordinator = Coordinator(settings, address)
        metrics_address = observability.start(
            "coordinator", settings.coordinator_id, settings.observability, coordinator_collector(coordinator)
        )
        run_task = asyncio.create_task(coordinator.run(stop))
        granted = asyncio.create_task(asyncio.to_thread(coordinator.keeper.granted.wait, GRANT_TIMEOUT_S))
        await asyncio.wait([run_task, granted], return_when=asyncio.FIRST_COMPLETED)
        if not run_task.done():
            await set_serving(health, [], True)
            if settings.info_file:
                write_info_file(settings.info_file, {"address": address, "metrics": metrics_address})
            log.info("coordinator ready", extra={"address": address, "metrics": metrics_address})
        try:
            await run_task
        finally:
            granted.cancel()
            await set_serving(health, [], False)
            await server.stop(1.0)
            tracing.shutdown()

    asyncio.run(main())
    return 0


def new_id() -> str:
    return "c-" + uuid.uuid4().hex[:8]
