"""The JSON bodies of the HTTP gateway. They are the OpenAPI 3.1 schema (FastAPI generates
/openapi.json from them); the router's validation (quartz_cluster/validation.py) still checks
every value, exactly as for gRPC."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from quartz_cluster import limits
from quartz_cluster.backup.repository import URL_CHARS_MAX

Metric = Literal["cosine", "l2", "ip"]
WriteConsistency = Literal["one", "majority", "all"]
ReadConsistency = Literal["eventual", "session", "strong"]
NAME_REGEX = f"^{limits.NAME_PATTERN}$"
Name = Field(pattern=NAME_REGEX, description="letters, digits, _ and -; 1-64")
NameStr = Annotated[str, StringConstraints(pattern=NAME_REGEX)]
PointId = (
    Annotated[str, StringConstraints(min_length=1, max_length=limits.ID_BYTES_MAX)] | int
)  # a string (at most ID_BYTES_MAX UTF-8 bytes) or an integer
Vector = list[float]


class Strict(BaseModel):
    """Request bodies: unknown fields and values of the wrong JSON type are refused (strict: no
    "5" for 5, no true for 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CreateCollection(Strict):
    name: str = Name
    dim: int = Field(ge=1, le=limits.DIM_MAX)
    metric: Metric = "cosine"
    shards: int = Field(1, ge=1, le=limits.SHARDS_PER_COLLECTION_MAX)
    replication_factor: int | None = Field(None, ge=1, le=limits.REPLICATION_FACTOR_MAX)
    m: int | None = Field(None, ge=limits.HNSW_M_MIN, le=limits.HNSW_M_MAX)
    ef_construction: int | None = Field(None, ge=1, le=limits.EF_CONSTRUCTION_MAX)
    ef: int | None = Field(None, ge=1, le=limits.EF_MAX)
    wait: bool = Field(True, description="answer once every shard is placed and ready")


class ShardInfo(BaseModel):
    shard: int
    epoch: int
    primary: str
    replicas: list[str]
    in_sync: list[str]


class CollectionInfo(BaseModel):
    name: str
    id: str
    dim: int
    metric: Metric
    shards: int
    replication_factor: int
    m: int
    ef_construction: int
    ef: int
    ready: bool
    shard_map: list[ShardInfo]


class CollectionList(BaseModel):
    collections: list[CollectionInfo]


class Dropped(BaseModel):
    dropped: bool


class PointIn(Strict):
    id: PointId = Field(description="a string (<= 256 bytes) or an integer (stored as its decimal string)")
    vector: Vector
    payload: dict[str, Any] | None = None


class Upsert(Strict):
    points: list[PointIn] = Field(min_length=1, max_length=limits.BATCH_POINTS_MAX)
    write_consistency: WriteConsistency = "majority"


Filter = dict[str, Any]
FILTER_DESCRIPTION = "Qdrant-like: must / should / must_not conditions"


class DeletePoints(Strict):
    """`ids`, or `filter`: every point matching it (exactly one of the two)."""

    ids: list[PointId] | None = Field(
        None, min_length=1, max_length=limits.BATCH_POINTS_MAX, json_schema_extra={"uniqueItems": True}
    )
    filter: Filter | None = Field(
        None,
        description="instead of ids: every point matching it (at least one condition; not atomic: "
        "a failed delete leaves the points deleted so far deleted, and a retry deletes the rest)",
    )
    write_consistency: WriteConsistency = "majority"


class GetPoints(Strict):
    ids: list[PointId] = Field(max_length=limits.GET_IDS_MAX, json_schema_extra={"uniqueItems": True})
    with_vectors: bool = True
    with_payload: bool = True
    consistency: ReadConsistency = "eventual"
    allow_partial: bool = False


class ShardFailure(BaseModel):
    shard: int
    code: str
    message: str


class ShardsAnswered(BaseModel):
    total: int
    answered: int
    failed: list[ShardFailure]


class PointError(BaseModel):
    index: int
    code: str
    message: str


class WriteResult(BaseModel):
    errors: list[PointError] = Field(description="points not written (index into the request)")
    shards: ShardsAnswered


class PointOut(BaseModel):
    id: str
    vector: Vector | None = None
    payload: dict[str, Any] | None = None


class PointsOut(BaseModel):
    points: list[PointOut]
    shards: ShardsAnswered


class Search(Strict):
    vector: Vector | None = Field(None, description="one query (the reply has `hits`)")
    vectors: list[Vector] | None = Field(
        None, max_length=limits.QUERIES_PER_REQUEST_MAX, description="several (the reply has `results`)"
    )
    k: int = Field(10, ge=1, le=limits.K_MAX)
    filter: dict[str, Any] | None = Field(
        None, description="Qdrant-like: must / should / must_not conditions"
    )
    ef: int | None = Field(None, ge=1, le=limits.EF_MAX)
    consistency: ReadConsistency = "eventual"
    with_payload: bool = True
    allow_partial: bool = False


class Hit(BaseModel):
    id: str
    score: float = Field(description="cosine / ip: similarity, higher first; l2: distance, lower first")
    payload: dict[str, Any] | None = None


class SearchResult(BaseModel):
    hits: list[Hit] | None = None
    results: list[list[Hit]] | None = None
    shards: ShardsAnswered


class ScrollPoints(Strict):
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION)
    limit: int = Field(
        limits.SCROLL_LIMIT_DEFAULT, ge=0, le=limits.SCROLL_LIMIT_MAX, description="points per page (0: 100)"
    )
    offset: PointId | None = Field(None, description="the next_offset of the previous page (inclusive)")
    with_vectors: bool = False
    with_payload: bool = True
    consistency: ReadConsistency = "eventual"


