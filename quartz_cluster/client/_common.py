"""What the sync and async clients share: result types, request builders, reply parsers and the
retry policy. No I/O here."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson

from quartz_cluster import errors, limits
from quartz_cluster.errors import echo
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2
from quartz_cluster.rpc.status import error_from_rpc

METRICS = {"cosine": node_pb2.COSINE, "l2": node_pb2.L2, "ip": node_pb2.IP}
METRIC_NAMES = {v: k for k, v in METRICS.items()}
WRITE_CONSISTENCY = {"one": quartz_pb2.ONE, "majority": quartz_pb2.MAJORITY, "all": quartz_pb2.ALL}
READ_CONSISTENCY = {
    "eventual": quartz_pb2.EVENTUAL,
    "session": quartz_pb2.SESSION,
    "strong": quartz_pb2.STRONG,
}
RETRY_BACKOFF_S_FIRST = 0.05
RETRY_BACKOFF_S_MAX = 1.0


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float  # cosine / ip: similarity (higher is better); l2: distance (lower is better)
    payload: dict | None = None


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    vector: np.ndarray | None
    payload: dict | None


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    id: str
    dim: int
    metric: str
    shards: int
    replication_factor: int
    m: int
    ef_construction: int
    ef: int
    ready: bool
    shard_map: list[dict[str, Any]] = field(default_factory=list)
    status: str = ""  # "ready", "creating", "restoring" or "restore failed: <reason>"
    restore: str = ""  # restored from: "<backup id> in <repository>"


@dataclass(frozen=True, slots=True)
class ShardFailure:
    shard: int
    code: str  # gRPC status name, e.g. UNAVAILABLE
    message: str


@dataclass(frozen=True, slots=True)
class ShardsAnswered:
    """How many of the collection's shards a read heard from; `failed` names the others (reads
    with allow_partial=True)."""

    total: int
    answered: int
    failed: tuple[ShardFailure, ...] = ()

    @property
    def partial(self) -> bool:
        return self.answered < self.total


class Results(list):
    """A read's answer (a list, as before) that also says which shards answered: `.shards`
    (ShardsAnswered) and `.partial` (True when some shard is missing from it)."""

    shards: ShardsAnswered

    def __init__(self, items, shards: ShardsAnswered) -> None:
        super().__init__(items)
        self.shards = shards

    @property
    def partial(self) -> bool:
        return self.shards.partial


class ScrollPage(list):
    """scroll()'s answer: a list of Point in id order (the byte order of the UTF-8 ids), plus
    `next_offset`, the offset of the next page (None after the last page), and `.shards`. A page
    may hold fewer points than asked (its bytes reached the reply limit) and still have a next
    page: go on until next_offset is None."""

    next_offset: str | None
    shards: ShardsAnswered

    def __init__(self, items, next_offset: str | None, shards: ShardsAnswered) -> None:
        super().__init__(items)
        self.next_offset = next_offset
        self.shards = shards


class Count(int):
    """count()'s answer: an int that also says which shards answered (`.shards`, `.partial`)."""

    shards: ShardsAnswered

    def __new__(cls, value: int, shards: ShardsAnswered) -> Count:
        out = super().__new__(cls, value)
        out.shards = shards
        return out

    @property
    def partial(self) -> bool:
        return self.shards.partial


def shards_answered(msg: quartz_pb2.ShardsAnswered) -> ShardsAnswered:
    return ShardsAnswered(
        msg.total, msg.answered, tuple(ShardFailure(f.shard, f.code, f.message) for f in msg.failed)
    )


class PartialWriteError(errors.Unavailable):
    """Some points of a batch were not written (their shards refused or were unreachable); the
    rest were. `failed` maps each failed id to (status code, message). Retrying is safe."""

    def __init__(self, failed: dict[str, tuple[str, str]]) -> None:
        self.failed = failed
        first = next(iter(failed.items()))
        super().__init__(f"{len(failed)} point(s) not written, e.g. {first[0]!r}: {first[1][1]}")


def unreachable(exc: grpc.RpcError) -> bool:
    """The channel could not connect (nothing listens, a bad host name), as opposed to a router
    that answered UNAVAILABLE (a shard failing over)."""
    if exc.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    text = (exc.details() or "").lower()
    return any(
        s in text for s in ("failed to connect", "connection refused", "dns resolution", "name resolution")
    )


