from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Metric(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_UNSPECIFIED: _ClassVar[Metric]
    COSINE: _ClassVar[Metric]
    L2: _ClassVar[Metric]
    IP: _ClassVar[Metric]

class ReplicateStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATE_OK: _ClassVar[ReplicateStatus]
    REPLICATE_BEHIND: _ClassVar[ReplicateStatus]
    REPLICATE_DIVERGED: _ClassVar[ReplicateStatus]
METRIC_UNSPECIFIED: Metric
COSINE: Metric
L2: Metric
IP: Metric
REPLICATE_OK: ReplicateStatus
REPLICATE_BEHIND: ReplicateStatus
REPLICATE_DIVERGED: ReplicateStatus

class Vectors(_message.Message):
    __slots__ = ("data", "count", "dim")
    DATA_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    count: int
    dim: int
    def __init__(self, data: _Optional[bytes] = ..., count: _Optional[int] = ..., dim: _Optional[int] = ...) -> None: ...

class ShardRef(_message.Message):
    __slots__ = ("collection_id", "shard")
    COLLECTION_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    collection_id: str
    shard: int
    def __init__(self, collection_id: _Optional[str] = ..., shard: _Optional[int] = ...) -> None: ...

class HnswParams(_message.Message):
    __slots__ = ("m", "ef_construction", "ef")
    M_FIELD_NUMBER: _ClassVar[int]
    EF_CONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    m: int
    ef_construction: int
    ef: int
    def __init__(self, m: _Optional[int] = ..., ef_construction: _Optional[int] = ..., ef: _Optional[int] = ...) -> None: ...

class ShardSpec(_message.Message):
    __slots__ = ("ref", "dim", "metric", "hnsw")
    REF_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    dim: int
    metric: Metric
    hnsw: HnswParams
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[Metric, str]] = ..., hnsw: _Optional[_Union[HnswParams, _Mapping]] = ...) -> None: ...

class CreateShardRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: ShardSpec
    def __init__(self, spec: _Optional[_Union[ShardSpec, _Mapping]] = ...) -> None: ...

class CreateShardResponse(_message.Message):
    __slots__ = ("created",)
    CREATED_FIELD_NUMBER: _ClassVar[int]
    created: bool
    def __init__(self, created: _Optional[bool] = ...) -> None: ...

class DropShardRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class DropShardResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class PointBatch(_message.Message):
    __slots__ = ("ids", "vectors", "payloads")
    IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("ref", "upserts", "delete_ids", "epoch", "min_in_sync")
    REF_FIELD_NUMBER: _ClassVar[int]
    UPSERTS_FIELD_NUMBER: _ClassVar[int]
    DELETE_IDS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MIN_IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    upserts: PointBatch
    delete_ids: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    min_in_sync: int
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., upserts: _Optional[_Union[PointBatch, _Mapping]] = ..., delete_ids: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ..., min_in_sync: _Optional[int] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("lsn", "epoch")
    LSN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    epoch: int
    def __init__(self, lsn: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("ref", "ids", "with_vectors", "with_payload", "min_lsn", "strong", "epoch")
    REF_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    STRONG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    ids: _containers.RepeatedScalarFieldContainer[str]
    with_vectors: bool
    with_payload: bool
    min_lsn: int
    strong: bool
    epoch: int
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., with_vectors: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., min_lsn: _Optional[int] = ..., strong: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("id", "vector", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    vector: bytes
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., vector: _Optional[bytes] = ..., payload: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("ref", "queries", "k", "ef", "filter", "with_payload", "min_lsn", "strong", "epoch", "also_shards")
    REF_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    STRONG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ALSO_SHARDS_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    queries: Vectors
    k: int
    ef: int
    filter: str
    with_payload: bool
    min_lsn: int
    strong: bool
    epoch: int
    also_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., queries: _Optional[_Union[Vectors, _Mapping]] = ..., k: _Optional[int] = ..., ef: _Optional[int] = ..., filter: _Optional[str] = ..., with_payload: _Optional[bool] = ..., min_lsn: _Optional[int] = ..., strong: _Optional[bool] = ..., epoch: _Optional[int] = ..., also_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class SearchResult(_message.Message):
    __slots__ = ("ids", "scores", "payloads", "plan")
    IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    plan: str
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., plan: _Optional[str] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("results", "searched_shards")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SEARCHED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SearchResult]
    searched_shards: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, results: _Optional[_Iterable[_Union[SearchResult, _Mapping]]] = ..., searched_shards: _Optional[_Iterable[int]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ...) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("spec", "count", "applied_lsn", "checkpoint_lsn", "index_bytes", "capacity", "free_labels", "rss_bytes", "epoch", "log_end", "last_epoch", "role", "health", "storage_bytes")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_LSN_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_LSN_FIELD_NUMBER: _ClassVar[int]
    INDEX_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    FREE_LABELS_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LOG_END_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    spec: ShardSpec
    count: int
    applied_lsn: int
    checkpoint_lsn: int
    index_bytes: int
    capacity: int
    free_labels: int
    rss_bytes: int
    epoch: int
    log_end: int
    last_epoch: int
    role: str
    health: str
    storage_bytes: int
    def __init__(self, spec: _Optional[_Union[ShardSpec, _Mapping]] = ..., count: _Optional[int] = ..., applied_lsn: _Optional[int] = ..., checkpoint_lsn: _Optional[int] = ..., index_bytes: _Optional[int] = ..., capacity: _Optional[int] = ..., free_labels: _Optional[int] = ..., rss_bytes: _Optional[int] = ..., epoch: _Optional[int] = ..., log_end: _Optional[int] = ..., last_epoch: _Optional[int] = ..., role: _Optional[str] = ..., health: _Optional[str] = ..., storage_bytes: _Optional[int] = ...) -> None: ...

class ListShardsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListShardsResponse(_message.Message):
    __slots__ = ("shards",)
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    def __init__(self, shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("lsn", "epoch", "ids", "labels", "vectors", "payloads", "delete_ids", "delete_labels")
    LSN_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    DELETE_IDS_FIELD_NUMBER: _ClassVar[int]
    DELETE_LABELS_FIELD_NUMBER: _ClassVar[int]
    lsn: int
    epoch: int
    ids: _containers.RepeatedScalarFieldContainer[str]
    labels: bytes
    vectors: Vectors
    payloads: _containers.RepeatedScalarFieldContainer[bytes]
    delete_ids: _containers.RepeatedScalarFieldContainer[str]
    delete_labels: bytes
    def __init__(self, lsn: _Optional[int] = ..., epoch: _Optional[int] = ..., ids: _Optional[_Iterable[str]] = ..., labels: _Optional[bytes] = ..., vectors: _Optional[_Union[Vectors, _Mapping]] = ..., payloads: _Optional[_Iterable[bytes]] = ..., delete_ids: _Optional[_Iterable[str]] = ..., delete_labels: _Optional[bytes] = ...) -> None: ...

class ReplicateRequest(_message.Message):
    __slots__ = ("ref", "epoch", "primary", "prev_lsn", "prev_epoch", "entries")
    REF_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    PREV_LSN_FIELD_NUMBER: _ClassVar[int]
    PREV_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    epoch: int
    primary: str
    prev_lsn: int
    prev_epoch: int
    entries: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., epoch: _Optional[int] = ..., primary: _Optional[str] = ..., prev_lsn: _Optional[int] = ..., prev_epoch: _Optional[int] = ..., entries: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ReplicateResponse(_message.Message):
    __slots__ = ("status", "log_end", "last_epoch", "incarnation")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_END_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    status: ReplicateStatus
    log_end: int
    last_epoch: int
    incarnation: str
    def __init__(self, status: _Optional[_Union[ReplicateStatus, str]] = ..., log_end: _Optional[int] = ..., last_epoch: _Optional[int] = ..., incarnation: _Optional[str] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("ref", "epoch", "lsn", "lsn_epoch", "next_label", "keys", "values")
    REF_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    LSN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    NEXT_LABEL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    epoch: int
    lsn: int
    lsn_epoch: int
    next_label: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., epoch: _Optional[int] = ..., lsn: _Optional[int] = ..., lsn_epoch: _Optional[int] = ..., next_label: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ScrollRequest(_message.Message):
    __slots__ = ("ref", "filter", "offset", "limit", "with_vectors", "with_payload", "min_lsn", "strong", "epoch")
    REF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    STRONG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    filter: str
    offset: str
    limit: int
    with_vectors: bool
    with_payload: bool
    min_lsn: int
    strong: bool
    epoch: int
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., filter: _Optional[str] = ..., offset: _Optional[str] = ..., limit: _Optional[int] = ..., with_vectors: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., min_lsn: _Optional[int] = ..., strong: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class ScrollResponse(_message.Message):
    __slots__ = ("points", "next_offset")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Point]
    next_offset: str
    def __init__(self, points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., next_offset: _Optional[str] = ...) -> None: ...

class CountPointsRequest(_message.Message):
    __slots__ = ("ref", "filter", "min_lsn", "strong", "epoch")
    REF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    MIN_LSN_FIELD_NUMBER: _ClassVar[int]
    STRONG_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    filter: str
    min_lsn: int
    strong: bool
    epoch: int
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., filter: _Optional[str] = ..., min_lsn: _Optional[int] = ..., strong: _Optional[bool] = ..., epoch: _Optional[int] = ...) -> None: ...

class CountPointsResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class BackupShardRequest(_message.Message):
    __slots__ = ("ref", "epoch", "repository", "backup_id", "parent")
    REF_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ref: ShardRef
    epoch: int
    repository: str
    backup_id: str
    parent: bytes
    def __init__(self, ref: _Optional[_Union[ShardRef, _Mapping]] = ..., epoch: _Optional[int] = ..., repository: _Optional[str] = ..., backup_id: _Optional[str] = ..., parent: _Optional[bytes] = ...) -> None: ...

class BackupShardResponse(_message.Message):
    __slots__ = ("part",)
    PART_FIELD_NUMBER: _ClassVar[int]
    part: bytes
    def __init__(self, part: _Optional[bytes] = ...) -> None: ...
