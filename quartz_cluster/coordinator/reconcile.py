"""The coordinator's decisions as a pure function: a snapshot of the cluster in, actions out.
No etcd, no network: the leader loop lists etcd at one revision, calls `reconcile`, and applies
each action as a guarded transaction (see coordinator/main.py). Unit and property tests drive
it directly."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import orjson

from quartz_cluster.coordinator.placement import place_collection
from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import BadRecord, CollectionRecord, InSync, ReplicaRecord, ShardRecord

log = logging.getLogger("quartz.meta")


@dataclass
class ClusterView:
    """Everything under /quartz/ at one revision, decoded."""

    revision: int = 0
    nodes: dict[str, schema.NodeRecord] = field(default_factory=dict)  # live (lease held)
    collections: dict[str, CollectionRecord] = field(default_factory=dict)  # by schema.qualified name
    tenants: dict[str, schema.TenantRecord] = field(default_factory=dict)
    keys: dict[str, schema.KeyRecord] = field(default_factory=dict)  # API keys by key id
    shards: dict[str, dict[int, tuple[ShardRecord, int]]] = field(
        default_factory=dict
    )  # cid -> shard -> (rec, mod_rev)
    replicas: dict[tuple[str, int, str], ReplicaRecord] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)
    # (collection_id, shard, node) -> (epoch of the replica's last entry, its log end), asked by
    # the leader of the failover candidates that failover_candidates() names
    positions: dict[tuple[str, int, str], tuple[int, int]] = field(default_factory=dict)
    replica_tombstones: dict[tuple[str, int, str], str] = field(default_factory=dict)  # -> incarnation
    draining: set[str] = field(default_factory=set)
    unhealthy: dict[str, str] = field(default_factory=dict)  # live nodes that report they cannot write
    # filled by the leader: how long each node named in the map has been without a lease, and
    # how long a node may be gone before its replicas are re-created elsewhere
    dead_for_s: dict[str, float] = field(default_factory=dict)
    repair_grace_s: float = float("inf")
    # filled by the leader: how long each live node has held its lease (as this leader saw it);
    # a primary is moved to a node only once it has been live this long (None: never move)
    live_for_s: dict[str, float] = field(default_factory=dict)
    rebalance_after_s: float | None = None

    # records under /quartz/ that did not parse and were left out: key -> why
    bad_records: dict[bytes, str] = field(default_factory=dict)

    @classmethod
    def from_kvs(cls, revision: int, kvs) -> ClusterView:
        """Decode a listing. A record that does not parse (schema.BadRecord: bad JSON, a key of
        the wrong shape, a name with "/", ...) is left out, named in `bad_records` and logged
        once: every other record is still read, so one bad record cannot stop the control plane."""
        v = cls(revision=revision)
        revisions: dict[bytes, int] = {}
        for kv in kvs:
            try:
                v._add(kv)
            except BadRecord as exc:
                v.bad_records[kv.key] = str(exc)
                revisions[kv.key] = kv.mod_revision
        _report_bad(v.bad_records, revisions)
        v.draining |= set(v.unhealthy)  # an unhealthy node is drained without an operator
        return v

    def _add(self, kv) -> None:
        """Decode one key and value into the view; nothing is added if either does not parse."""
        k = kv.key
        where = schema.show_key(k)
        if k.startswith(schema.NODES):
            name = schema.parse_name_key(k, schema.NODES)
            rec = schema.NodeRecord.from_json(kv.value, where)
            _same(name, rec.id, where, "id")
            self.nodes[rec.id] = rec
            if rec.health:  # it cannot write: hand its primaries over and move its replicas away
                self.unhealthy[rec.id] = rec.health
        elif k.startswith(schema.COLLECTIONS):
            tenant, name = schema.parse_collection_key(k)
            rec = CollectionRecord.from_json(kv.value, where)
            _same(name, rec.name, where, "name")
            _same(tenant, rec.tenant, where, "tenant")
            self.collections[rec.qualified] = rec
        elif k.startswith(schema.SHARDS):
            rec = ShardRecord.from_json(kv.value, where)
            if k != schema.shard_key(rec.collection_id, rec.shard):
                raise BadRecord(
                    f"key does not match collection_id {rec.collection_id!r} / shard {rec.shard}", where
                )
            self.shards.setdefault(rec.collection_id, {})[rec.shard] = (rec, kv.mod_revision)
        elif k.startswith(schema.REPLICAS):
            cid, shard, node = schema.parse_replica_key(k, schema.REPLICAS)
            rec = ReplicaRecord.from_json(kv.value, where)
            _same(node, rec.node, where, "node")
            self.replicas[(cid, shard, node)] = rec
        elif k.startswith(schema.REPLICA_TOMBSTONES):
            cid, shard, node = schema.parse_replica_key(k, schema.REPLICA_TOMBSTONES)
            try:
                incarnation = kv.value.decode()
            except UnicodeDecodeError:
                raise BadRecord("value is not UTF-8", where) from None
            self.replica_tombstones[(cid, shard, node)] = incarnation
        elif k.startswith(schema.DRAINING):
            self.draining.add(schema.parse_name_key(k, schema.DRAINING))
        elif k.startswith(schema.TOMBSTONES):
            self.tombstones.add(schema.parse_name_key(k, schema.TOMBSTONES))
        elif k.startswith(schema.TENANTS):
            name = schema.parse_name_key(k, schema.TENANTS)
            tenant = schema.TenantRecord.from_json(kv.value, where)
            _same(name, tenant.name, where, "name")
            self.tenants[name] = tenant
        elif k.startswith(schema.KEYS):
            key_id = schema.parse_name_key(k, schema.KEYS)
            key = schema.KeyRecord.from_json(kv.value, where)
            _same(key_id, key.id, where, "id")
            self.keys[key_id] = key


def _same(in_key: str, in_record: str, where: str, name: str) -> None:
    if in_key != in_record:
        raise BadRecord(f"{name} {in_record!r} does not match the key", where)


# key -> mod_revision of the bad records already logged (only those still bad: bounded)
_reported: dict[bytes, int] = {}


def _report_bad(bad: dict[bytes, str], revisions: dict[bytes, int]) -> None:
    """Log each bad record once (again only if it is rewritten and still bad)."""
    for key, why in bad.items():
        if _reported.get(key) != revisions.get(key):
            log.warning(
                "bad record left out of the cluster view", extra={"key": schema.show_key(key), "error": why}
            )
    _reported.clear()
    _reported.update(revisions)


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
    # replicas this change removes: (collection_id, shard, node, replica incarnation) get a
    # replica tombstone (the node deletes exactly that replica) and lose their replica report
    removed: tuple[tuple[str, int, str, str], ...] = ()


@dataclass(frozen=True)
class PurgeCollection:
    """Remove every shard map entry and replica report of a dropped collection."""

    collection_id: str


Action = PlaceShards | UpdateShard | PurgeCollection


def shard_restore(collection_restore: str, shard: int) -> str:
    """A shard record's restore source, from its collection's (empty: not restored)."""
    if not collection_restore:
        return ""
    src = orjson.loads(collection_restore)
    epochs = src.get("epochs") or []
    return orjson.dumps(
        {
            "repository": src["repository"],
            "backup": src["backup"],
            "source": src["source"],
            "shard": shard,
            "epoch": epochs[shard] if shard < len(epochs) else 0,
        }
    ).decode()


def restored_epoch(restore: str) -> int:
    """The epoch a restored shard's data was cut in (0: not restored)."""
    return int(orjson.loads(restore).get("epoch", 0)) if restore else 0