def to_error(exc: grpc.RpcError, address: str, ever_connected: bool = True) -> errors.QuartzError:
    """The domain error for a failed call; the router's address is named when the call failed
    on the way (no answer from the router), never only "Deadline Exceeded"."""
    if unreachable(exc):
        again = "" if ever_connected else " (is it running? `quartz up`, or --router / QUARTZ_ROUTER)"
        return errors.Unavailable(f"cannot reach the QuartzDB router at {address}{again}: {exc.details()}")
    if exc.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
        return error_from_rpc(exc, f"router {address}: ")
    return error_from_rpc(exc)


def retryable(exc: grpc.RpcError, ever_connected: bool = True) -> bool:
    """UNAVAILABLE is retried (a shard failing over, the router restarting), except that a router
    never reached fails fast: nothing listens there."""
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (ever_connected or not unreachable(exc))


def request_id() -> str:
    return uuid.uuid4().hex


def call_metadata(base: tuple, rid: str, attempt: int) -> tuple:
    """The key plus the call's request id and attempt: the router meters a call once however
    many attempts it takes (and however many routers they reach)."""
    return (*base, ("quartz-request-id", rid), ("quartz-attempt", str(attempt)))


def rate_limit_wait_s(exc: grpc.RpcError) -> float | None:
    """How long a rate-limited call says to wait (its retry-after-ms trailer); None for any
    other failure, a quota refusal included (waiting does not help there)."""
    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
        return None
    try:
        trailers = exc.trailing_metadata() or ()
    except Exception:
        return None
    for k, v in trailers:
        if k == "retry-after-ms":
            try:
                return max(0.001, int(v) / 1000)
            except ValueError:
                return None
    return None


API_KEY_ENV = "QUARTZ_API_KEY"
DATA_DIR_ENV = "QUARTZ_DATA_DIR"
DEFAULT_DATA_DIR = ".quartz/cluster"


def find_api_key(api_key: str | None = None, data_dir: str | Path | None = None) -> str | None:
    """The API key to send: `api_key`, else $QUARTZ_API_KEY, else the key file of a `quartz up`
    data dir (`data_dir`, else $QUARTZ_DATA_DIR, else .quartz/cluster) as its cluster.json names
    it ("admin_key_file"); None when there is none (a --no-auth cluster needs none)."""
    if api_key:
        return api_key.strip()
    if os.environ.get(API_KEY_ENV):
        return os.environ[API_KEY_ENV].strip()
    d = Path(data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)
    try:
        info = orjson.loads((d / "cluster.json").read_bytes())
        path = Path(info["admin_key_file"]) if info.get("admin_key_file") else None
    except (OSError, ValueError, TypeError, KeyError):
        path = None
    for candidate in (path, d / "admin.key"):
        if candidate is not None:
            try:
                return candidate.read_text().strip() or None
            except OSError:
                continue
    return None


def metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def channel_credentials(tls: bool, ca_cert: str | bytes | None) -> grpc.ChannelCredentials | None:
    """TLS to the router: `ca_cert` (PEM bytes or a file path) to trust, or tls=True for the
    system's roots; None: plaintext."""
    if ca_cert is None and not tls:
        return None
    if isinstance(ca_cert, str):
        ca_cert = Path(ca_cert).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=ca_cert)


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    created_at: int
    plan: str = "free"
    stripe_customer: str = ""
    webhook_url: str = ""
    rate_limits: tuple[str, ...] = ()


def parse_tenant(t: quartz_pb2.Tenant) -> Tenant:
    return Tenant(t.name, t.created_at, t.plan, t.stripe_customer, t.webhook_url, tuple(t.rate_limits))


