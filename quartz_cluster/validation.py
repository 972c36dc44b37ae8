"""Request validation shared by nodes and routers. Pure functions: every check runs before
anything is written, and every error names the field it is about."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import orjson

from quartz_cluster import limits
from quartz_cluster.errors import InvalidArgument, ResourceExhausted, echo

METRICS = ("cosine", "l2", "ip")
_NAME_RE = re.compile(limits.NAME_PATTERN)


def name(value: str, field: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidArgument(f"must match {limits.NAME_PATTERN}, got {echo(value)}", field)
    return value


def metric(value: str, field: str = "metric") -> str:
    if value not in METRICS:
        raise InvalidArgument(f"must be one of {', '.join(METRICS)}, got {echo(value)}", field)
    return value


def bounded_int(value: int, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgument(f"must be an integer in [{low}, {high}], got {echo(value)}", field)
    return value


def point_ids(ids: Sequence[str], field: str = "ids") -> list[str]:
    """Non-empty strings of at most ID_BYTES_MAX UTF-8 bytes, no duplicates in one batch.

    Duplicates are refused rather than resolved last-wins: a batch that names a point twice
    is almost always a client bug, and refusing keeps one log entry = one state per id."""
    out = list(ids)
    seen: dict[str, int] = {}
    for i, pid in enumerate(out):
        if not isinstance(pid, str) or not pid:
            raise InvalidArgument("must be a non-empty string", f"{field}[{i}]")
        if len(pid) > limits.ID_BYTES_MAX or len(pid.encode()) > limits.ID_BYTES_MAX:
            raise InvalidArgument(f"longer than {limits.ID_BYTES_MAX} bytes", f"{field}[{i}]")
        first = seen.setdefault(pid, i)
        if first != i:
            raise InvalidArgument(f"duplicate id {echo(pid)} (also at index {first})", f"{field}[{i}]")
    return out


def vectors(data: bytes, count: int, dim: int, expected_dim: int, field: str = "vectors") -> np.ndarray:
    """Decode packed little-endian float32 rows; refuse wrong sizes and non-finite values."""
    if dim != expected_dim:
        raise InvalidArgument(f"dimension {dim} does not match the collection's {expected_dim}", field)
    if len(data) != count * dim * 4:
        raise InvalidArgument(
            f"{len(data)} bytes for {count} vectors of dim {dim} (expected {count * dim * 4})", field
        )
    arr = np.frombuffer(data, dtype="<f4").reshape(count, dim)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidArgument("contains NaN or infinity", f"{field}[{row}]")
    # float32 squared norms: inf once they overflow, and then l2 scores would be inf too
    squared = np.einsum("ij,ij->i", arr, arr)
    fits = squared <= limits.VECTOR_SQUARED_NORM_MAX
    if not fits.all():
        row = int(np.flatnonzero(~fits)[0])
        exact = float(np.square(arr[row], dtype=np.float64).sum())
        raise InvalidArgument(
            f"squared norm {exact:.3g} exceeds {limits.VECTOR_SQUARED_NORM_MAX:.3g} "
            "(distances would overflow float32)",
            f"{field}[{row}]",
        )
    return arr


def payloads(raw: Sequence[bytes], count: int, field: str = "payloads") -> list[dict]:
    """JSON objects of at most PAYLOAD_BYTES_MAX bytes; empty bytes mean {}."""
    if len(raw) == 0:
        return [{} for _ in range(count)]
    if len(raw) != count:
        raise InvalidArgument(f"has {len(raw)} entries for {count} ids", field)
    out: list[dict] = []
    for i, blob in enumerate(raw):
        if len(blob) > limits.PAYLOAD_BYTES_MAX:
            raise InvalidArgument(f"{len(blob)} bytes exceeds {limits.PAYLOAD_BYTES_MAX}", f"{field}[{i}]")
        if not blob:
            out.append({})
            continue
        try:
            value = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"not valid JSON ({exc})", f"{field}[{i}]") from None
        if not isinstance(value, dict):
            raise InvalidArgument(f"must be a JSON object, got {type(value).__name__}", f"{field}[{i}]")
        out.append(value)
    return out


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """A validated write: upserts (ids, float32 rows, payload dicts and their JSON) and deletes."""

    ids: list[str]
    vectors: np.ndarray  # (len(ids), dim) float32
    payloads: list[dict]
    payload_blobs: list[bytes]
    delete_ids: list[str]


def write_batch(
    ids: Sequence[str],
    vector_data: bytes,
    vector_count: int,
    vector_dim: int,
    raw_payloads: Sequence[bytes],
    delete_ids: Sequence[str],
    dim: int,
) -> WriteBatch:
    total = len(ids) + len(delete_ids)
    if total == 0:
        raise InvalidArgument("a write needs at least one upsert or delete", "upserts")
    if total > limits.BATCH_POINTS_MAX:
        raise InvalidArgument(f"{total} points exceeds the batch limit {limits.BATCH_POINTS_MAX}", "upserts")
    up = point_ids(ids, "upserts.ids")
    dels = point_ids(delete_ids, "delete_ids")
    both = set(up).intersection(dels)
    if both:
        raise InvalidArgument(f"id {sorted(both)[0]!r} is both upserted and deleted", "delete_ids")
    if vector_count != len(up):
        raise InvalidArgument(f"{vector_count} vectors for {len(up)} ids", "upserts.vectors")
    rows = (
        vectors(vector_data, vector_count, vector_dim, dim, "upserts.vectors")
        if up
        else np.empty((0, dim), dtype=np.float32)
    )
    docs = payloads(raw_payloads, len(up), "upserts.payloads")
    blobs = list(raw_payloads) if raw_payloads else [b""] * len(up)
    return WriteBatch(up, rows, docs, blobs, dels)


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    name: str
    dim: int
    metric: str
    shards: int
    replication_factor: int
    m: int
    ef_construction: int
    ef: int


def collection_config(
    name_: str,
    dim: int,
    metric_: str,
    shards: int,
    replication_factor: int,
    m: int,
    ef_construction: int,
    ef: int,
    field: str = "config",
) -> CollectionConfig:
    """Validate a collection definition; zero HNSW parameters mean defaults (the router resolves a
    replication_factor of 0 before)."""
    return CollectionConfig(
        name=name(name_, f"{field}.name"),
        dim=bounded_int(dim, f"{field}.dim", 1, limits.DIM_MAX),
        metric=metric(metric_, f"{field}.metric"),
        shards=bounded_int(shards, f"{field}.shards", 1, limits.SHARDS_PER_COLLECTION_MAX),
        replication_factor=bounded_int(
            replication_factor, f"{field}.replication_factor", 1, limits.REPLICATION_FACTOR_MAX
        ),
        **hnsw_params(m, ef_construction, ef, f"{field}.hnsw"),
    )


def hnsw_params(m: int, ef_construction: int, ef: int, field: str = "hnsw") -> dict[str, int]:
    """HNSW parameters; zeros mean defaults."""
    return {
        "m": bounded_int(m or limits.DEFAULT_HNSW_M, f"{field}.m", limits.HNSW_M_MIN, limits.HNSW_M_MAX),
        "ef_construction": bounded_int(
            ef_construction or limits.DEFAULT_EF_CONSTRUCTION,
            f"{field}.ef_construction",
            1,
            limits.EF_CONSTRUCTION_MAX,
        ),
        "ef": bounded_int(ef or limits.DEFAULT_EF, f"{field}.ef", 1, limits.EF_MAX),
    }


def search_budget(queries: int, k: int, ef: int) -> None:
    """Refuse, before any work, a search whose reply or graph work would exceed its budget. `ef`:
    the request's, or the collection's when the request leaves it 0 (the larger of ef and k is
    what a graph search keeps per query)."""
    hits = queries * k
    if hits > limits.SEARCH_HITS_MAX:
        raise InvalidArgument(
            f"{queries} queries x k {k} = {hits} hits exceeds the reply budget SEARCH_HITS_MAX = "
            f"{limits.SEARCH_HITS_MAX}: send fewer queries per request or a smaller k",
            "k",
        )
    work = queries * max(ef, k)
    if work > limits.SEARCH_WORK_MAX:
        raise InvalidArgument(
            f"{queries} queries x ef {max(ef, k)} = {work} exceeds the work budget "
            f"SEARCH_WORK_MAX = {limits.SEARCH_WORK_MAX}: send fewer queries per request or a smaller ef",
            "ef",
        )


class ReplyBudget:
    """Payload bytes a search reply may still carry (SEARCH_REPLY_BYTES_MAX); `take` refuses the
    search with RESOURCE_EXHAUSTED once they would be exceeded, before the reply is built."""

    def __init__(self, bytes_max: int | None = None) -> None:
        self.bytes_max = limits.SEARCH_REPLY_BYTES_MAX if bytes_max is None else bytes_max
        self.used = 0

    def take(self, nbytes: int) -> None:
        self.check(nbytes)
        self.used += nbytes

    def check(self, nbytes: int) -> None:
        """Refuse unless `nbytes` more would still fit (nothing is taken)."""
        if self.used + nbytes > self.bytes_max:
            raise ResourceExhausted(
                f"the reply's payloads exceed SEARCH_REPLY_BYTES_MAX = {self.bytes_max} bytes: ask for "
                "fewer queries, a smaller k, or with_payload=false",
                "with_payload",
            )