def _primary_gone(view: ClusterView, rec: ShardRecord) -> bool:
    """The primary lost its lease, or its process restarted since it was appointed."""
    node = view.nodes.get(rec.primary)
    return node is None or (bool(rec.primary_incarnation) and node.incarnation != rec.primary_incarnation)


def _eligible(view: ClusterView, rec: ShardRecord) -> list[str]:
    """In-sync replicas that may be promoted: live, and still the very replica that was in sync
    (a replica whose data dir was lost and re-created has a new incarnation)."""
    out = []
    restarted = rec.primary in view.nodes
    for member in rec.in_sync:
        report = view.replicas.get((rec.collection_id, rec.shard, member.node))
        if member.node not in view.nodes or report is None or report.incarnation != member.incarnation:
            continue
        if member.node == rec.primary and not restarted:
            continue
        out.append(member.node)
    return out


def _healthy(view: ClusterView, rec: ShardRecord) -> bool:
    return bool(rec.in_sync) and not _primary_gone(view, rec)


def _rebalance(
    view: ClusterView, rec: ShardRecord, mod_rev: int, primaries: dict[str, int]
) -> UpdateShard | None:
    """Move the primary of a healthy shard to one of its in-sync replicas when that evens out the
    primaries per node (issue 12: after a node returned, all 4 primaries stayed where failover put
    them). Only to a node live for `rebalance_after_s`, and only when the primary's node leads at
    least two shards more than the target, so that every move narrows the spread and moves stop."""
    if view.rebalance_after_s is None or rec.primary in view.draining:
        return None
    current = primaries.get(rec.primary, 0)
    best = None
    for member in rec.in_sync:
        node = member.node
        report = view.replicas.get((rec.collection_id, rec.shard, node))
        if (
            node == rec.primary
            or node not in view.nodes
            or node in view.draining
            or report is None
            or report.incarnation != member.incarnation
            or view.live_for_s.get(node, 0.0) < view.rebalance_after_s
        ):
            continue
        if current >= primaries.get(node, 0) + 2 and (
            best is None or primaries.get(node, 0) < primaries.get(best, 0)
        ):
            best = node
    if best is None:
        return None
    return UpdateShard(
        replace(rec, epoch=rec.epoch + 1, primary=best, primary_incarnation=view.nodes[best].incarnation),
        mod_rev,
        f"rebalance: primary handed from {rec.primary} ({current} primaries) to {best} "
        f"({primaries.get(best, 0)})",
    )


