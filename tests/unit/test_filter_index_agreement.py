"""The vectorised payload index answers exactly as the pure evaluator, `filters.matches`, on
every payload the write path accepts: any nesting depth (JSON objects decode up to 1,024 levels
deep), integers over the whole int64 and uint64 range, floats, booleans, strings, lists and
nested values (issue 11, item 9). Payloads and filters go through the same decoding as in
production (validation.payloads, filters.parse of the JSON text)."""

from __future__ import annotations

import pickle

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster import filters, validation
from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.node.payload_index import PayloadIndex

# the strategies below are nested, so hypothesis finds their repr long: harmless
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")

INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # the integers JSON decodes to ints (orjson: int64 and uint64)
# where float64 stops being exact for integers, and the ends of the ranges
PIVOTS = [0, 2**31, 2**53, -(2**53), 2**62, 2**63, -(2**63), 2**64 - 1, 1234567890123456789]


def _written(payload: dict) -> dict:
    """The payload as the write path stores and indexes it."""
    [out] = validation.payloads([orjson.dumps(payload)], 1)
    return out


def _parse(flt: dict) -> filters.Filter | None:
    return filters.parse(orjson.dumps(flt).decode())  # as a search request carries it


def _agree(payloads: list[dict], flt: filters.Filter, index: PayloadIndex | None = None) -> list[bool]:
    if index is None:
        index = PayloadIndex(len(payloads))
        index.put(np.arange(len(payloads)), payloads)
    mask = index.mask(flt, len(payloads)).tolist()
    assert mask == [filters.matches(flt, p) for p in payloads]
    return mask


# ---------------------------------------------------------------- strategies

