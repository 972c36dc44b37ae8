"""Paging through a shard replica's points in id order, with a filter, and counting the points a
filter admits (DESIGN §13: scroll, count, delete by filter, export). Blocking: called from a
worker thread.

Order: the byte order of the UTF-8 ids, which is the order of the rows `v/<id>` in RocksDB and
also Python's order of `str` (UTF-8 preserves code point order). `offset` is inclusive (the
first id a page may hold); a page's `next_offset` is the id of the first point after it, empty
when there is none. A page may end before `limit` points (its bytes reached
SCROLL_REPLY_BYTES_MAX, or SCROLL_SCAN_ROWS_MAX rows were read for a selective filter): its
next_offset is then the first point not looked at, which need not match. Paging is complete as
long as the caller goes on until next_offset is empty.

How a page is found:
  no filter      the rows from `v/<offset>` in key order: limit + 1 rows read.
  a filter       the payload index evaluates it for every label at once (numpy, under the state's
                 shared lock). At most SCROLL_SORTED_CANDIDATES_MAX matches: their ids are sorted
                 and the page read by id. More: the rows are read in key order and each is tested
                 through its label (the first 8 bytes of the row), a chunk at a time.
Payloads are parsed only where the index cannot decide exactly: a filter on a string too long to
index (the index keeps its hash) and a row written after the index was looked at.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import orjson

from quartz_cluster import filters, limits
from quartz_cluster.errors import InvalidArgument
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import P_VEC, ShardStore

ROW_CHUNK = 256  # rows tested against the filter at a time (one numpy pass per chunk)
LABEL_BYTES = 8


@dataclass(slots=True)
class Page:
    points: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (id, vector, payload JSON)
    next_offset: str = ""


def offset_id(value: str, field_: str = "offset") -> str:
    """A scroll offset: empty (from the start) or a valid point id."""
    if not isinstance(value, str):
        raise InvalidArgument(f"must be a string, got {type(value).__name__}", field_)
    if len(value) > limits.ID_BYTES_MAX or len(value.encode()) > limits.ID_BYTES_MAX:
        raise InvalidArgument(f"longer than {limits.ID_BYTES_MAX} bytes", field_)
    return value


def page_limit(value: int, field_: str = "limit") -> int:
    """Points per page: 0 means SCROLL_LIMIT_DEFAULT; at most SCROLL_LIMIT_MAX."""
    if value == 0:
        return limits.SCROLL_LIMIT_DEFAULT
    if not 0 < value <= limits.SCROLL_LIMIT_MAX:
        raise InvalidArgument(
            f"must be in [1, {limits.SCROLL_LIMIT_MAX}], got {value} (0: {limits.SCROLL_LIMIT_DEFAULT})",
            field_,
        )
    return value


def needs_recheck(flt: filters.Filter | None) -> bool:
    """Whether the payload index may admit points the filter does not: it indexes strings longer
    than INDEXED_STRING_BYTES_MAX by hash (payload_index.py), so a match on one is re-checked."""
    if flt is None:
        return False
    for cond in (*flt.must, *flt.should, *flt.must_not):
        if isinstance(cond, filters.Filter):
            if needs_recheck(cond):
                return True
        elif isinstance(cond, filters.Match) and any(
            kind == "s" and len(value.encode()) > limits.INDEXED_STRING_BYTES_MAX
            for kind, value in cond.values
        ):
            return True
    return False


def _matches(flt: filters.Filter, blob: bytes | None) -> bool:
    return blob is not None and filters.matches(flt, orjson.loads(blob) if blob else {})


# ---------------------------------------------------------------------------- count


def count(state: IndexState, store: ShardStore, flt: filters.Filter | None) -> int:
    """The points the filter admits (every point without one), as the index holds them."""
    if flt is None:
        return len(state.label_of)
    with state.lock.shared(state.spec.ef):
        mask = state.payload_index.mask(flt, state.next_label)
        if not needs_recheck(flt):
            return int(np.count_nonzero(mask))
        ids = state.ids_by_label[np.flatnonzero(mask)].tolist()
    found = 0
    for at in range(0, len(ids), limits.PAYLOAD_FETCH_IDS):
        chunk = ids[at : at + limits.PAYLOAD_FETCH_IDS]
        found += sum(_matches(flt, blob) for blob in store.payloads(chunk))
    return found


# ---------------------------------------------------------------------------- scroll


def scroll(
    state: IndexState,
    store: ShardStore,
    flt: filters.Filter | None,
    offset: str,
    limit: int,
    with_vectors: bool,
    with_payload: bool,
    bytes_max: int = limits.SCROLL_REPLY_BYTES_MAX,
) -> Page:
    """Up to `limit` points from `offset` (inclusive) in id order that match `flt`."""
    if flt is None:
        rows = _rows_from(store, offset, None)
        return _page(store, rows, None, limit, with_vectors, with_payload, bytes_max)
    recheck = needs_recheck(flt)
    with state.lock.shared(state.spec.ef):
        n = state.next_label
        mask = state.payload_index.mask(flt, n)
        candidates = np.flatnonzero(mask)
        if len(candidates) <= limits.SCROLL_SORTED_CANDIDATES_MAX:
            ids = state.ids_by_label[candidates].tolist()
            owners = None
        else:
            # the label of each id when the mask was taken: a row whose label has changed since
            # (written after this) is tested on its payload instead
            owners = state.ids_by_label[:n].copy()
    if owners is None:
        ordered = sorted(pid for pid in ids if pid >= offset)
        rows = _rows_of(store, ordered)
        return _page(store, rows, flt if recheck else None, limit, with_vectors, with_payload, bytes_max)
    rows = _tested_rows(store, offset, flt, mask, owners)
    return _page(store, rows, flt if recheck else None, limit, with_vectors, with_payload, bytes_max)


# A row source yields (id, row) in id order, or (id, None): "stop here, the page ends before id"
# (the scan budget ran out).
Rows = Iterator[tuple[str, bytes | None]]


def _rows_from(store: ShardStore, offset: str, budget: int | None) -> Rows:
    """Every row from `offset` in key order; after `budget` rows, the id of the next and stop."""
    for read, (key, row) in enumerate(store.scan(P_VEC, P_VEC + offset.encode())):
        pid = key[len(P_VEC) :].decode()
        if budget is not None and read >= budget:
            yield pid, None
            return
        yield pid, row


def _rows_of(store: ShardStore, ordered: Sequence[str]) -> Rows:
    """The rows of `ordered` ids that still exist, read a chunk at a time."""
    for at in range(0, len(ordered), ROW_CHUNK):
        chunk = ordered[at : at + ROW_CHUNK]
        for pid, row in zip(chunk, store.db.get([P_VEC + pid.encode() for pid in chunk]), strict=True):
            if row is not None:
                yield pid, row


def _tested_rows(
    store: ShardStore,
    offset: str,
    flt: filters.Filter,
    mask: np.ndarray,
    owners: np.ndarray,
) -> Rows:
    """The rows from `offset` that the mask admits, testing ROW_CHUNK rows at a time through
    their labels (numpy); rows whose label no longer names them are tested on their payload."""
    n = len(mask)
    pending: list[tuple[str, bytes]] = []

    def admitted() -> Iterator[tuple[str, bytes]]:
        ids = [pid for pid, _ in pending]
        head = b"".join(row[:LABEL_BYTES] for _, row in pending)
        labels = np.frombuffer(head, dtype="<u8").astype(np.int64)
        inside = labels < n
        known = np.zeros(len(ids), dtype=bool)
        known[inside] = owners[labels[inside]] == np.array(ids, dtype=object)[inside]
        ok = np.zeros(len(ids), dtype=bool)
        ok[known] = mask[labels[known]]
        unknown = np.flatnonzero(~known).tolist()
        if unknown:
            blobs = store.payloads([ids[i] for i in unknown])
            for i, blob in zip(unknown, blobs, strict=True):
                ok[i] = _matches(flt, blob)
        for i in np.flatnonzero(ok).tolist():
            yield pending[i]

    for pid, row in _rows_from(store, offset, limits.SCROLL_SCAN_ROWS_MAX):
        if row is None:
            yield from admitted()
            yield pid, None
            return
        pending.append((pid, row))
        if len(pending) >= ROW_CHUNK:
            yield from admitted()
            pending.clear()
    if pending:
        yield from admitted()


def _page(
    store: ShardStore,
    rows: Rows,
    recheck: filters.Filter | None,
    limit: int,
    with_vectors: bool,
    with_payload: bool,
    bytes_max: int,
) -> Page:
    """Take points from `rows` until `limit` (the next one found is next_offset), the byte budget
    (at least one point), or the source's stop mark. `recheck`: test each point's payload."""
    page = Page()
    size = 0
    need_payloads = with_payload or recheck is not None
    batch: list[tuple[str, bytes]] = []

    def flush() -> bool:
        """Add the batch's points to the page; True when the page is complete."""
        nonlocal size
        blobs = store.payloads([pid for pid, _ in batch]) if need_payloads else [b""] * len(batch)
        for (pid, row), blob in zip(batch, blobs, strict=True):
            if blob is None:
                continue  # deleted since the row was read
            if recheck is not None and not _matches(recheck, blob):
                continue
            vector = row[LABEL_BYTES:] if with_vectors else b""
            payload = blob if with_payload else b""
            point_bytes = len(pid) + len(vector) + len(payload)
            if len(page.points) == limit or (page.points and size + point_bytes > bytes_max):
                page.next_offset = pid
                return True
            page.points.append((pid, vector, payload))
            size += point_bytes
        batch.clear()
        return False

    for pid, row in rows:
        if row is None:
            if batch and flush():
                return page
            page.next_offset = pid
            return page
        batch.append((pid, row))
        # enough read to fill the page and find the next point (when nothing is dropped)
        if len(batch) > limit - len(page.points) and flush():
            return page
    if batch:
        flush()
    return page


# ---------------------------------------------------------------------------- merging pages


def point_size(point) -> int:
    return len(point.id) + len(point.vector) + len(point.payload)


def merge_pages(pages: Sequence[tuple[Sequence, str]], limit: int, bytes_max: int) -> tuple[list, str]:
    """One page of a collection from its shards' pages (each: points with .id in id order, and
    next_offset): the points before the smallest next_offset of any shard (up to there every
    shard's page is complete), the first `limit` of them within `bytes_max` (at least one), and
    the id that follows them."""
    ends = [nxt for _, nxt in pages if nxt]
    bound = min(ends) if ends else None
    merged = heapq.merge(*(points for points, _ in pages), key=lambda p: p.id)
    out: list = []
    size = 0
    for point in merged:
        if bound is not None and point.id >= bound:
            break
        if len(out) == limit or (out and size + point_size(point) > bytes_max):
            return out, point.id
        out.append(point)
        size += point_size(point)
    return out, bound or ""