class ScrollResult(BaseModel):
    points: list[PointOut] = Field(description="in id order (the byte order of the UTF-8 ids)")
    next_offset: str | None = Field(
        description="the offset of the next page; null after the last page (a page may hold fewer "
        "points than the limit and still not be the last)"
    )
    shards: ShardsAnswered


class CountPoints(Strict):
    filter: Filter | None = Field(None, description=FILTER_DESCRIPTION)
    allow_partial: bool = False


class CountResult(BaseModel):
    count: int
    shards: ShardsAnswered


RateLimitStr = Annotated[
    str,
    StringConstraints(max_length=100),
    Field(description="CLASS=N/UNIT[:burst=N], e.g. read=100/s or write=5000/s:burst=10000"),
]


class CreateTenant(Strict):
    name: str = Name
    plan: Literal["free", "paid"] = "free"
    stripe_customer: str = Field("", max_length=255, description="the Stripe customer id billed (cus_...)")
    webhook_url: str = Field("", max_length=2048, description="where usage alerts are POSTed")
    webhook_secret: str = Field("", max_length=256, description="signs usage alerts (Quartz-Signature)")
    rate_limits: list[RateLimitStr] = Field(default_factory=list, max_length=8)


class UpdateTenant(Strict):
    plan: Literal["free", "paid"] | None = None
    stripe_customer: str | None = Field(None, max_length=255)
    webhook_url: str | None = Field(None, max_length=2048)
    webhook_secret: str | None = Field(None, max_length=256)
    rate_limits: list[RateLimitStr] | None = Field(
        None, max_length=8, description="replaces the overrides; [] goes back to the plan's"
    )


class Tenant(BaseModel):
    name: str
    created_at: int
    plan: str
    stripe_customer: str
    webhook_url: str
    rate_limits: list[str]


class TenantList(BaseModel):
    tenants: list[Tenant]


class TenantDeleted(BaseModel):
    deleted: bool
    keys_revoked: int


class CreateKey(Strict):
    tenant: str | None = Field(None, pattern=f"^{limits.NAME_PATTERN}$", description="default: the caller's")
    role: Literal["admin", "tenant-admin", "read-write", "read-only"] = "read-write"
    collections: list[NameStr] = Field(default_factory=list, max_length=100)
    expires_in_s: int = Field(0, ge=0, le=10 * 365 * 86400, description="0: never expires")
    description: str = Field("", max_length=256)
    rate_limits: list[RateLimitStr] = Field(default_factory=list, max_length=8)


