import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster import filters, limits
from quartz_cluster.errors import FailedPrecondition, InvalidArgument
from quartz_cluster.node.payload_index import PayloadIndex


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ("{not json", "filter"),
        ("[1]", "filter"),
        ('{"must": 3}', "filter.must"),
        ('{"muster": []}', "filter"),
        ('{"must": [{"key": "a"}]}', "filter.must[0]"),
        ('{"must": [{"key": "", "match": 1}]}', "filter.must[0].key"),
        ('{"must": [{"key": "a", "match": [1]}]}', "filter.must[0].match"),
        ('{"must": [{"key": "a", "match": 1, "range": {"gt": 1}}]}', "filter.must[0]"),
        ('{"should": [{"key": "a", "match_any": []}]}', "filter.should[0].match_any"),
        ('{"must_not": [{"key": "a", "range": {"gt": "x"}}]}', "filter.must_not[0].range.gt"),
        ('{"must": [{"key": "a", "range": {"between": 1}}]}', "filter.must[0].range"),
        ('{"must": [{"must": [{"key": "a", "match": null}]}]}', "filter.must[0].must[0].match"),
    ],
)
def test_malformed_filters_are_refused_naming_the_field(raw, field):
    with pytest.raises(InvalidArgument) as err:
        filters.parse(raw)
    assert str(err.value).startswith(field + ":")


def test_deep_nesting_and_size_are_limited():
    deep = {"must": [{"key": "a", "match": 1}]}
    for _ in range(limits.FILTER_DEPTH_MAX + 2):
        deep = {"must": [deep]}
    with pytest.raises(InvalidArgument, match="deeper"):
        filters.parse(deep)
    with pytest.raises(InvalidArgument, match="conditions"):
        filters.parse({"must": [{"key": "a", "match": i} for i in range(limits.FILTER_CONDITIONS_MAX + 1)]})


def test_empty_filter_means_no_filter():
    assert filters.parse("") is None
    assert filters.parse("{}") is None


@pytest.mark.parametrize(
    ("flt", "payload", "expected"),
    [
        ({"must": [{"key": "lang", "match": "en"}]}, {"lang": "en"}, True),
        ({"must": [{"key": "lang", "match": "en"}]}, {"lang": "de"}, False),
        ({"must": [{"key": "lang", "match": "en"}]}, {}, False),
        ({"must_not": [{"key": "lang", "match": "en"}]}, {}, True),
        ({"must": [{"key": "n", "match": 1}]}, {"n": 1.0}, True),
        ({"must": [{"key": "n", "match": 1}]}, {"n": True}, False),  # bool is not a number
        ({"must": [{"key": "b", "match": True}]}, {"b": 1}, False),
        ({"must": [{"key": "t", "match": "x"}]}, {"t": ["y", "x"]}, True),  # any element of a list
        ({"must": [{"key": "m.lang", "match": "en"}]}, {"m": {"lang": "en"}}, True),
        ({"must": [{"key": "r", "range": {"gte": 1, "lt": 2}}]}, {"r": 1}, True),
        ({"must": [{"key": "r", "range": {"gte": 1, "lt": 2}}]}, {"r": 2}, False),
        ({"must": [{"key": "r", "range": {"gt": 0}}]}, {"r": "5"}, False),
        ({"should": [{"key": "a", "match": 1}, {"key": "b", "match": 1}]}, {"b": 1}, True),
        ({"should": [{"key": "a", "match": 1}, {"key": "b", "match": 1}]}, {"c": 1}, False),
        ({"must": [{"key": "a", "match": {"any": [1, 2]}}]}, {"a": 2}, True),  # Qdrant spelling
        ({"must": [{"key": "a", "match": {"value": "v"}}]}, {"a": "v"}, True),
        # integers compare exactly, beyond 2**53 too (never rounded to float)
        ({"must": [{"key": "u", "match": 1234567890123456788}]}, {"u": 1234567890123456789}, False),
        ({"must": [{"key": "u", "range": {"gt": 2**53}}]}, {"u": 2**53 + 1}, True),
        ({"must": [{"key": "u", "range": {"lt": 2**64 - 1}}]}, {"u": 2**64 - 2}, True),
        (
            {"must": [{"key": "a.a.a.a.a.a.a.a.a.b", "match": 1}]},
            {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"a": {"b": 1}}}}}}}}}},
            True,
        ),
        (
            {"must": [{"should": [{"key": "a", "match": 1}], "must_not": [{"key": "b", "match": 1}]}]},
            {"a": 1, "b": 1},
            False,
        ),
    ],
)
def test_pure_semantics(flt, payload, expected):
    assert filters.matches(filters.parse(flt), payload) is expected