def tenant_request(name, plan, stripe_customer, webhook_url, webhook_secret, rate_limits, update=False):
    """CreateTenantRequest, or UpdateTenantRequest (None: leave unchanged)."""
    fields = {"name": text(name, "name")}
    for field_, value in (
        ("plan", plan),
        ("stripe_customer", stripe_customer),
        ("webhook_url", webhook_url),
        ("webhook_secret", webhook_secret),
    ):
        if value is not None:
            fields[field_] = text(value, field_)
    limits = [text(x, f"rate_limits[{i}]") for i, x in enumerate(rate_limits or ())]
    if update:
        return quartz_pb2.UpdateTenantRequest(
            **fields, rate_limits=limits, clear_rate_limits=rate_limits is not None and not limits
        )
    return quartz_pb2.CreateTenantRequest(**fields, rate_limits=limits)


def message_dict(msg) -> dict:
    """A reply as plain data: field names as in the proto, every field present, integers as
    ints (protobuf's JSON mapping would make 64-bit ones strings)."""
    out: dict = {}
    for f in msg.DESCRIPTOR.fields:
        value = getattr(msg, f.name)
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out[f.name] = dict(value)
        elif f.message_type is not None:
            is_list = f.is_repeated
            out[f.name] = [message_dict(v) for v in value] if is_list else message_dict(value)
        elif f.is_repeated:
            out[f.name] = list(value)
        else:
            out[f.name] = value
    return out


def usage_request(tenant, month) -> quartz_pb2.UsageRequest:
    return quartz_pb2.UsageRequest(tenant=text(tenant or "", "tenant"), month=text(month or "", "month"))


def invoice_request(tenant, month) -> quartz_pb2.InvoiceRequest:
    return quartz_pb2.InvoiceRequest(tenant=text(tenant or "", "tenant"), month=text(month or "", "month"))


def audit_request(tenant, since, limit, verb) -> quartz_pb2.AuditRequest:
    return quartz_pb2.AuditRequest(
        tenant=text(tenant or "", "tenant"),
        since=float(since or 0),
        limit=uint(limit, "limit", 0, 2**32 - 1),
        verb=text(verb or "", "verb"),
    )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """An API key as listed (never its secret)."""

    id: str
    tenant: str
    role: str
    collections: tuple[str, ...]
    created_at: int
    expires_at: int  # 0: never
    description: str
    rate_limits: tuple[str, ...] = ()


def parse_key(info: quartz_pb2.ApiKeyInfo) -> KeyInfo:
    return KeyInfo(
        info.id,
        info.tenant,
        info.role,
        tuple(info.collections),
        info.created_at,
        info.expires_at,
        info.description,
        tuple(info.rate_limits),
    )


def create_key_request(
    tenant: str | None,
    role: str,
    collections: Sequence[str],
    expires_in_s: int,
    description: str,
    rate_limits: Sequence[str] = (),
) -> quartz_pb2.CreateKeyRequest:
    return quartz_pb2.CreateKeyRequest(
        rate_limits=[text(x, f"rate_limits[{i}]") for i, x in enumerate(rate_limits)],
        tenant=text(tenant or "", "tenant"),
        role=text(role, "role"),
        collections=[text(x, f"collections[{i}]") for i, x in enumerate(collections)],
        expires_in_s=uint(expires_in_s, "expires_in_s", 0, 2**63 - 1),
        description=text(description, "description"),
    )


def _choice(value: str, table: dict, field_: str) -> int:
    if value not in table:
        raise errors.InvalidArgument(f"must be one of {', '.join(table)}, got {value!r}", field_)
    return table[value]


