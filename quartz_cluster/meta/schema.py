"""The etcd key schema and the records stored under it. Pure: no I/O.

    /quartz/nodes/<node>                      NodeRecord     (bound to the node's lease)
    /quartz/collections/<tenant>/<name>       CollectionRecord (a tenant's collection)
    /quartz/shards/<collection_id>/<shard>    ShardRecord    (the shard map; written by the coordinator)
    /quartz/replicas/<collection_id>/<shard>/<node>  ReplicaRecord (a node reports a replica it created)
    /quartz/tombstones/<collection_id>        Tombstone      (nodes delete replicas only on this)
    /quartz/coordinator/leader                LeaderRecord   (bound to the leader's lease)
    /quartz/auth/tenants/<tenant>             TenantRecord
    /quartz/auth/keys/<key id>                KeyRecord      (an API key: its keyed hash, never the secret)

Collections get an immutable uuid used in every shard key and node directory, so dropping and
re-creating a name never resurrects old replicas.

Node ids, collection names and collection ids are path segments of these keys: they match
limits.NAME_PATTERN (no "/"), checked where they enter and again when a record is read. Reading
is strict: `Record.from_json` and the key parsers raise `BadRecord` (naming the key and field)
for bad JSON, a missing, unknown or mistyped field, a name that is not a NAME_PATTERN, a key of
the wrong shape, or a key that disagrees with its record. A reader of a whole listing skips and
reports such a record (`ClusterView.from_kvs`): one bad record never stops the control plane.
"""

from __future__ import annotations

import re
from dataclasses import MISSING, asdict, dataclass, field, fields

import orjson
import xxhash

from quartz_cluster import limits
from quartz_cluster.errors import Internal

ROOT = b"/quartz/"
NODES = ROOT + b"nodes/"
COLLECTIONS = ROOT + b"collections/"
SHARDS = ROOT + b"shards/"
REPLICAS = ROOT + b"replicas/"
TOMBSTONES = ROOT + b"tombstones/"
REPLICA_TOMBSTONES = ROOT + b"replica-tombstones/"  # <cid>/<shard>/<node> -> replica incarnation
DRAINING = ROOT + b"drain/"  # <node>: move every replica off it
LEADER = ROOT + b"coordinator/leader"


COORDINATORS = ROOT + b"coordinators/"  # <id> -> LeaderRecord, under the coordinator's lease


def coordinator_key(coordinator_id: str) -> bytes:
    return COORDINATORS + coordinator_id.encode()


def node_key(node: str) -> bytes:
    return NODES + node.encode()


DEFAULT_TENANT = "default"  # the bootstrap tenant (DESIGN §11)
TENANTS = ROOT + b"auth/tenants/"
KEYS = ROOT + b"auth/keys/"


def collection_key(tenant: str, name: str) -> bytes:
    return COLLECTIONS + f"{tenant}/{name}".encode()


def qualified(tenant: str, name: str) -> str:
    """A collection's full name, (tenant, name), as one string: the key of ClusterView.collections."""
    return f"{tenant}/{name}"


def tenant_key(tenant: str) -> bytes:
    return TENANTS + tenant.encode()


def key_record_key(key_id: str) -> bytes:
    return KEYS + key_id.encode()


def shard_key(collection_id: str, shard: int) -> bytes:
    return SHARDS + f"{collection_id}/{shard:04d}".encode()


def replica_key(collection_id: str, shard: int, node: str) -> bytes:
    return REPLICAS + f"{collection_id}/{shard:04d}/{node}".encode()


def replica_tombstone_key(collection_id: str, shard: int, node: str) -> bytes:
    return REPLICA_TOMBSTONES + f"{collection_id}/{shard:04d}/{node}".encode()


def drain_key(node: str) -> bytes:
    return DRAINING + node.encode()


def tombstone_key(collection_id: str) -> bytes:
    return TOMBSTONES + collection_id.encode()


class BadRecord(Internal):
    """A key or record under /quartz/ that does not parse (the field names the key)."""


_NAME_RE = re.compile(limits.NAME_PATTERN)
_SHARD_RE = re.compile(r"[0-9]{4}")  # shard numbers in keys: f"{shard:04d}", at most SHARD_NUMBER_MAX


