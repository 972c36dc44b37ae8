from quartz_cluster.proto.quartz.v1 import node_pb2 as _node_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WriteConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_CONSISTENCY_UNSPECIFIED: _ClassVar[WriteConsistency]
    ONE: _ClassVar[WriteConsistency]
    MAJORITY: _ClassVar[WriteConsistency]
    ALL: _ClassVar[WriteConsistency]

class ReadConsistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    READ_CONSISTENCY_UNSPECIFIED: _ClassVar[ReadConsistency]
    EVENTUAL: _ClassVar[ReadConsistency]
    SESSION: _ClassVar[ReadConsistency]
    STRONG: _ClassVar[ReadConsistency]
WRITE_CONSISTENCY_UNSPECIFIED: WriteConsistency
ONE: WriteConsistency
MAJORITY: WriteConsistency
ALL: WriteConsistency
READ_CONSISTENCY_UNSPECIFIED: ReadConsistency
EVENTUAL: ReadConsistency
SESSION: ReadConsistency
STRONG: ReadConsistency

class CollectionConfig(_message.Message):
    __slots__ = ("name", "dim", "metric", "shards", "replication_factor", "hnsw")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    HNSW_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    metric: _node_pb2.Metric
    shards: int
    replication_factor: int
    hnsw: _node_pb2.HnswParams
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[_Union[_node_pb2.Metric, str]] = ..., shards: _Optional[int] = ..., replication_factor: _Optional[int] = ..., hnsw: _Optional[_Union[_node_pb2.HnswParams, _Mapping]] = ...) -> None: ...

class InSyncReplica(_message.Message):
    __slots__ = ("node", "incarnation")
    NODE_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    node: str
    incarnation: str
    def __init__(self, node: _Optional[str] = ..., incarnation: _Optional[str] = ...) -> None: ...