class KeyInfo(BaseModel):
    id: str
    tenant: str
    role: str
    collections: list[str]
    created_at: int
    expires_at: int
    description: str
    rate_limits: list[str]


class CreatedKey(BaseModel):
    key: str = Field(description="qz_<key id>_<secret>: shown only in this reply")
    info: KeyInfo


class KeyList(BaseModel):
    keys: list[KeyInfo]


class Revoked(BaseModel):
    revoked: bool


class UsageDay(BaseModel):
    day: str
    calls: int
    calls_by_operation: dict[str, int]
    vectors_written: int
    vector_months: float
    gb_months: float


class Usage(BaseModel):
    tenant: str
    month: str
    plan: str
    days: list[UsageDay]
    calls: int
    calls_by_operation: dict[str, int]
    calls_by_key: dict[str, int]
    vectors_written: int
    vector_months: float
    gb_months: float
    stored_vectors: int
    stored_bytes: int
    stored_at: float
    calls_today: int


class InvoiceLine(BaseModel):
    description: str
    unit: str
    quantity: float
    allowance: float
    billable: float
    unit_price: str
    amount: str


class Invoice(BaseModel):
    tenant: str
    customer: str
    plan: str
    month: str
    currency: str
    lines: list[InvoiceLine]
    total: str


class InvoiceSummary(BaseModel):
    month: str
    total: str
    plan: str


class BillingHistory(BaseModel):
    invoices: list[InvoiceSummary]


class QueryRecord(BaseModel):
    time: float
    key: str
    collection: str
    k: int
    queries: int
    filter: bool
    latency_ms: float
    status: str


class QueryHistory(BaseModel):
    queries: list[QueryRecord]


class AuditLog(BaseModel):
    records: list[dict[str, Any]] = Field(
        description="{chain, seq, prev, hash, event}: event is a Kubernetes audit Event"
    )


class AuditReport(BaseModel):
    ok: bool
    records: int
    chains: int
    problems: list[str]


class ReplicaStatus(BaseModel):
    node: str
    primary: bool
    in_sync: bool
    state: Literal["ok", "missing", "unreachable", "down"] = Field(
        description="ok: its node reported it; missing: its node answered without it (being "
        "created); unreachable: its node did not answer in time; down: its node holds no lease"
    )
    log_end: int | None = Field(description="the last LSN in its log (null: unknown)")
    lag: int | None = Field(
        description="log entries behind the primary's log end (null: either position unknown)"
    )
    count: int | None = Field(description="points it holds (null: unknown)")
    health: str = Field(description='its node\'s word on it ("ok", "checkpoint failing (...)", ...)')


class ShardStatus(BaseModel):
    tenant: str
    collection: str
    collection_id: str
    shard: int
    epoch: int
    primary: str
    ready: bool = Field(description="its primary is in sync (it can take writes)")
    in_sync: list[str]
    replication_factor: int
    replicas: list[ReplicaStatus]


class NodeStatus(BaseModel):
    id: str
    address: str | None = Field(description="null: the node holds no lease")
    alive: bool = Field(description="it holds its lease in etcd")
    reachable: bool | None = Field(description="it answered this router in time (null: not asked)")
    error: str = Field(description="why it did not answer")
    health: str = Field(description='"" while it can write; else why it cannot')
    draining: bool
    replicas: int
    primaries: int
    rss_bytes: int | None = Field(description="the node process's resident memory (null: unknown)")


class CollectionStatus(BaseModel):
    tenant: str
    name: str
    id: str
    dim: int
    metric: str
    shards: int
    replication_factor: int
    points: int = Field(description="the sum of its primaries' counts")
    points_complete: bool = Field(description="every primary answered (else points is a lower bound)")
    ready: bool


class ClusterSummary(BaseModel):
    nodes: int
    nodes_alive: int
    nodes_unreachable: int
    shards: int
    shards_without_primary: int
    shards_under_replicated: int
    max_lag: int
    collections: int