def is_name(value: object) -> bool:
    """Whether `value` may be a node id, collection name or collection id (a key segment)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def show_key(key: bytes) -> str:
    """A key as text for messages and logs (undecodable bytes escaped)."""
    return key.decode(errors="backslashreplace")


def _name(value: object, where: str) -> str:
    if not is_name(value):
        raise BadRecord(f"must match {limits.NAME_PATTERN}, got {value!r}", where)
    return value  # type: ignore[return-value]


def _shard_number(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limits.SHARD_NUMBER_MAX:
        raise BadRecord(f"must be a shard number in [0, {limits.SHARD_NUMBER_MAX}], got {value!r}", where)
    return value


def key_segments(key: bytes, prefix: bytes, count: int) -> list[str]:
    """The `count` "/"-separated segments of `key` after `prefix`, as UTF-8 text."""
    where = show_key(key)
    try:
        parts = key[len(prefix) :].decode().split("/")
    except UnicodeDecodeError:
        raise BadRecord("key is not UTF-8", where) from None
    if len(parts) != count:
        raise BadRecord(f"key must have {count} segment(s) after {prefix.decode()}, got {len(parts)}", where)
    return parts


def parse_name_key(key: bytes, prefix: bytes) -> str:
    """The name in a key of one segment: NODES, TOMBSTONES, DRAINING, TENANTS, KEYS."""
    [name] = key_segments(key, prefix, 1)
    return _name(name, show_key(key))


def parse_collection_key(key: bytes) -> tuple[str, str]:
    """(tenant, name) of a COLLECTIONS key."""
    where = show_key(key)
    tenant, name = key_segments(key, COLLECTIONS, 2)
    return _name(tenant, where), _name(name, where)


def parse_replica_key(key: bytes, prefix: bytes = REPLICAS) -> tuple[str, int, str]:
    """(collection_id, shard, node) of a REPLICAS or REPLICA_TOMBSTONES key."""
    where = show_key(key)
    cid, shard, node = key_segments(key, prefix, 3)
    if not _SHARD_RE.fullmatch(shard):
        raise BadRecord(f"shard must be 4 digits, got {shard!r}", where)
    return _name(cid, where), _shard_number(int(shard), where), _name(node, where)


def shard_of(point_id: str, shards: int) -> int:
    """Stable placement of a point: xxhash64 of its UTF-8 id, modulo the shard count."""
    return xxhash.xxh64_intdigest(point_id.encode()) % shards


def _typed(value: object, kind: str, where: str) -> object:
    """`value` checked against a record field's annotation (the few kinds records use)."""
    if kind == "str":
        ok = isinstance(value, str)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "tuple[str, ...]":
        ok = isinstance(value, list) and all(isinstance(x, str) for x in value)
        value = tuple(value) if ok else value  # type: ignore[arg-type]
    elif kind == "tuple[InSync, ...]":
        if not isinstance(value, list):
            raise BadRecord(f"must be a list, got {value!r}", where)
        return tuple(InSync.from_obj(x, f"{where}[{i}]") for i, x in enumerate(value))
    else:
        raise TypeError(f"{where}: no decoder for {kind}")
    if not ok:
        raise BadRecord(f"must be {kind}, got {value!r}", where)
    return value


def _fields_of(cls, obj: object, where: str) -> dict:
    """Keyword arguments for dataclass `cls` from a decoded JSON object, strictly checked."""
    if not isinstance(obj, dict):
        raise BadRecord(f"must be a JSON object, got {type(obj).__name__}", where)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise BadRecord(f"unknown field {unknown[0]!r}", where)
    out = {}
    for name, f in known.items():
        if name in obj:
            out[name] = _typed(obj[name], f.type, f"{where}.{name}")
        elif f.default is MISSING and f.default_factory is MISSING:
            raise BadRecord("missing", f"{where}.{name}")
    return out


class Record:
    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes, where: str | None = None):
        """Decode and check a record; BadRecord (naming `where`, e.g. the key) if it is not one."""
        where = where or cls.__name__
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRecord(f"not valid JSON ({exc})", where) from None
        rec = cls(**_fields_of(cls, obj, where))
        rec._check(where)
        return rec

    def _check(self, where: str) -> None:
        """Checks beyond field types (names that are key segments); BadRecord if one fails."""


@dataclass(frozen=True, slots=True)
class NodeRecord(Record):
    id: str
    address: str
    incarnation: str  # a uuid per process start
    shards: int = 0
    memory_bytes_max: int = 0  # the node's memory budget (admission control); 0: not reported
    # "" while the node can write; else why it cannot (disk nearly full, checkpoints failing): the
    # coordinator hands its primaries to healthy in-sync replicas and moves its replicas away
    health: str = ""

    def _check(self, where: str) -> None:
        _name(self.id, f"{where}.id")

    def to_json(self) -> bytes:
        obj = asdict(self)
        if not self.health:
            del obj["health"]  # a healthy node's record reads as before (older coordinators)
        return orjson.dumps(obj)