class ShardInfo(_message.Message):
    __slots__ = ("shard", "epoch", "primary", "replicas", "in_sync")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    shard: int
    epoch: int
    primary: str
    replicas: _containers.RepeatedScalarFieldContainer[str]
    in_sync: _containers.RepeatedCompositeFieldContainer[InSyncReplica]
    def __init__(self, shard: _Optional[int] = ..., epoch: _Optional[int] = ..., primary: _Optional[str] = ..., replicas: _Optional[_Iterable[str]] = ..., in_sync: _Optional[_Iterable[_Union[InSyncReplica, _Mapping]]] = ...) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("config", "id", "ready", "shards", "restore", "status")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    RESTORE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    config: CollectionConfig
    id: str
    ready: bool
    shards: _containers.RepeatedCompositeFieldContainer[ShardInfo]
    restore: str
    status: str
    def __init__(self, config: _Optional[_Union[CollectionConfig, _Mapping]] = ..., id: _Optional[str] = ..., ready: _Optional[bool] = ..., shards: _Optional[_Iterable[_Union[ShardInfo, _Mapping]]] = ..., restore: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class CreateCollectionRequest(_message.Message):
    __slots__ = ("config", "wait")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    config: CollectionConfig
    wait: bool
    def __init__(self, config: _Optional[_Union[CollectionConfig, _Mapping]] = ..., wait: _Optional[bool] = ...) -> None: ...

class DropCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DropCollectionResponse(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: bool
    def __init__(self, dropped: _Optional[bool] = ...) -> None: ...

class ListCollectionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListCollectionsResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class DescribeCollectionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ShardFailure(_message.Message):
    __slots__ = ("shard", "code", "message")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    shard: int
    code: str
    message: str
    def __init__(self, shard: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ShardsAnswered(_message.Message):
    __slots__ = ("total", "answered", "failed")
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    total: int
    answered: int
    failed: _containers.RepeatedCompositeFieldContainer[ShardFailure]
    def __init__(self, total: _Optional[int] = ..., answered: _Optional[int] = ..., failed: _Optional[_Iterable[_Union[ShardFailure, _Mapping]]] = ...) -> None: ...

class ShardPosition(_message.Message):
    __slots__ = ("shard", "epoch", "lsn")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    LSN_FIELD_NUMBER: _ClassVar[int]
    shard: int
    epoch: int
    lsn: int
    def __init__(self, shard: _Optional[int] = ..., epoch: _Optional[int] = ..., lsn: _Optional[int] = ...) -> None: ...

class PointError(_message.Message):
    __slots__ = ("index", "code", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    code: str
    message: str
    def __init__(self, index: _Optional[int] = ..., code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class WriteResult(_message.Message):
    __slots__ = ("errors", "shards", "positions")
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    errors: _containers.RepeatedCompositeFieldContainer[PointError]
    shards: ShardsAnswered
    positions: _containers.RepeatedCompositeFieldContainer[ShardPosition]
    def __init__(self, errors: _Optional[_Iterable[_Union[PointError, _Mapping]]] = ..., shards: _Optional[_Union[ShardsAnswered, _Mapping]] = ..., positions: _Optional[_Iterable[_Union[ShardPosition, _Mapping]]] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "points", "write_consistency")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    points: _node_pb2.PointBatch
    write_consistency: WriteConsistency
    def __init__(self, collection: _Optional[str] = ..., points: _Optional[_Union[_node_pb2.PointBatch, _Mapping]] = ..., write_consistency: _Optional[_Union[WriteConsistency, str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "write_consistency", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WRITE_CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    write_consistency: WriteConsistency
    filter: str
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., write_consistency: _Optional[_Union[WriteConsistency, str]] = ..., filter: _Optional[str] = ...) -> None: ...

class GetPointsRequest(_message.Message):
    __slots__ = ("collection", "ids", "with_vectors", "with_payload", "consistency", "session", "allow_partial")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    with_vectors: bool
    with_payload: bool
    consistency: ReadConsistency
    session: _containers.RepeatedCompositeFieldContainer[ShardPosition]
    allow_partial: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., with_vectors: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ..., session: _Optional[_Iterable[_Union[ShardPosition, _Mapping]]] = ..., allow_partial: _Optional[bool] = ...) -> None: ...

class GetPointsResponse(_message.Message):
    __slots__ = ("points", "shards")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_node_pb2.Point]
    shards: ShardsAnswered
    def __init__(self, points: _Optional[_Iterable[_Union[_node_pb2.Point, _Mapping]]] = ..., shards: _Optional[_Union[ShardsAnswered, _Mapping]] = ...) -> None: ...

class SearchPointsRequest(_message.Message):
    __slots__ = ("collection", "queries", "k", "ef", "filter", "with_payload", "consistency", "allow_partial", "session")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SESSION_FIELD_NUMBER: _ClassVar[int]
    collection: str
    queries: _node_pb2.Vectors
    k: int
    ef: int
    filter: str
    with_payload: bool
    consistency: ReadConsistency
    allow_partial: bool
    session: _containers.RepeatedCompositeFieldContainer[ShardPosition]
    def __init__(self, collection: _Optional[str] = ..., queries: _Optional[_Union[_node_pb2.Vectors, _Mapping]] = ..., k: _Optional[int] = ..., ef: _Optional[int] = ..., filter: _Optional[str] = ..., with_payload: _Optional[bool] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ..., allow_partial: _Optional[bool] = ..., session: _Optional[_Iterable[_Union[ShardPosition, _Mapping]]] = ...) -> None: ...

class SearchPointsResponse(_message.Message):
    __slots__ = ("results", "shards")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_node_pb2.SearchResult]
    shards: ShardsAnswered
    def __init__(self, results: _Optional[_Iterable[_Union[_node_pb2.SearchResult, _Mapping]]] = ..., shards: _Optional[_Union[ShardsAnswered, _Mapping]] = ...) -> None: ...

class CountRequest(_message.Message):
    __slots__ = ("collection", "allow_partial", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    allow_partial: bool
    filter: str
    def __init__(self, collection: _Optional[str] = ..., allow_partial: _Optional[bool] = ..., filter: _Optional[str] = ...) -> None: ...

class ScrollPointsRequest(_message.Message):
    __slots__ = ("collection", "filter", "limit", "offset", "with_vectors", "with_payload", "consistency")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    WITH_VECTORS_FIELD_NUMBER: _ClassVar[int]
    WITH_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    collection: str
    filter: str
    limit: int
    offset: str
    with_vectors: bool
    with_payload: bool
    consistency: ReadConsistency
    def __init__(self, collection: _Optional[str] = ..., filter: _Optional[str] = ..., limit: _Optional[int] = ..., offset: _Optional[str] = ..., with_vectors: _Optional[bool] = ..., with_payload: _Optional[bool] = ..., consistency: _Optional[_Union[ReadConsistency, str]] = ...) -> None: ...

class ScrollPointsResponse(_message.Message):
    __slots__ = ("points", "next_offset", "shards")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_OFFSET_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[_node_pb2.Point]
    next_offset: str
    shards: ShardsAnswered
    def __init__(self, points: _Optional[_Iterable[_Union[_node_pb2.Point, _Mapping]]] = ..., next_offset: _Optional[str] = ..., shards: _Optional[_Union[ShardsAnswered, _Mapping]] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count", "shards")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    count: int
    shards: ShardsAnswered
    def __init__(self, count: _Optional[int] = ..., shards: _Optional[_Union[ShardsAnswered, _Mapping]] = ...) -> None: ...

class Tenant(_message.Message):
    __slots__ = ("name", "created_at", "plan", "stripe_customer", "webhook_url", "rate_limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    created_at: int
    plan: str
    stripe_customer: str
    webhook_url: str
    rate_limits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., created_at: _Optional[int] = ..., plan: _Optional[str] = ..., stripe_customer: _Optional[str] = ..., webhook_url: _Optional[str] = ..., rate_limits: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name", "plan", "stripe_customer", "webhook_url", "webhook_secret", "rate_limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    plan: str
    stripe_customer: str
    webhook_url: str
    webhook_secret: str
    rate_limits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., plan: _Optional[str] = ..., stripe_customer: _Optional[str] = ..., webhook_url: _Optional[str] = ..., webhook_secret: _Optional[str] = ..., rate_limits: _Optional[_Iterable[str]] = ...) -> None: ...

class UpdateTenantRequest(_message.Message):
    __slots__ = ("name", "plan", "stripe_customer", "webhook_url", "webhook_secret", "rate_limits", "clear_rate_limits")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    STRIPE_CUSTOMER_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CLEAR_RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    name: str
    plan: str
    stripe_customer: str
    webhook_url: str
    webhook_secret: str
    rate_limits: _containers.RepeatedScalarFieldContainer[str]
    clear_rate_limits: bool
    def __init__(self, name: _Optional[str] = ..., plan: _Optional[str] = ..., stripe_customer: _Optional[str] = ..., webhook_url: _Optional[str] = ..., webhook_secret: _Optional[str] = ..., rate_limits: _Optional[_Iterable[str]] = ..., clear_rate_limits: _Optional[bool] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("deleted", "keys_revoked")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    KEYS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    keys_revoked: int
    def __init__(self, deleted: _Optional[bool] = ..., keys_revoked: _Optional[int] = ...) -> None: ...

class ApiKeyInfo(_message.Message):
    __slots__ = ("id", "tenant", "role", "collections", "created_at", "expires_at", "description", "rate_limits")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    role: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    created_at: int
    expires_at: int
    description: str
    rate_limits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., role: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., created_at: _Optional[int] = ..., expires_at: _Optional[int] = ..., description: _Optional[str] = ..., rate_limits: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateKeyRequest(_message.Message):
    __slots__ = ("tenant", "role", "collections", "expires_in_s", "description", "rate_limits")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    role: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    expires_in_s: int
    description: str
    rate_limits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant: _Optional[str] = ..., role: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., expires_in_s: _Optional[int] = ..., description: _Optional[str] = ..., rate_limits: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateKeyResponse(_message.Message):
    __slots__ = ("info", "key")
    INFO_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    info: ApiKeyInfo
    key: str
    def __init__(self, info: _Optional[_Union[ApiKeyInfo, _Mapping]] = ..., key: _Optional[str] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedCompositeFieldContainer[ApiKeyInfo]
    def __init__(self, keys: _Optional[_Iterable[_Union[ApiKeyInfo, _Mapping]]] = ...) -> None: ...

class RevokeKeyRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class RevokeKeyResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class WhoAmIRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("tenant", "month")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    month: str
    def __init__(self, tenant: _Optional[str] = ..., month: _Optional[str] = ...) -> None: ...

class UsageDay(_message.Message):
    __slots__ = ("day", "calls", "calls_by_operation", "vectors_written", "vector_months", "gb_months")
    class CallsByOperationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DAY_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_BY_OPERATION_FIELD_NUMBER: _ClassVar[int]
    VECTORS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    VECTOR_MONTHS_FIELD_NUMBER: _ClassVar[int]
    GB_MONTHS_FIELD_NUMBER: _ClassVar[int]
    day: str
    calls: int
    calls_by_operation: _containers.ScalarMap[str, int]
    vectors_written: int
    vector_months: float
    gb_months: float
    def __init__(self, day: _Optional[str] = ..., calls: _Optional[int] = ..., calls_by_operation: _Optional[_Mapping[str, int]] = ..., vectors_written: _Optional[int] = ..., vector_months: _Optional[float] = ..., gb_months: _Optional[float] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("tenant", "month", "plan", "days", "calls", "calls_by_operation", "calls_by_key", "vectors_written", "vector_months", "gb_months", "stored_vectors", "stored_bytes", "stored_at", "calls_today")
    class CallsByOperationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class CallsByKeyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    DAYS_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    CALLS_BY_OPERATION_FIELD_NUMBER: _ClassVar[int]
    CALLS_BY_KEY_FIELD_NUMBER: _ClassVar[int]
    VECTORS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    VECTOR_MONTHS_FIELD_NUMBER: _ClassVar[int]
    GB_MONTHS_FIELD_NUMBER: _ClassVar[int]
    STORED_VECTORS_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORED_AT_FIELD_NUMBER: _ClassVar[int]
    CALLS_TODAY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    month: str
    plan: str
    days: _containers.RepeatedCompositeFieldContainer[UsageDay]
    calls: int
    calls_by_operation: _containers.ScalarMap[str, int]
    calls_by_key: _containers.ScalarMap[str, int]
    vectors_written: int
    vector_months: float
    gb_months: float
    stored_vectors: int
    stored_bytes: int
    stored_at: float
    calls_today: int
    def __init__(self, tenant: _Optional[str] = ..., month: _Optional[str] = ..., plan: _Optional[str] = ..., days: _Optional[_Iterable[_Union[UsageDay, _Mapping]]] = ..., calls: _Optional[int] = ..., calls_by_operation: _Optional[_Mapping[str, int]] = ..., calls_by_key: _Optional[_Mapping[str, int]] = ..., vectors_written: _Optional[int] = ..., vector_months: _Optional[float] = ..., gb_months: _Optional[float] = ..., stored_vectors: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., stored_at: _Optional[float] = ..., calls_today: _Optional[int] = ...) -> None: ...

class InvoiceRequest(_message.Message):
    __slots__ = ("tenant", "month")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MONTH_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    month: str
    def __init__(self, tenant: _Optional[str] = ..., month: _Optional[str] = ...) -> None: ...

class InvoiceResponse(_message.Message):
    __slots__ = ("json", "html")
    JSON_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    json: str
    html: str
    def __init__(self, json: _Optional[str] = ..., html: _Optional[str] = ...) -> None: ...

class BillingHistoryRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class InvoiceSummary(_message.Message):
    __slots__ = ("month", "total", "plan")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    month: str
    total: str
    plan: str
    def __init__(self, month: _Optional[str] = ..., total: _Optional[str] = ..., plan: _Optional[str] = ...) -> None: ...

class BillingHistoryResponse(_message.Message):
    __slots__ = ("invoices",)
    INVOICES_FIELD_NUMBER: _ClassVar[int]
    invoices: _containers.RepeatedCompositeFieldContainer[InvoiceSummary]
    def __init__(self, invoices: _Optional[_Iterable[_Union[InvoiceSummary, _Mapping]]] = ...) -> None: ...

class QueryHistoryRequest(_message.Message):
    __slots__ = ("tenant", "limit")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit: int
    def __init__(self, tenant: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class QueryRecord(_message.Message):
    __slots__ = ("time", "key", "collection", "k", "queries", "filter", "latency_ms", "status")
    TIME_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    time: float
    key: str
    collection: str
    k: int
    queries: int
    filter: bool
    latency_ms: float
    status: str
    def __init__(self, time: _Optional[float] = ..., key: _Optional[str] = ..., collection: _Optional[str] = ..., k: _Optional[int] = ..., queries: _Optional[int] = ..., filter: _Optional[bool] = ..., latency_ms: _Optional[float] = ..., status: _Optional[str] = ...) -> None: ...

class QueryHistoryResponse(_message.Message):
    __slots__ = ("queries",)
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedCompositeFieldContainer[QueryRecord]
    def __init__(self, queries: _Optional[_Iterable[_Union[QueryRecord, _Mapping]]] = ...) -> None: ...

class AuditRequest(_message.Message):
    __slots__ = ("tenant", "since", "limit", "verb")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    VERB_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    since: float
    limit: int
    verb: str
    def __init__(self, tenant: _Optional[str] = ..., since: _Optional[float] = ..., limit: _Optional[int] = ..., verb: _Optional[str] = ...) -> None: ...

class AuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, records: _Optional[_Iterable[str]] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class VerifyAuditResponse(_message.Message):
    __slots__ = ("ok", "records", "chains", "problems")
    OK_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CHAINS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    records: int
    chains: int
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., records: _Optional[int] = ..., chains: _Optional[int] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ("repository", "collections")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    repository: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, repository: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class BackupJob(_message.Message):
    __slots__ = ("id", "repository", "state", "error", "collections", "schedule", "requested_at", "finished_at", "shards_total", "shards_done", "bytes_total", "bytes_copied", "vectors", "parent")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SHARDS_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_COPIED_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    repository: str
    state: str
    error: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    schedule: str
    requested_at: float
    finished_at: float
    shards_total: int
    shards_done: int
    bytes_total: int
    bytes_copied: int
    vectors: int
    parent: str
    def __init__(self, id: _Optional[str] = ..., repository: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., schedule: _Optional[str] = ..., requested_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., shards_total: _Optional[int] = ..., shards_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., bytes_copied: _Optional[int] = ..., vectors: _Optional[int] = ..., parent: _Optional[str] = ...) -> None: ...

class GetBackupRequest(_message.Message):
    __slots__ = ("id", "repository")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    repository: str
    def __init__(self, id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class ListBackupsRequest(_message.Message):
    __slots__ = ("repository",)
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    repository: str
    def __init__(self, repository: _Optional[str] = ...) -> None: ...

class ListBackupsResponse(_message.Message):
    __slots__ = ("backups",)
    BACKUPS_FIELD_NUMBER: _ClassVar[int]
    backups: _containers.RepeatedCompositeFieldContainer[BackupJob]
    def __init__(self, backups: _Optional[_Iterable[_Union[BackupJob, _Mapping]]] = ...) -> None: ...

class DescribeBackupRequest(_message.Message):
    __slots__ = ("id", "repository")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    repository: str
    def __init__(self, id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class DescribeBackupResponse(_message.Message):
    __slots__ = ("backup", "manifest")
    BACKUP_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    backup: BackupJob
    manifest: bytes
    def __init__(self, backup: _Optional[_Union[BackupJob, _Mapping]] = ..., manifest: _Optional[bytes] = ...) -> None: ...

class DeleteBackupRequest(_message.Message):
    __slots__ = ("id", "repository")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    id: str
    repository: str
    def __init__(self, id: _Optional[str] = ..., repository: _Optional[str] = ...) -> None: ...

class DeleteBackupResponse(_message.Message):
    __slots__ = ("deleted", "bytes_freed")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    BYTES_FREED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    bytes_freed: int
    def __init__(self, deleted: _Optional[bool] = ..., bytes_freed: _Optional[int] = ...) -> None: ...

class RestoreRequest(_message.Message):
    __slots__ = ("repository", "backup_id", "collections", "as_name", "replication_factor", "tenant")
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    BACKUP_ID_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    AS_NAME_FIELD_NUMBER: _ClassVar[int]
    REPLICATION_FACTOR_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    repository: str
    backup_id: str
    collections: _containers.RepeatedScalarFieldContainer[str]
    as_name: str
    replication_factor: int
    tenant: str
    def __init__(self, repository: _Optional[str] = ..., backup_id: _Optional[str] = ..., collections: _Optional[_Iterable[str]] = ..., as_name: _Optional[str] = ..., replication_factor: _Optional[int] = ..., tenant: _Optional[str] = ...) -> None: ...

class RestoreResponse(_message.Message):
    __slots__ = ("collections",)
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    def __init__(self, collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ...) -> None: ...

class BackupSchedule(_message.Message):
    __slots__ = ("name", "repository", "interval_s", "keep", "collections", "last_backup", "last_state", "next_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPOSITORY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    LAST_BACKUP_FIELD_NUMBER: _ClassVar[int]
    LAST_STATE_FIELD_NUMBER: _ClassVar[int]
    NEXT_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    repository: str
    interval_s: int
    keep: int
    collections: _containers.RepeatedScalarFieldContainer[str]
    last_backup: str
    last_state: str
    next_at: float
    def __init__(self, name: _Optional[str] = ..., repository: _Optional[str] = ..., interval_s: _Optional[int] = ..., keep: _Optional[int] = ..., collections: _Optional[_Iterable[str]] = ..., last_backup: _Optional[str] = ..., last_state: _Optional[str] = ..., next_at: _Optional[float] = ...) -> None: ...

class SetBackupScheduleRequest(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: BackupSchedule
    def __init__(self, schedule: _Optional[_Union[BackupSchedule, _Mapping]] = ...) -> None: ...

class ListBackupSchedulesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBackupSchedulesResponse(_message.Message):
    __slots__ = ("schedules",)
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[BackupSchedule]
    def __init__(self, schedules: _Optional[_Iterable[_Union[BackupSchedule, _Mapping]]] = ...) -> None: ...

class DeleteBackupScheduleRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBackupScheduleResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...