near_pivot = st.builds(lambda p, d: p + d, st.sampled_from(PIVOTS), st.integers(-2, 2)).filter(
    lambda x: INT_MIN <= x <= INT_MAX
)
integer = st.one_of(st.integers(-3, 3), st.integers(INT_MIN, INT_MAX), near_pivot)
number = st.one_of(
    integer,
    near_pivot.map(float),  # the float next to (or equal to) a big integer
    st.sampled_from([0.5, -0.0, 1.0, 2.5, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False),
)
# a small pool shared by payloads and filters, so that conditions often hold
POOL = [0, 1, -1, 1.0, 0.5, True, False, "x", "1", "w" * 80, 2**53, 2**53 + 1, float(2**53), 2**64 - 1]
POOL += [2**64 - 2, float(2**64), -(2**63), -(2**63) + 1, 1234567890123456788, 1234567890123456789]
pooled = st.sampled_from(POOL)
scalar = st.one_of(pooled, pooled, pooled, number, st.sampled_from(["x", "y", "1", "w" * 80, "v" * 80]))
leaf = st.one_of(
    scalar,
    st.lists(scalar, max_size=3),
    st.none(),
    st.builds(dict),  # fresh objects: _build fills them in
    st.lists(st.one_of(st.builds(lambda: {"a": 1}), st.builds(lambda: [1]), scalar), max_size=2),
)
# Paths (lists of key segments) payloads put values at and filters name: deep chains (the index
# once stopped at 8 levels), prefixes of each other (a leaf where another has an object), "" (a
# key dotted paths can name) and "c.d" (one they cannot).
A = ["a"]
PATHS = [A, ["b"], ["a", "b"], A * 8, A * 9, A * 10, A * 9 + ["b"], A * 12, ["b", *A * 15], A * 24]
PATHS += [["", "a"], ["a", ""], ["c.d"], ["c", "d"]]
path = st.sampled_from(PATHS)
KEYS = sorted({".".join(p) for p in PATHS} | {"z", "a.z"})


def _build(entries: list[tuple[list[str], object]]) -> dict:
    """A payload with `value` at each path (later entries replace what is in their way)."""
    out: dict = {}
    for segments, value in entries:
        node = out
        for seg in segments[:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
        node[segments[-1]] = value
    return out


payload = st.lists(st.tuples(path, leaf), max_size=5).map(_build).map(_written)


key = st.sampled_from(KEYS)
cond = st.one_of(
    st.builds(lambda k, v: {"key": k, "match": v}, key, scalar),
    st.builds(lambda k, vs: {"key": k, "match_any": vs}, key, st.lists(scalar, min_size=1, max_size=4)),
    st.builds(
        lambda k, b: {"key": k, "range": b},
        key,
        st.dictionaries(st.sampled_from(["gt", "gte", "lt", "lte"]), number, min_size=1, max_size=2),
    ),
)
filter_st = st.recursive(
    st.fixed_dictionaries(
        {"must": st.lists(cond, min_size=1, max_size=3)},
        optional={"should": st.lists(cond, max_size=3), "must_not": st.lists(cond, max_size=2)},
    ),
    lambda inner: st.fixed_dictionaries(
        {"must": st.lists(st.one_of(cond, inner), min_size=1, max_size=2)},
        optional={
            "should": st.lists(st.one_of(cond, inner), max_size=2),
            "must_not": st.lists(st.one_of(cond, inner), max_size=2),
        },
    ),
    max_leaves=6,
)


def _leaves(flt: filters.Filter) -> list[filters.Filter]:
    """Each condition of a filter alone, as a filter of its own."""
    out = []
    for c in (*flt.must, *flt.should, *flt.must_not):
        out += _leaves(c) if isinstance(c, filters.Filter) else [filters.Filter(must=(c,))]
    return out


# ---------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None)
@given(
    payloads=st.lists(payload, min_size=1, max_size=16),
    flt=filter_st,
    rewrites=st.lists(st.tuples(st.integers(0, 15), payload), max_size=3),
    deleted=st.sets(st.integers(0, 15), max_size=3),
)
def test_index_mask_equals_pure_evaluator(payloads, flt, rewrites, deleted):
    flt = _parse(flt)
    n = len(payloads)
    index = PayloadIndex(4)
    index.grow(16)
    index.put(np.arange(n), payloads)
    current = list(payloads)
    for label, new in rewrites:  # a rewrite replaces what a label had (numbers included)
        if label < n:
            index.put(np.array([label]), [new])
            current[label] = new
    gone = sorted(d for d in deleted if d < n)
    index.remove(np.array(gone, dtype=np.int64))
    for f in [flt, *_leaves(flt)]:  # the filter, and each of its conditions alone
        try:
            mask = index.mask(f, n).tolist()
        except FailedPrecondition:  # more than INDEXED_KEYS_MAX keys: refused, never answered wrong
            assert f.keys() & index.overflow_keys
            continue
        assert mask == [i not in gone and filters.matches(f, current[i]) for i in range(n)], f


def _python(op: str, v: int | float, b: int | float) -> bool:
    return {"gt": v > b, "gte": v >= b, "lt": v < b, "lte": v <= b, "match": v == b}[op]


@settings(max_examples=400, deadline=None)
@given(
    values=st.lists(number, min_size=1, max_size=12),
    bound=number,
    op=st.sampled_from(["gt", "gte", "lt", "lte", "match"]),
)
def test_numbers_compare_exactly_in_both(values, bound, op):
    """Over int64/uint64 and floats, both answer as Python compares the numbers (exactly)."""
    payloads = [_written({"x": v}) for v in values]
    cond = {"key": "x", "match": bound} if op == "match" else {"key": "x", "range": {op: bound}}
    mask = _agree(payloads, _parse({"must": [cond]}))
    assert mask == [_python(op, p["x"], bound) for p in payloads]


# ---------------------------------------------------------------- examples


def test_integers_beyond_2_53_are_not_rounded():
    payloads = [_written({"uid": 1234567890123456789}), _written({"uid": 1234567890123456788})]
    assert _agree(payloads, _parse({"must": [{"key": "uid", "match": 1234567890123456788}]})) == [False, True]
    assert _agree(payloads, _parse({"must": [{"key": "uid", "range": {"gt": 1234567890123456788}}]})) == [
        True,
        False,
    ]
    edge = [_written({"n": v}) for v in (2**53, 2**53 + 1, float(2**53), 2**64 - 1, 2**64 - 2, -(2**63))]
    assert _agree(edge, _parse({"must": [{"key": "n", "match": 2**53 + 1}]})) == [0, 1, 0, 0, 0, 0]
    assert _agree(edge, _parse({"must": [{"key": "n", "range": {"lt": 2**53 + 1}}]})) == [1, 0, 1, 0, 0, 1]
    assert _agree(edge, _parse({"must": [{"key": "n", "range": {"gte": 2**64 - 1}}]})) == [0, 0, 0, 1, 0, 0]
    assert _agree(edge, _parse({"must": [{"key": "n", "match_any": [2**64 - 2, -(2**63)]}]})) == [
        0,
        0,
        0,
        0,
        1,
        1,
    ]


def test_ints_equal_floats_and_booleans_never_equal_numbers():
    payloads = [_written({"v": x}) for x in (1, 1.0, True, 0, False, [1.0], "1")]
    assert _agree(payloads, _parse({"must": [{"key": "v", "match": 1}]})) == [1, 1, 0, 0, 0, 1, 0]
    assert _agree(payloads, _parse({"must": [{"key": "v", "match": 1.0}]})) == [1, 1, 0, 0, 0, 1, 0]
    assert _agree(payloads, _parse({"must": [{"key": "v", "match": True}]})) == [0, 0, 1, 0, 0, 0, 0]
    assert _agree(payloads, _parse({"must": [{"key": "v", "range": {"gte": 1}}]})) == [1, 1, 0, 0, 0, 1, 0]


@pytest.mark.parametrize("depth", [8, 9, 10, 20, 127])  # the index once stopped below 9 levels
def test_keys_nested_deeper_than_8_levels_are_found(depth):
    nested: object = {"leaf": 7}
    for _ in range(depth - 1):
        nested = {"a": nested}
    key = "a." * (depth - 1) + "leaf"
    payloads = [_written(nested), _written({"a": 7})]  # type: ignore[arg-type]
    assert _agree(payloads, _parse({"must": [{"key": key, "match": 7}]})) == [True, False]
    assert _agree(payloads, _parse({"must_not": [{"key": key, "range": {"gt": 6}}]})) == [False, True]


def test_the_deepest_payload_the_write_path_accepts_is_indexed():
    """orjson decodes objects nested up to 1,024 levels; every leaf a filter key can name (a key
    is at most KEY_CHARS_MAX characters: 128 levels of one-letter names) is indexed."""
    depth = 1024
    raw = b'{"a":' * (depth - 1) + b'{"z":1}' + b"}" * (depth - 1)
    [deep] = validation.payloads([raw], 1)
    levels = (filters.KEY_CHARS_MAX - 1) // 2  # "a.a. ... a.z": the longest key of this shape
    reachable: object = {"z": 2}
    for _ in range(levels):
        reachable = {"a": reachable}
    payloads = [deep, _written({"a": {"z": 1}}), _written(reachable)]  # type: ignore[arg-type]
    deepest = "a." * levels + "z"
    assert len(deepest) <= filters.KEY_CHARS_MAX
    assert _agree(payloads, _parse({"must": [{"key": deepest, "match": 2}]})) == [False, False, True]
    assert _agree(payloads, _parse({"must": [{"key": "a.z", "match": 1}]})) == [False, True, False]


def test_a_checkpoint_of_the_older_index_format_is_refused_so_it_is_rebuilt():
    index = PayloadIndex(4)
    index.put(np.arange(2), [{"uid": 2**53 + 1}, {"a": 1}])
    assert pickle.loads(pickle.dumps(index)).mask(_parse({"must": [{"key": "uid", "match": 2**53 + 1}]}), 2)[
        0
    ]
    older = pickle.dumps(index).replace(b"format_version", b"format_versioX")  # as a release without it
    with pytest.raises(ValueError, match="payload index format"):
        pickle.loads(older)