def uint(value: Any, field_: str, low: int, high: int) -> int:
    """An integer argument that goes into a uint32 field: checked here, so that k=-1 or k=2**40
    raise InvalidArgument naming it, not protobuf's bare ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not low <= value <= high:
        raise errors.InvalidArgument(f"must be an integer in [{low}, {high}], got {echo(value)}", field_)
    return int(value)


def text(value: Any, field_: str) -> str:
    if not isinstance(value, str):
        raise errors.InvalidArgument(f"must be a string, got {type(value).__name__}", field_)
    return value


def pack(vectors: Any, count: int | None = None, field_: str = "vectors") -> tuple[node_pb2.Vectors, bool]:
    """float32 rows as packed bytes; returns (message, was_single_vector)."""
    try:
        arr = np.asarray(vectors, dtype="<f4")
    except (TypeError, ValueError) as exc:
        raise errors.InvalidArgument(f"must be numbers in a 1-D or 2-D array ({exc})", field_) from None
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise errors.InvalidArgument(f"must be a 1-D or 2-D array, got {arr.ndim}-D", field_)
    arr = np.ascontiguousarray(arr)
    return node_pb2.Vectors(data=arr.tobytes(), count=arr.shape[0], dim=arr.shape[1]), single


def str_ids(ids: Sequence[str | int], field_: str = "ids") -> list[str]:
    """Integer ids are accepted and stored (and returned) as their decimal strings."""
    if isinstance(ids, str | bytes | dict) or not hasattr(ids, "__iter__"):
        raise errors.InvalidArgument(f"must be a list of ids, got {type(ids).__name__}", field_)
    out = []
    for n, i in enumerate(ids):
        if isinstance(i, int | np.integer) and not isinstance(i, bool):
            out.append(str(i))
        elif isinstance(i, str):
            out.append(i)
        else:
            raise errors.InvalidArgument(
                f"must be a string or an integer, got {type(i).__name__}", f"{field_}[{n}]"
            )
    return out


def payload_blob(p: Any, field_: str = "payloads") -> bytes:
    if p is None:
        return b""
    try:
        return orjson.dumps(p, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError as exc:
        raise errors.InvalidArgument(f"not JSON-serializable ({exc})", field_) from None


def filter_json(flt: dict | str | None) -> str:
    if flt is None:
        return ""
    if isinstance(flt, str):
        return flt
    try:
        return orjson.dumps(flt).decode()
    except orjson.JSONEncodeError as exc:
        raise errors.InvalidArgument(f"not JSON-serializable ({exc})", "filter") from None


def create_collection_request(name, dim, metric, shards, replication_factor, m, ef_construction, ef, wait):
    """replication_factor None: the cluster's default (3, or every live node if fewer)."""
    u32 = 2**32 - 1
    return quartz_pb2.CreateCollectionRequest(
        config=quartz_pb2.CollectionConfig(
            name=text(name, "name"),
            dim=uint(dim, "dim", 1, u32),
            metric=_choice(metric, METRICS, "metric"),
            shards=uint(shards, "shards", 1, u32),
            replication_factor=0
            if replication_factor is None
            else uint(replication_factor, "replication_factor", 1, u32),
            hnsw=node_pb2.HnswParams(
                m=uint(m or 0, "m", 0, u32),
                ef_construction=uint(ef_construction or 0, "ef_construction", 0, u32),
                ef=uint(ef or 0, "ef", 0, u32),
            ),
        ),
        wait=bool(wait),
    )


def upsert_request(collection, ids, vectors, payloads, write_consistency):
    ids = str_ids(ids)
    vecs, _ = pack(vectors)
    blobs = (
        [payload_blob(p, f"payloads[{i}]") for i, p in enumerate(payloads)] if payloads is not None else []
    )
    return quartz_pb2.UpsertRequest(
        collection=text(collection, "collection"),
        points=node_pb2.PointBatch(ids=ids, vectors=vecs, payloads=blobs),
        write_consistency=_choice(write_consistency, WRITE_CONSISTENCY, "write_consistency"),
    )


def delete_request(collection, ids, write_consistency, filter=None):
    """By ids, or (ids None) every point matching `filter`: exactly one of the two."""
    if (ids is None) == (filter is None):
        raise errors.InvalidArgument(
            "give exactly one of ids and filter", "filter" if filter is not None else "ids"
        )
    return quartz_pb2.DeleteRequest(
        collection=text(collection, "collection"),
        ids=str_ids(ids) if ids is not None else [],
        filter=filter_json(filter) if filter is not None else "",
        write_consistency=_choice(write_consistency, WRITE_CONSISTENCY, "write_consistency"),
    )


def search_request(collection, query, k, filter, ef, consistency, with_payload, allow_partial):
    queries, single = pack(query, field_="query")
    return quartz_pb2.SearchPointsRequest(
        collection=text(collection, "collection"),
        queries=queries,
        k=uint(k, "k", 1, limits.K_MAX),
        ef=uint(ef or 0, "ef", 0, limits.EF_MAX),
        filter=filter_json(filter),
        with_payload=bool(with_payload),
        consistency=_choice(consistency, READ_CONSISTENCY, "consistency"),
        allow_partial=bool(allow_partial),
    ), single


