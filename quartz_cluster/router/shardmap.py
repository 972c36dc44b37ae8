"""The router's cached view of the cluster, kept from an etcd watch. The data path reads only
this cache (never etcd), so a slow or unreachable etcd cannot slow queries."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import NotFound, Unavailable, echo
from quartz_cluster.meta.schema import CollectionRecord, ShardRecord, qualified
from quartz_cluster.router.routing import cover

_rng = random.Random()


@dataclass(frozen=True, slots=True)
class Route:
    shard: int
    record: ShardRecord
    address: str  # of the replica to call


@dataclass(frozen=True, slots=True)
class ReadGroup:
    address: str  # the node to call
    shards: list[int]  # the shards it answers in that call
    hedgeable: bool  # every one of them has another live in-sync replica


class ShardMap:
    def __init__(self) -> None:
        self.view = ClusterView()
        self.loaded = asyncio.Event()
        self._changed = asyncio.Condition()

    async def update(self, revision: int, kvs) -> None:
        self.view = ClusterView.from_kvs(revision, kvs)
        self.loaded.set()
        async with self._changed:
            self._changed.notify_all()

    async def wait_revision(self, revision: int, timeout_s: float) -> None:
        """Wait until the cache reflects etcd at `revision` or later (read-your-writes for the
        control operations this router performed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.view.revision < revision and loop.time() < deadline:
            await self.wait_change(deadline - loop.time())

    async def wait_change(self, timeout_s: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout_s)
            except TimeoutError:
                pass

    def collection(self, tenant: str, name: str, field: str = "collection") -> CollectionRecord:
        """A tenant's live collection; NOT_FOUND if it has none of that name (whoever else does)."""
        coll = self.view.collections.get(qualified(tenant, name))
        if coll is None or coll.id in self.view.tombstones:
            raise NotFound(f"collection {echo(name)} does not exist", field)
        return coll

    def shards(self, coll: CollectionRecord) -> dict[int, ShardRecord]:
        return {s: rec for s, (rec, _) in self.view.shards.get(coll.id, {}).items()}

    def ready(self, coll: CollectionRecord) -> bool:
        shards = self.shards(coll)
        return len(shards) == coll.shards and all(r.ready for r in shards.values())

    def read_routes(self, coll: CollectionRecord, shard: int, strong: bool) -> list[Route]:
        """Replicas to read a shard from, in the order to try them. Strong: the primary only.
        Eventual: the live in-sync replicas in random order (load spread), then the primary."""
        if strong:
            return [self.primary(coll, shard)]
        rec, members = self._readable(coll, shard)
        random.shuffle(members)
        return [Route(shard, rec, self.view.nodes[n].address) for n in members]

    def _readable(self, coll: CollectionRecord, shard: int) -> tuple[ShardRecord, list[str]]:
        """The shard's record and its live in-sync replicas (at least one, or Unavailable)."""
        rec = self.view.shards.get(coll.id, {}).get(shard, (None, 0))[0]
        if rec is None or not rec.ready:
            raise Unavailable(f"shard {shard} of {echo(coll.name)} is not ready yet", "collection")
        members = [i.node for i in rec.in_sync if i.node in self.view.nodes]
        if not members:
            raise Unavailable(f"shard {shard} of {echo(coll.name)} has no live in-sync replica", "collection")
        return rec, members

    def read_plan(self, coll: CollectionRecord) -> tuple[list[ReadGroup], dict[int, Unavailable]]:
        """For an eventual search of every shard: the nodes to call, each with the shards it
        answers (as few calls as the live in-sync replicas allow, spread at random), and the
        shards no replica can answer now."""
        holders: dict[int, list[str]] = {}
        missing: dict[int, Unavailable] = {}
        for shard in range(coll.shards):
            try:
                holders[shard] = self._readable(coll, shard)[1]
            except Unavailable as exc:
                missing[shard] = exc
        groups = []
        for node, group in cover(holders, _rng):
            address = self.view.nodes[node].address
            # shards with another replica are hedged; those without (a replica down) cannot be,
            # and are asked apart so that they do not cost the others their hedge
            spare = [s for s in group if len(holders[s]) >= 2]
            alone = [s for s in group if len(holders[s]) < 2]
            groups += [
                ReadGroup(address, g, hedgeable) for g, hedgeable in ((spare, True), (alone, False)) if g
            ]
        return groups, missing

    def primary(self, coll: CollectionRecord, shard: int) -> Route:
        """Where writes (and, until replication lands, reads) of a shard go."""
        rec = self.view.shards.get(coll.id, {}).get(shard, (None, 0))[0]
        if rec is None or not rec.ready:
            raise Unavailable(f"shard {shard} of {echo(coll.name)} is not ready yet", "collection")
        node = self.view.nodes.get(rec.primary)
        if node is None:
            raise Unavailable(
                f"shard {shard} of {echo(coll.name)}: primary {rec.primary} is not live", "collection"
            )
        return Route(shard, rec, node.address)
