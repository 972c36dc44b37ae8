"""In-memory columnar payload index of one shard replica, for filtered search.

Each indexed key (a dotted path) has a column over labels: an int32 code per scalar value
(-1 = absent), a float64 for numeric values (NaN = absent), and a side table for list
values. `mask(filter)` evaluates a filter for every label at once with numpy, so filtered
search costs O(labels) vectorised work, never a Python loop per point.

The index is derived state: rebuilt from stored payloads or restored from a checkpoint.
Its semantics must equal `filters.matches` exactly (tests compare the two); the search path
also re-checks every returned hit with `filters.matches`, so long strings may be indexed by
hash without ever returning a wrong hit.
"""

from __future__ import annotations

import numpy as np
import xxhash

from quartz_cluster import limits
from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.filters import Filter, Match, Range, ValueKey, value_key

_FLATTEN_DEPTH_MAX = 8


def _index_form(vk: ValueKey) -> ValueKey:
    if vk[0] == "s" and len(vk[1]) * 4 > limits.INDEXED_STRING_BYTES_MAX:
        raw = vk[1].encode()
        if len(raw) > limits.INDEXED_STRING_BYTES_MAX:
            return ("h", xxhash.xxh64_intdigest(raw))
    return vk


def _flatten(payload: dict, prefix: str = "", depth: int = 0):
    """(dotted key, value) for every scalar or list leaf. Keys containing '.' are not
    addressable by a dotted path, so they are skipped (as `filters.lookup` cannot reach them)."""
    for key, value in payload.items():
        if "." in key:
            continue
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth < _FLATTEN_DEPTH_MAX:
                yield from _flatten(value, path + ".", depth + 1)
        else:
            yield path, value


class _Column:
    __slots__ = ("codes", "multi", "nums")

    def __init__(self, capacity: int) -> None:
        self.codes = np.full(capacity, -1, dtype=np.int32)
        self.nums: np.ndarray | None = None
        self.multi: dict[int, tuple[frozenset[ValueKey], tuple[float, ...]]] = {}

    def grow(self, capacity: int) -> None:
        old = len(self.codes)
        self.codes = np.concatenate([self.codes, np.full(capacity - old, -1, dtype=np.int32)])
        if self.nums is not None:
            self.nums = np.concatenate([self.nums, np.full(capacity - old, np.nan)])


class PayloadIndex:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.live = np.zeros(capacity, dtype=bool)
        self.columns: dict[str, _Column] = {}
        self.codes: dict[ValueKey, int] = {}
        self.overflow_keys: set[str] = set()

    def grow(self, capacity: int) -> None:
        if capacity <= self.capacity:
            return
        self.live = np.concatenate([self.live, np.zeros(capacity - self.capacity, dtype=bool)])
        for col in self.columns.values():
            col.grow(capacity)
        self.capacity = capacity

    def remove(self, labels: np.ndarray) -> None:
        if len(labels) == 0:
            return
        self.live[labels] = False
        for col in self.columns.values():
            col.codes[labels] = -1
            if col.nums is not None:
                col.nums[labels] = np.nan
            if col.multi:
                for label in labels.tolist():
                    col.multi.pop(label, None)

    def put(self, labels: np.ndarray, payloads: list[dict]) -> None:
        """Index payloads[i] under labels[i], replacing what those labels had."""
        self.remove(labels)
        self.live[labels] = True
        for label, payload in zip(labels.tolist(), payloads, strict=True):
            for key, value in _flatten(payload):
                col = self._column(key)
                if col is None:
                    continue
                if isinstance(value, list):
                    vks = [value_key(v) for v in value]
                    col.multi[label] = (
                        frozenset(_index_form(vk) for vk in vks if vk is not None),
                        tuple(vk[1] for vk in vks if vk is not None and vk[0] == "n"),
                    )
                    continue
                vk = value_key(value)
                if vk is None:
                    continue
                vk = _index_form(vk)
                code = self.codes.get(vk)
                if code is None:
                    code = self.codes[vk] = len(self.codes)
                col.codes[label] = code
                if vk[0] == "n":
                    if col.nums is None:
                        col.nums = np.full(self.capacity, np.nan)
                    col.nums[label] = vk[1]

    def _column(self, key: str) -> _Column | None:
        col = self.columns.get(key)
        if col is None:
            if len(self.columns) >= limits.INDEXED_KEYS_MAX:
                self.overflow_keys.add(key)
                return None
            col = self.columns[key] = _Column(self.capacity)
        return col

    def mask(self, flt: Filter, n: int) -> np.ndarray:
        """Boolean array over labels [0, n): True where the label is live and matches."""
        return self._eval(flt, n) & self.live[:n]

    def _eval(self, flt: Filter, n: int) -> np.ndarray:
        out = np.ones(n, dtype=bool)
        for cond in flt.must:
            out &= self._cond(cond, n)
        if flt.should:
            any_of = np.zeros(n, dtype=bool)
            for cond in flt.should:
                any_of |= self._cond(cond, n)
            out &= any_of
        for cond in flt.must_not:
            out &= ~self._cond(cond, n)
        return out

    def _cond(self, cond: Match | Range | Filter, n: int) -> np.ndarray:
        if isinstance(cond, Filter):
            return self._eval(cond, n)
        col = self.columns.get(cond.key)
        if col is None:
            if cond.key in self.overflow_keys:
                raise FailedPrecondition(
                    f"payload key {cond.key!r} is not indexed (a shard indexes at most "
                    f"{limits.INDEXED_KEYS_MAX} keys)",
                    "filter",
                )
            return np.zeros(n, dtype=bool)
        if isinstance(cond, Match):
            wanted = {_index_form(vk) for vk in cond.values}
            codes = [self.codes[vk] for vk in wanted if vk in self.codes]
            out = np.isin(col.codes[:n], codes) if codes else np.zeros(n, dtype=bool)
            for label, (vks, _) in col.multi.items():
                if label < n and not wanted.isdisjoint(vks):
                    out[label] = True
            return out
        if col.nums is None:
            out = np.zeros(n, dtype=bool)
        else:
            x = col.nums[:n]
            with np.errstate(invalid="ignore"):
                out = ~np.isnan(x)
                if cond.gt is not None:
                    out &= x > cond.gt
                if cond.gte is not None:
                    out &= x >= cond.gte
                if cond.lt is not None:
                    out &= x < cond.lt
                if cond.lte is not None:
                    out &= x <= cond.lte
        for label, (_, nums) in col.multi.items():
            if label < n and any(cond.holds(v) for v in nums):
                out[label] = True
        return out