def get_request(collection, ids, with_vectors, with_payload, consistency, allow_partial=False):
    return quartz_pb2.GetPointsRequest(
        collection=text(collection, "collection"),
        ids=str_ids(ids),
        with_vectors=bool(with_vectors),
        with_payload=bool(with_payload),
        consistency=_choice(consistency, READ_CONSISTENCY, "consistency"),
        allow_partial=bool(allow_partial),
    )


def count_request(collection, allow_partial=False, filter=None):
    return quartz_pb2.CountRequest(
        collection=text(collection, "collection"),
        allow_partial=bool(allow_partial),
        filter=filter_json(filter),
    )


def offset_id(offset: str | int | None, field_: str = "offset") -> str:
    """A scroll offset (a point id; integers as their decimal strings); None: the first page."""
    if offset is None:
        return ""
    if isinstance(offset, int | np.integer) and not isinstance(offset, bool):
        offset = str(offset)
    if not isinstance(offset, str):
        raise errors.InvalidArgument(f"must be a string or an integer, got {type(offset).__name__}", field_)
    pid = offset
    if not pid or len(pid.encode()) > limits.ID_BYTES_MAX:
        raise errors.InvalidArgument(f"must be a point id of 1..{limits.ID_BYTES_MAX} bytes", field_)
    return pid


def scroll_request(collection, filter, limit, offset, with_vectors, with_payload, consistency):
    return quartz_pb2.ScrollPointsRequest(
        collection=text(collection, "collection"),
        filter=filter_json(filter),
        limit=uint(limit, "limit", 1, limits.SCROLL_LIMIT_MAX),
        offset=offset_id(offset),
        with_vectors=bool(with_vectors),
        with_payload=bool(with_payload),
        consistency=_choice(consistency, READ_CONSISTENCY, "consistency"),
    )


def parse_scroll(resp: quartz_pb2.ScrollPointsResponse, with_vectors: bool, with_payload: bool) -> ScrollPage:
    return ScrollPage(
        [_point(p, with_vectors, with_payload) for p in resp.points],
        resp.next_offset or None,
        shards_answered(resp.shards),
    )


def export_line(pid: str, vector: np.ndarray, payload: dict | None) -> bytes:
    """One line of an export (NDJSON): {"id", "vector", "payload"}. float32 values are written in
    their shortest form that reads back (as a float64, then rounded to float32) bit for bit."""
    return (
        orjson.dumps(
            {"id": pid, "vector": vector, "payload": payload or {}}, option=orjson.OPT_SERIALIZE_NUMPY
        )
        + b"\n"
    )


def parse_count(resp: quartz_pb2.CountResponse) -> Count:
    return Count(resp.count, shards_answered(resp.shards))


class Session:
    """Session tokens: per collection and shard, the highest (epoch, LSN) this client's writes
    reached. Sent with consistency="session" reads so they always see the client's own writes."""

    def __init__(self) -> None:
        self.positions: dict[str, dict[int, quartz_pb2.ShardPosition]] = {}

    def record(self, collection: str, result: quartz_pb2.WriteResult) -> None:
        mine = self.positions.setdefault(collection, {})
        for p in result.positions:
            if p.shard not in mine or p.lsn > mine[p.shard].lsn:
                mine[p.shard] = p

    def attach(self, collection: str, request, consistency: str) -> None:
        if consistency == "session":
            request.session.extend(self.positions.get(collection, {}).values())

    def forget(self, collection: str) -> None:
        self.positions.pop(collection, None)