class ClusterStatus(BaseModel):
    revision: int = Field(description="the etcd revision of the router's shard map")
    summary: ClusterSummary
    nodes: list[NodeStatus]
    shards: list[ShardStatus]
    collections: list[CollectionStatus] = Field(description="every tenant's")


class OperationLatency(BaseModel):
    protocol: Literal["grpc", "http"]
    operation: str = Field(description='a gRPC method ("Search") or an HTTP route ("POST /v1/...")')
    count: int = Field(description="requests answered in the window")
    failed: int = Field(description="of them, answered with a gRPC code other than OK or HTTP >= 400")
    per_s: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class LatencyReport(BaseModel):
    window_s: float = Field(description="the window covered (shorter than asked while the router is young)")
    requested_window_s: float
    start: float = Field(description="unix seconds")
    end: float = Field(description="unix seconds")
    operations: list[OperationLatency] = Field(description="those with requests in the window, busiest first")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str = Field(description="the gRPC status name (INVALID_ARGUMENT, NOT_FOUND, ...)")


class Health(BaseModel):
    status: str


# ------------------------------------------------------------------ backups (admin keys)

Repository = Field(min_length=1, max_length=URL_CHARS_MAX, description="file:///DIR or s3://BUCKET/PREFIX")
# a collection of the default tenant by its name, or any tenant's as "tenant/name"
QualifiedName = Annotated[str, StringConstraints(pattern=f"^({limits.NAME_PATTERN}/)?{limits.NAME_PATTERN}$")]
QualifiedNames = Field(
    default_factory=list,
    max_length=limits.BACKUP_COLLECTIONS_MAX,
    description='collections, each "tenant/name" or a name of the default tenant; empty: all',
)


class CreateBackup(Strict):
    repository: str = Repository
    collections: list[QualifiedName] = QualifiedNames


class BackupJob(BaseModel):
    id: str
    repository: str
    state: Literal["pending", "running", "complete", "failed"]
    error: str
    collections: list[str]
    schedule: str = Field(description="the schedule that made it, if any")
    requested_at: float = Field(description="unix seconds: every write acknowledged before is in it")
    finished_at: float
    shards_total: int
    shards_done: int
    bytes_total: int = Field(description="the backup's logical size")
    bytes_copied: int = Field(description="what this backup copied (the rest was in the repository)")
    vectors: int
    parent: str = Field(description="the backup whose files it reused")


class BackupList(BaseModel):
    backups: list[BackupJob]


class BackupManifest(BaseModel):
    backup: BackupJob
    manifest: dict[str, Any] = Field(
        description="schemas, per-shard epoch/LSN, files with sizes and checksums"
    )


class BackupDeleted(BaseModel):
    deleted: bool
    bytes_freed: int


class RestoreBackup(Strict):
    repository: str = Repository
    collections: list[QualifiedName] = QualifiedNames
    as_name: str | None = Field(None, pattern=NAME_REGEX, description="with one collection: its new name")
    replication_factor: int = Field(
        0, ge=0, le=limits.REPLICATION_FACTOR_MAX, description="0: 3, or fewer live nodes"
    )
    tenant: str | None = Field(None, pattern=NAME_REGEX, description="default: each collection's own")


class Restored(BaseModel):
    collections: list[CollectionInfo]


class SetBackupSchedule(Strict):
    repository: str = Repository
    interval_s: int = Field(ge=1, le=2**32 - 1)
    keep: int = Field(ge=1, le=2**32 - 1, description="complete backups kept; older ones are deleted")
    collections: list[QualifiedName] = QualifiedNames


class BackupSchedule(BaseModel):
    name: str
    repository: str
    interval_s: int
    keep: int
    collections: list[str]
    last_backup: str
    last_state: str
    next_at: float = Field(description="unix seconds")


class BackupScheduleList(BaseModel):
    schedules: list[BackupSchedule]


class ScheduleDeleted(BaseModel):
    deleted: bool