def _move(
    view: ClusterView, rec: ShardRecord, mod_rev: int, target_rf: int, load: dict[str, int]
) -> UpdateShard | None:
    """Repair (a replica's node gone past the grace period) and drain, one step at a time. Each
    step is one guarded write; the next step is decided on the next snapshot."""
    cid, shard = rec.collection_id, rec.shard
    in_sync = {i.node for i in rec.in_sync}
    spare = sorted(
        (n for n in view.nodes if n not in rec.replicas and n not in view.draining),
        key=lambda n: (load.get(n, 0), n),
    )

    def removal(node: str) -> tuple[str, int, str, str]:
        report = view.replicas.get((cid, shard, node))
        return (cid, shard, node, report.incarnation if report else "")

    dead = [
        n for n in rec.replicas if n not in view.nodes and view.dead_for_s.get(n, 0.0) >= view.repair_grace_s
    ]
    if dead:
        if not spare:
            return None
        gone, new = dead[0], spare[0]
        new_rec = replace(
            rec,
            replicas=tuple(new if n == gone else n for n in rec.replicas),
            in_sync=tuple(i for i in rec.in_sync if i.node != gone),
        )
        return UpdateShard(
            new_rec,
            mod_rev,
            f"repair: {gone} gone past the grace period; new replica on {new}",
            (removal(gone),),
        )
    leaving = [n for n in rec.replicas if n in view.draining]
    if not leaving:
        return None
    node = leaving[0]
    staying = [n for n in rec.replicas if n not in view.draining]
    if rec.primary in view.unhealthy:
        # the primary cannot write: writes fail until another leads, so hand it over first, to
        # an in-sync replica (it holds every acknowledged write) on a live, healthy node
        successor = next((n for n in staying if n in in_sync and n in view.nodes), None)
        if successor is not None:
            return UpdateShard(
                replace(
                    rec,
                    epoch=rec.epoch + 1,
                    primary=successor,
                    primary_incarnation=view.nodes[successor].incarnation,
                ),
                mod_rev,
                f"{rec.primary} cannot write ({view.unhealthy[rec.primary]}): primary handed to {successor}",
            )
    if len(staying) < target_rf:
        if not spare:
            return None
        return UpdateShard(
            replace(rec, replicas=(*rec.replicas, spare[0])),
            mod_rev,
            f"drain {node}: new replica on {spare[0]}",
        )
    if not all(n in in_sync and n in view.nodes for n in staying):
        return None  # wait: the new replicas are still catching up
    if rec.primary == node:
        successor = staying[0]
        return UpdateShard(
            replace(
                rec,
                epoch=rec.epoch + 1,
                primary=successor,
                primary_incarnation=view.nodes[successor].incarnation,
            ),
            mod_rev,
            f"drain {node}: primary handed to {successor}",
        )
    new_rec = replace(
        rec,
        replicas=tuple(n for n in rec.replicas if n != node),
        in_sync=tuple(i for i in rec.in_sync if i.node != node),
    )
    return UpdateShard(new_rec, mod_rev, f"drain {node}: replica removed", (removal(node),))


