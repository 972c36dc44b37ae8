"""The coordinator's decisions as a pure function: a snapshot of the cluster in, actions out.
No etcd, no network: the leader loop lists etcd at one revision, calls `reconcile`, and applies
each action as a guarded transaction (see coordinator/main.py). Unit and property tests drive
it directly."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from quartz_cluster.coordinator.placement import place_collection
from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import CollectionRecord, InSync, ReplicaRecord, ShardRecord


@dataclass
class ClusterView:
    """Everything under /quartz/ at one revision, decoded."""

    revision: int = 0
    nodes: dict[str, schema.NodeRecord] = field(default_factory=dict)  # live (lease held)
    collections: dict[str, CollectionRecord] = field(default_factory=dict)  # by name
    shards: dict[str, dict[int, tuple[ShardRecord, int]]] = field(
        default_factory=dict
    )  # cid -> shard -> (rec, mod_rev)
    replicas: dict[tuple[str, int, str], ReplicaRecord] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)

    @classmethod
    def from_kvs(cls, revision: int, kvs) -> ClusterView:
        v = cls(revision=revision)
        for kv in kvs:
            k = kv.key
            if k.startswith(schema.NODES):
                rec = schema.NodeRecord.from_json(kv.value)
                v.nodes[rec.id] = rec
            elif k.startswith(schema.COLLECTIONS):
                rec = CollectionRecord.from_json(kv.value)
                v.collections[rec.name] = rec
            elif k.startswith(schema.SHARDS):
                rec = ShardRecord.from_json(kv.value)
                v.shards.setdefault(rec.collection_id, {})[rec.shard] = (rec, kv.mod_revision)
            elif k.startswith(schema.REPLICAS):
                cid, shard, node = k[len(schema.REPLICAS) :].decode().split("/")
                v.replicas[(cid, int(shard), node)] = ReplicaRecord.from_json(kv.value)
            elif k.startswith(schema.TOMBSTONES):
                v.tombstones.add(k[len(schema.TOMBSTONES) :].decode())
        return v


@dataclass(frozen=True)
class PlaceShards:
    """Create the shard map entries of a new collection (only if none exist)."""

    collection_id: str
    records: tuple[ShardRecord, ...]


@dataclass(frozen=True)
class UpdateShard:
    """Replace one shard map entry, if it is still at `mod_revision`."""

    record: ShardRecord
    mod_revision: int
    reason: str


@dataclass(frozen=True)
class PurgeCollection:
    """Remove every shard map entry and replica report of a dropped collection."""

    collection_id: str


Action = PlaceShards | UpdateShard | PurgeCollection


def reconcile(view: ClusterView) -> list[Action]:
    actions: list[Action] = []
    replicas_per_node: dict[str, int] = {}
    primaries_per_node: dict[str, int] = {}
    for by_shard in view.shards.values():
        for rec, _ in by_shard.values():
            primaries_per_node[rec.primary] = primaries_per_node.get(rec.primary, 0) + 1
            for n in rec.replicas:
                replicas_per_node[n] = replicas_per_node.get(n, 0) + 1

    for cid in sorted(view.tombstones):
        if cid in view.shards or any(key[0] == cid for key in view.replicas):
            actions.append(PurgeCollection(cid))

    for coll in sorted(view.collections.values(), key=lambda c: c.name):
        if coll.id in view.tombstones or coll.id in view.shards:
            continue
        try:
            placement = place_collection(
                coll.id,
                coll.shards,
                coll.replication_factor,
                view.nodes,
                replicas_per_node,
                primaries_per_node,
            )
        except FailedPrecondition:
            continue  # not enough live nodes yet: placed once they join
        records = tuple(
            ShardRecord(
                collection=coll.name,
                collection_id=coll.id,
                shard=i,
                dim=coll.dim,
                metric=coll.metric,
                m=coll.m,
                ef_construction=coll.ef_construction,
                ef=coll.ef,
                epoch=0,
                primary=nodes[0],
                replicas=tuple(nodes),
                in_sync=(),
            )
            for i, nodes in enumerate(placement)
        )
        for rec in records:
            primaries_per_node[rec.primary] = primaries_per_node.get(rec.primary, 0) + 1
            for n in rec.replicas:
                replicas_per_node[n] = replicas_per_node.get(n, 0) + 1
        actions.append(PlaceShards(coll.id, records))

    for cid, by_shard in sorted(view.shards.items()):
        if cid in view.tombstones:
            continue
        for shard, (rec, mod_rev) in sorted(by_shard.items()):
            if rec.in_sync:
                continue
            reports = [view.replicas.get((cid, shard, n)) for n in rec.replicas]
            if all(r is not None and r.state == "ready" for r in reports):
                # A new shard: every replica exists and is empty, so all are in sync. Epoch 1
                # is the first epoch in which the primary may accept writes.
                in_sync = tuple(InSync(n, r.incarnation) for n, r in zip(rec.replicas, reports, strict=True))
                actions.append(
                    UpdateShard(replace(rec, epoch=1, in_sync=in_sync), mod_rev, "replicas created")
                )
    return actions