# ---- the vectorised index must agree with the pure evaluator, for any data and filter ----

KEYS = ["a", "b", "m.c"]
scalar = st.one_of(
    st.sampled_from(["x", "y", "z", "w" * 80, "v" * 80]),  # long strings are indexed by hash
    st.integers(-3, 3),
    st.sampled_from([0.5, 1.0, 2.5]),
    st.booleans(),
)
value = st.one_of(scalar, st.lists(scalar, max_size=3), st.none())


def _payload():
    return st.fixed_dictionaries(
        {}, optional={"a": value, "b": value, "m": st.fixed_dictionaries({}, optional={"c": value})}
    )


cond_leaf = st.one_of(
    st.builds(lambda k, v: {"key": k, "match": v}, st.sampled_from(KEYS), scalar),
    st.builds(
        lambda k, vs: {"key": k, "match_any": vs},
        st.sampled_from(KEYS),
        st.lists(scalar, min_size=1, max_size=3),
    ),
    st.builds(
        lambda k, op, x: {"key": k, "range": {op: x}},
        st.sampled_from(KEYS),
        st.sampled_from(["gt", "gte", "lt", "lte"]),
        st.integers(-3, 3),
    ),
)
filter_st = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "must": st.lists(cond_leaf, max_size=3),
            "should": st.lists(cond_leaf, max_size=3),
            "must_not": st.lists(cond_leaf, max_size=2),
        },
    ),
    lambda inner: st.fixed_dictionaries(
        {"must": st.lists(st.one_of(cond_leaf, inner.filter(bool)), min_size=1, max_size=2)},
        optional={"must_not": st.lists(st.one_of(cond_leaf, inner.filter(bool)), max_size=2)},
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(_payload(), min_size=1, max_size=30),
    flt=filter_st,
    deleted=st.sets(st.integers(0, 29)),
    rewrites=st.lists(st.tuples(st.integers(0, 29), _payload()), max_size=5),
)
def test_index_mask_equals_pure_evaluation(payloads, flt, deleted, rewrites):
    parsed = filters.parse(flt)
    if parsed is None:
        return
    n = len(payloads)
    index = PayloadIndex(4)
    index.grow(64)
    index.put(np.arange(n), payloads)
    current = list(payloads)
    for label, new in rewrites:  # updates replace what a label had
        if label < n:
            index.put(np.array([label]), [new])
            current[label] = new
    gone = np.array(sorted(d for d in deleted if d < n), dtype=np.int64)
    index.remove(gone)
    mask = index.mask(parsed, n)
    expected = [i not in set(gone.tolist()) and filters.matches(parsed, current[i]) for i in range(n)]
    assert mask.tolist() == expected


def test_filters_on_keys_beyond_the_index_limit_are_refused():
    index = PayloadIndex(8)
    index.put(np.arange(1), [{f"k{i}": i for i in range(limits.INDEXED_KEYS_MAX + 1)}])
    with pytest.raises(FailedPrecondition, match="not indexed"):
        index.mask(filters.parse({"must": [{"key": f"k{limits.INDEXED_KEYS_MAX}", "match": 1}]}), 1)