def retry_subset(request, result: quartz_pb2.WriteResult):
    """The part of a write worth retrying: the points whose shard answered UNAVAILABLE (failing
    over, moving). None when some point failed for another reason (that is final)."""
    failed = [e.index for e in result.errors]
    if isinstance(request, quartz_pb2.DeleteRequest) and request.filter:
        return None  # a delete by filter reports no point errors: it raises, and is retried whole
    if not failed or any(e.code != "UNAVAILABLE" for e in result.errors):
        return None
    if isinstance(request, quartz_pb2.DeleteRequest):
        return quartz_pb2.DeleteRequest(
            collection=request.collection,
            ids=[request.ids[i] for i in failed],
            write_consistency=request.write_consistency,
        )
    p = request.points
    row = p.vectors.dim * 4
    return quartz_pb2.UpsertRequest(
        collection=request.collection,
        write_consistency=request.write_consistency,
        points=node_pb2.PointBatch(
            ids=[p.ids[i] for i in failed],
            vectors=node_pb2.Vectors(
                data=b"".join(p.vectors.data[i * row : (i + 1) * row] for i in failed),
                count=len(failed),
                dim=p.vectors.dim,
            ),
            payloads=[p.payloads[i] for i in failed] if p.payloads else [],
        ),
    )


def write_ids(request) -> list[str]:
    return list(request.ids) if isinstance(request, quartz_pb2.DeleteRequest) else list(request.points.ids)


def check_write(result: quartz_pb2.WriteResult, ids: list[str]) -> None:
    if result.errors:
        raise PartialWriteError({ids[e.index]: (e.code, e.message) for e in result.errors})


def parse_hits(resp: quartz_pb2.SearchPointsResponse, single: bool, with_payload: bool) -> Results:
    """One query: Results of Hits; several: Results of lists of Hits (per query, best first)."""
    out = [
        [
            Hit(pid, score, (orjson.loads(r.payloads[i]) if r.payloads[i] else {}) if with_payload else None)
            for i, (pid, score) in enumerate(zip(r.ids, r.scores, strict=True))
        ]
        for r in resp.results
    ]
    return Results(out[0] if single else out, shards_answered(resp.shards))


def _point(p, with_vectors: bool, with_payload: bool) -> Point:
    return Point(
        p.id,
        np.frombuffer(p.vector, dtype="<f4").copy() if with_vectors else None,
        (orjson.loads(p.payload) if p.payload else {}) if with_payload else None,
    )


def parse_points(resp: quartz_pb2.GetPointsResponse, with_vectors: bool, with_payload: bool) -> Results:
    return Results([_point(p, with_vectors, with_payload) for p in resp.points], shards_answered(resp.shards))


def parse_collection(info: quartz_pb2.CollectionInfo) -> CollectionInfo:
    c = info.config
    return CollectionInfo(
        name=c.name,
        id=info.id,
        dim=c.dim,
        metric=METRIC_NAMES.get(c.metric, "?"),
        shards=c.shards,
        replication_factor=c.replication_factor,
        m=c.hnsw.m,
        ef_construction=c.hnsw.ef_construction,
        ef=c.hnsw.ef,
        ready=info.ready,
        status=info.status,
        restore=info.restore,
        shard_map=[
            {
                "shard": s.shard,
                "epoch": s.epoch,
                "primary": s.primary,
                "replicas": list(s.replicas),
                "in_sync": [i.node for i in s.in_sync],
            }
            for s in info.shards
        ],
    )


# ---------------------------------------------------------------- backups (DESIGN §13)


def backup_request(repository, collections) -> quartz_pb2.BackupRequest:
    return quartz_pb2.BackupRequest(
        repository=text(repository, "repository"),
        collections=[text(n, "collections") for n in (collections or ())],
    )


def restore_request(
    repository, backup_id, collections, as_name, replication_factor, tenant
) -> quartz_pb2.RestoreRequest:
    return quartz_pb2.RestoreRequest(
        repository=text(repository, "repository"),
        backup_id=text(backup_id, "backup_id"),
        collections=[text(n, "collections") for n in (collections or ())],
        as_name=text(as_name or "", "as_name"),
        replication_factor=uint(replication_factor or 0, "replication_factor", 0, 100),
        tenant=text(tenant or "", "tenant"),
    )


def schedule_request(name, repository, interval_s, keep, collections) -> quartz_pb2.SetBackupScheduleRequest:
    return quartz_pb2.SetBackupScheduleRequest(
        schedule=quartz_pb2.BackupSchedule(
            name=text(name, "name"),
            repository=text(repository, "repository"),
            interval_s=uint(interval_s, "interval_s", 1, 2**32 - 1),
            keep=uint(keep, "keep", 1, 2**32 - 1),
            collections=[text(n, "collections") for n in (collections or ())],
        )
    )
