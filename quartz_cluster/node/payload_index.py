"""In-memory columnar payload index of one shard replica, for filtered search.

Each indexed key (a dotted path) has a column over labels: an int32 code per scalar value
(-1 = absent), a float64 for numeric values (NaN = absent), and a side table for list
values. `mask(filter)` evaluates a filter for every label at once with numpy, so filtered
search costs O(labels) vectorised work, never a Python loop per point. Every leaf a filter key
can name is indexed, at any nesting depth (paths longer than filters.KEY_CHARS_MAX are skipped:
no filter can name them).

Numbers are exact. Equality goes through the codes, keyed by Python numbers (exact). Ranges
compare a number v as the pair (hi, lo): hi = float(v) rounded to nearest, lo = v - hi exactly
(non-zero only for integers beyond 2**53; at most 2**11 in magnitude for the int64 and uint64
values JSON payloads decode to, so exact in a float64; the column `lows` exists only once one
is non-zero). Rounding is monotone, so the lexicographic order of (hi, lo) is the exact order
of v: a float64 comparison of hi decides, and lo breaks ties.

The index is derived state: rebuilt from stored payloads or restored from a checkpoint.
Its semantics must equal `filters.matches` exactly (tests compare the two); the search path
also re-checks every returned hit with `filters.matches`, so long strings may be indexed by
hash without ever returning a wrong hit.
"""

from __future__ import annotations

import math

import numpy as np
import xxhash

from quartz_cluster import limits
from quartz_cluster.errors import FailedPrecondition, echo
from quartz_cluster.filters import KEY_CHARS_MAX, Filter, Match, Range, ValueKey, value_key

# Bumped when the pickled form (checkpoints) changes meaning: an older index is refused on load
# and the shard rebuilds it from its stored rows. 2: exact integers, every depth indexed.
FORMAT_VERSION = 2


def _index_form(vk: ValueKey) -> ValueKey:
    if vk[0] == "s" and len(vk[1]) * 4 > limits.INDEXED_STRING_BYTES_MAX:
        raw = vk[1].encode()
        if len(raw) > limits.INDEXED_STRING_BYTES_MAX:
            return ("h", xxhash.xxh64_intdigest(raw))
    return vk


def _flatten(payload: dict):
    """(dotted key, value) for every scalar or list leaf, depth first in payload order, at any
    depth (iterative: payloads may nest 1,024 deep). Keys containing '.' are not addressable by
    a dotted path, and paths longer than KEY_CHARS_MAX not by a filter key, so both are skipped
    (as `filters.lookup` cannot reach them)."""
    stack = [("", iter(payload.items()))]
    while stack:
        prefix, items = stack[-1]
        for key, value in items:
            if "." in key:
                continue
            path = prefix + key
            if isinstance(value, dict):
                if len(path) < KEY_CHARS_MAX:  # else no child path ("path.x") fits in a key
                    stack.append((path + ".", iter(value.items())))
                    break
            elif len(path) <= KEY_CHARS_MAX:
                yield path, value
        else:
            stack.pop()


def _split(x: int | float) -> tuple[float, float]:
    """(hi, lo): hi = x rounded to the nearest float64, lo = x - hi (see the module docstring).
    lo is exact for |x| < 2**106 (every integer the write path accepts) and has x - hi's sign
    beyond; integers beyond the float range are +-inf (only filter bounds can be: JSON decodes
    them to floats)."""
    if isinstance(x, float):
        return x, 0.0
    try:
        hi = float(x)
    except OverflowError:
        return (math.inf if x > 0 else -math.inf), 0.0
    return hi, float(x - int(hi))


_EXACT_INT = 2**53  # integers up to this magnitude are exactly float64s


_BEYOND = {"gt": np.greater, "gte": np.greater, "lt": np.less, "lte": np.less}  # hi decides
_AT = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}  # hi ties


def _compare(hi: np.ndarray, lo: np.ndarray | None, op: str, bound: int | float) -> np.ndarray:
    """Exact `v <op> bound` for the numbers (hi, lo) of a column (lo None: all zero)."""
    b_hi, b_lo = _split(bound)
    if lo is None and b_lo == 0.0:
        return _AT[op](hi, b_hi)  # both sides exactly float64
    return _BEYOND[op](hi, b_hi) | ((hi == b_hi) & _AT[op](0.0 if lo is None else lo, b_lo))


class _Column:
    __slots__ = ("codes", "lows", "multi", "nums")

    def __init__(self, capacity: int) -> None:
        self.codes = np.full(capacity, -1, dtype=np.int32)
        self.nums: np.ndarray | None = None  # hi of each number (NaN: no number)
        self.lows: np.ndarray | None = None  # lo of each number, once one is non-zero
        self.multi: dict[int, tuple[frozenset[ValueKey], tuple[int | float, ...]]] = {}

    def grow(self, capacity: int) -> None:
        old = len(self.codes)
        self.codes = np.concatenate([self.codes, np.full(capacity - old, -1, dtype=np.int32)])
        if self.nums is not None:
            self.nums = np.concatenate([self.nums, np.full(capacity - old, np.nan)])
        if self.lows is not None:
            self.lows = np.concatenate([self.lows, np.zeros(capacity - old)])

    def set_number(self, label: int, value: int | float, capacity: int) -> None:
        if self.nums is None:
            self.nums = np.full(capacity, np.nan)
        if isinstance(value, float) or -_EXACT_INT <= value <= _EXACT_INT:
            self.nums[label] = value  # exactly a float64: lo is 0
            if self.lows is not None:
                self.lows[label] = 0.0
            return
        hi, lo = _split(value)
        self.nums[label] = hi
        if lo != 0.0 and self.lows is None:
            self.lows = np.zeros(capacity)
        if self.lows is not None:
            self.lows[label] = lo


class PayloadIndex:
    def __init__(self, capacity: int) -> None:
        self.format_version = FORMAT_VERSION
        self.capacity = capacity
        self.live = np.zeros(capacity, dtype=bool)
        self.columns: dict[str, _Column] = {}
        self.codes: dict[ValueKey, int] = {}
        self.overflow_keys: set[str] = set()

    def __setstate__(self, state: dict) -> None:
        """Unpickling (a checkpoint): an index of another format is refused, so the shard
        rebuilds it from its rows instead of answering with older semantics."""
        version = state.get("format_version", 1)
        if version != FORMAT_VERSION:
            raise ValueError(f"payload index format {version}, this release reads {FORMAT_VERSION}")
        self.__dict__.update(state)

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
            if col.lows is not None:
                col.lows[labels] = 0.0
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
                    col.set_number(label, vk[1], self.capacity)

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
                    f"payload key {echo(cond.key)} is not indexed (a shard indexes at most "
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
            lo = None if col.lows is None else col.lows[:n]
            with np.errstate(invalid="ignore"):
                out = ~np.isnan(x)
                for op in ("gt", "gte", "lt", "lte"):
                    bound = getattr(cond, op)
                    if bound is not None:
                        out &= _compare(x, lo, op, bound)
        for label, (_, nums) in col.multi.items():
            if label < n and any(cond.holds(v) for v in nums):
                out[label] = True
        return out