def failover_candidates(view: ClusterView) -> list[tuple[str, int, str]]:
    """Replicas whose log position the leader must ask before reconcile can fail over."""
    out = []
    for cid, by_shard in view.shards.items():
        if cid in view.tombstones:
            continue
        for shard, (rec, _) in by_shard.items():
            if rec.in_sync and _primary_gone(view, rec):
                out.extend((cid, shard, node) for node in _eligible(view, rec))
    return out


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
                {n: rec for n, rec in view.nodes.items() if n not in view.unhealthy},
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
                restore=shard_restore(coll.restore, i),
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
                if _primary_gone(view, rec):
                    scored = [
                        (view.positions[(cid, shard, n)], n)
                        for n in _eligible(view, rec)
                        if (cid, shard, n) in view.positions
                    ]
                    if scored:  # else: no live in-sync replica; writes wait (DESIGN: last replica standing)
                        best = max(scored)[1]
                        in_sync = tuple(
                            i for i in rec.in_sync if i.node != rec.primary or best == rec.primary
                        )
                        new = replace(
                            rec,
                            epoch=rec.epoch + 1,
                            primary=best,
                            primary_incarnation=view.nodes[best].incarnation,
                            in_sync=in_sync,
                        )
                        actions.append(UpdateShard(new, mod_rev, f"failover from {rec.primary}"))
                    continue
                coll = next((c for c in view.collections.values() if c.id == cid), None)
                move = _move(
                    view,
                    rec,
                    mod_rev,
                    coll.replication_factor if coll else len(rec.replicas),
                    replicas_per_node,
                )
                if move is not None:
                    actions.append(move)
                    for n in move.record.replicas:
                        replicas_per_node[n] = replicas_per_node.get(n, 0) + 1
                    continue
                handover = _rebalance(view, rec, mod_rev, primaries_per_node)
                if handover is not None:
                    actions.append(handover)
                    primaries_per_node[rec.primary] -= 1
                    new_primary = handover.record.primary
                    primaries_per_node[new_primary] = primaries_per_node.get(new_primary, 0) + 1
                continue
            reports = [view.replicas.get((cid, shard, n)) for n in rec.replicas]
            if all(r is not None and r.state == "ready" for r in reports):
                # A new shard: every replica exists and is empty, so all are in sync. Epoch 1
                # is the first epoch in which the primary may accept writes.
                in_sync = tuple(InSync(n, r.incarnation) for n, r in zip(rec.replicas, reports, strict=True))
                primary = view.nodes.get(rec.primary)
                if primary is None:
                    continue
                epoch = restored_epoch(rec.restore) + 1
                new = replace(rec, epoch=epoch, in_sync=in_sync, primary_incarnation=primary.incarnation)
                actions.append(
                    UpdateShard(new, mod_rev, "replicas restored" if rec.restore else "replicas created")
                )
    return actions
