"""The etcd key schema and the records stored under it. Pure: no I/O.

    /quartz/nodes/<node>                      NodeRecord     (bound to the node's lease)
    /quartz/collections/<name>                CollectionRecord
    /quartz/shards/<collection_id>/<shard>    ShardRecord    (the shard map; written by the coordinator)
    /quartz/replicas/<collection_id>/<shard>/<node>  ReplicaRecord (a node reports a replica it created)
    /quartz/tombstones/<collection_id>        Tombstone      (nodes delete replicas only on this)
    /quartz/coordinator/leader                LeaderRecord   (bound to the leader's lease)

Collections get an immutable uuid used in every shard key and node directory, so dropping and
re-creating a name never resurrects old replicas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import orjson
import xxhash

ROOT = b"/quartz/"
NODES = ROOT + b"nodes/"
COLLECTIONS = ROOT + b"collections/"
SHARDS = ROOT + b"shards/"
REPLICAS = ROOT + b"replicas/"
TOMBSTONES = ROOT + b"tombstones/"
REPLICA_TOMBSTONES = ROOT + b"replica-tombstones/"  # <cid>/<shard>/<node> -> replica incarnation
DRAINING = ROOT + b"drain/"  # <node>: move every replica off it
LEADER = ROOT + b"coordinator/leader"


def node_key(node: str) -> bytes:
    return NODES + node.encode()


def collection_key(name: str) -> bytes:
    return COLLECTIONS + name.encode()


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


def shard_of(point_id: str, shards: int) -> int:
    """Stable placement of a point: xxhash64 of its UTF-8 id, modulo the shard count."""
    return xxhash.xxh64_intdigest(point_id.encode()) % shards


class Record:
    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes):
        return cls(**orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class NodeRecord(Record):
    id: str
    address: str
    incarnation: str  # a uuid per process start
    shards: int = 0


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


@dataclass(frozen=True, slots=True)
class InSync:
    node: str
    incarnation: str


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

    @property
    def ready(self) -> bool:
        return any(r.node == self.primary for r in self.in_sync)

    @classmethod
    def from_json(cls, raw: bytes) -> ShardRecord:
        d = orjson.loads(raw)
        d["replicas"] = tuple(d["replicas"])
        d["in_sync"] = tuple(InSync(**r) for r in d.get("in_sync", ()))
        return cls(**d)


@dataclass(frozen=True, slots=True)
class ReplicaRecord(Record):
    node: str
    incarnation: str  # a uuid per replica creation: an emptied and re-created replica differs
    state: str = "ready"


@dataclass(frozen=True, slots=True)
class Tombstone(Record):
    name: str
    collection_id: str


@dataclass(frozen=True, slots=True)
class LeaderRecord(Record):
    id: str