@dataclass(frozen=True, slots=True)
class CollectionRecord(Record):
    name: str
    id: str
    dim: int
    metric: str
    shards: int
    replication_factor: int
    m: int
    ef_construction: int
    ef: int
    tenant: str = DEFAULT_TENANT
    # restored from a backup: JSON {"repository", "backup", "source" (the backed-up collection
    # id), "epochs" (per shard, the epoch its part was cut in)}; empty: a new, empty collection
    restore: str = ""

    @property
    def qualified(self) -> str:
        return qualified(self.tenant, self.name)

    def _check(self, where: str) -> None:
        _name(self.name, f"{where}.name")
        _name(self.id, f"{where}.id")
        _name(self.tenant, f"{where}.tenant")


@dataclass(frozen=True, slots=True)
class InSync:
    node: str
    incarnation: str

    @classmethod
    def from_obj(cls, obj: object, where: str) -> InSync:
        rec = cls(**_fields_of(cls, obj, where))
        _name(rec.node, f"{where}.node")
        return rec


@dataclass(frozen=True, slots=True)
class ShardRecord(Record):
    collection: str
    collection_id: str
    shard: int
    dim: int
    metric: str
    m: int
    ef_construction: int
    ef: int
    epoch: int
    primary: str
    replicas: tuple[str, ...]
    in_sync: tuple[InSync, ...] = field(default=())
    primary_incarnation: str = ""  # the primary node's process incarnation when it was appointed
    # a shard restored from a backup: JSON {"repository", "backup", "source", "epoch"}; each
    # replica is filled from the backup's part before it reports, and the first epoch is above
    # the part's (epochs only grow along a shard's log)
    restore: str = ""

    @property
    def ready(self) -> bool:
        return any(r.node == self.primary for r in self.in_sync)

    def _check(self, where: str) -> None:
        _name(self.collection, f"{where}.collection")
        _name(self.collection_id, f"{where}.collection_id")
        _shard_number(self.shard, f"{where}.shard")
        _name(self.primary, f"{where}.primary")
        for i, node in enumerate(self.replicas):
            _name(node, f"{where}.replicas[{i}]")


@dataclass(frozen=True, slots=True)
class ReplicaRecord(Record):
    node: str
    incarnation: str  # a uuid per replica creation: an emptied and re-created replica differs
    state: str = "ready"

    def _check(self, where: str) -> None:
        _name(self.node, f"{where}.node")


@dataclass(frozen=True, slots=True)
class Tombstone(Record):
    name: str
    collection_id: str

    def _check(self, where: str) -> None:
        _name(self.name, f"{where}.name")
        _name(self.collection_id, f"{where}.collection_id")


@dataclass(frozen=True, slots=True)
class LeaderRecord(Record):
    id: str
    address: str = ""  # where the coordinator serves gRPC health ("" before issue 12)


@dataclass(frozen=True, slots=True)
class TenantRecord(Record):
    name: str
    created_at: int = 0  # unix seconds
    plan: str = "free"  # billing/plans.py
    stripe_customer: str = ""
    webhook_url: str = ""  # usage alerts
    webhook_secret: str = ""  # signs them
    rate_limits: tuple[str, ...] = ()  # overrides of the plan's: "read=100/s:burst=200"

    def _check(self, where: str) -> None:
        _name(self.name, f"{where}.name")


@dataclass(frozen=True, slots=True)
class KeyRecord(Record):
    """An API key as stored: its id (public), tenant, role, collection scope, and the keyed hash
    of its secret (auth/keys.py). The secret itself is never stored."""

    id: str
    tenant: str
    role: str
    hash: str
    collections: tuple[str, ...] = ()  # empty: every collection of the tenant
    created_at: int = 0  # unix seconds
    expires_at: int = 0  # unix seconds; 0: never
    description: str = ""
    rate_limits: tuple[str, ...] = ()  # the key's own limits, as TenantRecord.rate_limits

    def _check(self, where: str) -> None:
        _name(self.id, f"{where}.id")
        _name(self.tenant, f"{where}.tenant")
        for i, c in enumerate(self.collections):
            _name(c, f"{where}.collections[{i}]")
