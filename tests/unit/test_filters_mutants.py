"""filters.py at its edges: every limit exactly at the bound and one past it, every refusal
naming its field, and the evaluator's clause semantics with exact expected answers (written to
kill the mutants that tests/unit/test_filters.py lets survive; see docs/mutation.md)."""

import orjson
import pytest

from quartz_cluster import limits
from quartz_cluster.errors import InvalidArgument
from quartz_cluster.filters import MISSING, Filter, Match, Range, lookup, matches, parse, value_key


def refused(raw, field: str, message: str | None = None, name: str = "filter") -> InvalidArgument:
    with pytest.raises(InvalidArgument) as err:
        parse(raw, name)
    assert err.value.field == field, str(err.value)
    if message is not None:
        assert str(err.value) == f"{field}: {message}"
    return err.value


def cond(key="a", **kind):
    return {"key": key, **kind}


def test_value_key_kinds():
    assert value_key(True) == ("b", True) and value_key(False) == ("b", False)
    assert value_key(3) == ("n", 3) and value_key(2.5) == ("n", 2.5)
    assert value_key(1) == value_key(1.0)  # an integer equals the float of the same value
    assert value_key(1) != value_key(True) and value_key(0) != value_key(False)  # JSON: bools are not numbers
    assert value_key("x") == ("s", "x") and value_key("") == ("s", "")
    assert value_key("1") != value_key(1)
    for not_scalar in (None, [1], {"a": 1}, b"x"):
        assert value_key(not_scalar) is None


@pytest.mark.parametrize(
    ("bounds", "inside", "outside"),
    [
        ({"gt": 5}, [5.5, 6], [5, 4.9]),
        ({"gte": 5}, [5, 6], [4.9]),
        ({"lt": 5}, [4.9, -1], [5, 6]),
        ({"lte": 5}, [5, 4], [5.1]),
        ({"gt": 1, "lt": 3}, [2], [1, 3]),
        ({"gte": 1, "lte": 3}, [1, 3], [0.9, 3.1]),
    ],
)
def test_range_bounds_strict_and_inclusive(bounds, inside, outside):
    r = Range("k", **bounds)
    assert all(r.holds(x) for x in inside)
    assert not any(r.holds(x) for x in outside)
    assert Range("k").holds(-1e300)  # no bound: everything


def test_filter_keys_collects_every_key_at_every_depth():
    f = parse(
        {
            "must": [cond("a", match=1)],
            "should": [cond("b", range={"gt": 1}), {"must_not": [cond("c.d", match="x")]}],
            "must_not": [cond("e", match_any=[1, 2])],
        }
    )
    assert f.keys() == {"a", "b", "c.d", "e"}
    assert Filter().keys() == set()


def test_empty_filters_are_no_filter():
    for raw in (None, "", b"", {}, "{}", b"{}", {"must": [], "should": [], "must_not": []}):
        assert parse(raw) is None
    # any one clause makes a filter
    assert parse({"must": [cond(match=1)]}) == Filter(must=(Match("a", frozenset({("n", 1)})),))
    assert parse({"should": [cond(match=1)]}) == Filter(should=(Match("a", frozenset({("n", 1)})),))
    assert parse({"must_not": [cond(match=1)]}) == Filter(must_not=(Match("a", frozenset({("n", 1)})),))


def test_text_and_bytes_and_dicts_parse_alike():
    raw = {"must": [cond("k", match="v")], "must_not": [cond("n", range={"lt": 2})]}
    want = Filter(must=(Match("k", frozenset({("s", "v")})),), must_not=(Range("n", lt=2),))
    assert parse(raw) == parse(orjson.dumps(raw)) == parse(orjson.dumps(raw).decode()) == want


def _json_of_size(n: int) -> str:
    head = '{"must": [{"key": "a", "match": "'
    tail = '"}]}'
    text = head + "x" * (n - len(head) - len(tail)) + tail
    assert len(text) == n
    return text


def test_filter_text_is_limited_at_exactly_the_limit():
    n = limits.FILTER_BYTES_MAX
    assert parse(_json_of_size(n)) is not None
    assert parse(_json_of_size(n).encode()) is not None
    refused(_json_of_size(n + 1), "filter", f"longer than {n} bytes")
    refused(_json_of_size(n + 1).encode(), "q", f"longer than {n} bytes", name="q")


def test_invalid_json_is_refused_naming_the_field():
    err = refused("{nope", "search.filter", name="search.filter")
    assert str(err).startswith("search.filter: not valid JSON (")


def _nested(levels: int) -> dict:
    f = {"must": [cond(match=1)]}
    for _ in range(levels):
        f = {"must": [f]}
    return f


def test_nesting_is_limited_at_exactly_the_limit():
    depth = limits.FILTER_DEPTH_MAX
    inner = parse(_nested(depth))
    for _ in range(depth):
        inner = inner.must[0]
    assert inner == Filter(must=(Match("a", frozenset({("n", 1)})),))
    field = "filter" + ".must[0]" * (depth + 1)
    refused(_nested(depth + 1), field, f"nested deeper than {depth}")


def test_the_number_of_conditions_is_limited_at_exactly_the_limit():
    n = limits.FILTER_CONDITIONS_MAX
    assert len(parse({"must": [cond(match=i) for i in range(n)]}).must) == n
    refused({"must": [cond(match=i) for i in range(n + 1)]}, f"filter.must[{n}]", f"more than {n} conditions")
    # counted across clauses and nesting: a nested filter is a condition too
    half = n // 2
    raw = {
        "must": [cond(match=i) for i in range(half)],
        "should": [{"must": [cond(match=i) for i in range(half)]}],
    }
    refused(raw, f"filter.should[0].must[{half - 1}]", f"more than {n} conditions")


def test_a_filter_must_be_an_object_of_known_clauses():
    refused([1], "filter", "must be an object with must / should / must_not")
    refused("3", "filter", "must be an object with must / should / must_not")
    refused(
        {"must": [], "zeta": 1, "beta": 2}, "filter", "unknown clause 'beta' (use must, should, must_not)"
    )
    refused({"should": "x"}, "filter.should", "must be a list of conditions")
    refused({"must_not": 3}, "filter.must_not", "must be a list of conditions")


def test_a_single_condition_may_stand_for_a_list():
    for clause in ("must", "should", "must_not"):
        f = parse({clause: cond(match="x")})
        assert getattr(f, clause) == (Match("a", frozenset({("s", "x")})),)


def test_conditions_are_refused_naming_their_field():
    refused({"must": [3]}, "filter.must[0]", "a condition must be an object")
    refused({"must": [{}]}, "filter.must[0]", "a condition needs a 'key' (or must / should / must_not)")
    refused(
        {"must": [{"match": 1}]}, "filter.must[0]", "a condition needs a 'key' (or must / should / must_not)"
    )
    for bad_key in (3, "", None):
        refused(
            {"should": [{"key": bad_key, "match": 1}]}, "filter.should[0].key", "must be a non-empty string"
        )
    for kinds in ({}, {"match": 1, "range": {"gt": 1}}, {"between": 1}):
        refused({"must": [cond(**kinds)]}, "filter.must[0]", "needs exactly one of match, match_any, range")


def test_key_length_is_limited_at_exactly_the_limit():
    n = limits.ID_BYTES_MAX
    assert parse({"must": [cond("k" * n, match=1)]}).keys() == {"k" * n}
    refused({"must": [cond("k" * (n + 1), match=1)]}, "filter.must[0].key", "must be a non-empty string")


def test_match_spellings():
    want = Match("a", frozenset({("s", "x")}))
    assert parse({"must": [cond(match="x")]}).must == (want,)
    assert parse({"must": [cond(match={"value": "x"})]}).must == (want,)
    assert parse({"must": [cond(match={"any": ["x", 2]})]}).must == (
        Match("a", frozenset({("s", "x"), ("n", 2)})),
    )
    for bad in ({"value": 1, "any": [1]}, {}, {"values": 1}):
        refused(
            {"must": [cond(match=bad)]},
            "filter.must[0].match",
            "must be a scalar, {'value': v} or {'any': [...]}",
        )
    scalar = "must be a string, a finite number or a boolean"
    for bad in (None, [1], float("inf"), float("nan")):
        refused({"must": [cond(match=bad)]}, "filter.must[0].match", scalar)
    refused({"must": [cond(match={"value": None})]}, "filter.must[0].match", scalar)
    assert parse({"must": [cond(match=False)]}).must == (Match("a", frozenset({("b", False)})),)


def test_match_any_is_limited_at_exactly_the_limit():
    n = limits.MATCH_ANY_VALUES_MAX
    [m] = parse({"must": [cond(match_any=list(range(n)))]}).must
    assert len(m.values) == n
    message = f"must be a list of 1..{n} scalars"
    refused({"must": [cond(match_any=list(range(n + 1)))]}, "filter.must[0].match_any", message)
    refused({"must": [cond(match_any=[])]}, "filter.must[0].match_any", message)
    refused({"must": [cond(match_any="x")]}, "filter.must[0].match_any", message)
    refused({"must": [cond(match_any=["a", None])]}, "filter.must[0].match_any[1]")
    refused({"must": [cond(match={"any": [1, {}]})]}, "filter.must[0].match_any[1]")


def test_range_conditions():
    assert parse({"must": [cond(range={"gt": 1, "lte": 2.5})]}).must == (Range("a", gt=1, lte=2.5),)
    assert parse({"must": [cond(range={"gte": -1, "lt": 0})]}).must == (Range("a", gte=-1, lt=0),)
    shape = "must be an object with some of gt, gte, lt, lte"
    for bad in ({}, [1], 3, {"gt": 1, "eq": 2}):
        refused({"must": [cond(range=bad)]}, "filter.must[0].range", shape)
    for op in ("gt", "gte", "lt", "lte"):
        for bad in (True, "1", None, float("inf"), float("-inf"), float("nan")):
            refused(
                {"must": [cond(range={op: bad})]}, f"filter.must[0].range.{op}", "must be a finite number"
            )


def test_lookup_follows_dotted_paths():
    payload = {"a": {"b": {"c": 1}, "n": None}, "x": [1, 2], "d.e": 5}
    assert lookup(payload, "a.b.c") == 1
    assert lookup(payload, "a.b") == {"c": 1}
    assert lookup(payload, "a.n") is None  # present, null: not missing
    assert lookup(payload, "x") == [1, 2]
    assert lookup(payload, "a.z") is MISSING
    assert lookup(payload, "a.b.c.d") is MISSING  # through a scalar
    assert lookup(payload, "x.0") is MISSING  # no indexing into lists
    assert lookup(payload, "d.e") is MISSING  # a dot always separates
    assert lookup({}, "a") is MISSING


def f(raw):
    return parse(raw)


def test_matches_clause_semantics():
    p = {"lang": "en", "n": 3, "tags": ["a", "b"], "ok": True, "meta": {"v": 2}}
    assert matches(None, p) and matches(None, {})
    # must: every condition
    assert matches(f({"must": [cond("lang", match="en"), cond("n", match=3)]}), p)
    assert not matches(f({"must": [cond("lang", match="en"), cond("n", match=4)]}), p)
    # should: at least one, when present
    assert matches(f({"should": [cond("lang", match="de"), cond("n", match=3)]}), p)
    assert not matches(f({"should": [cond("lang", match="de"), cond("n", match=4)]}), p)
    assert matches(f({"must": [cond("n", match=3)], "should": []}), p)
    # must_not: none
    assert not matches(f({"must_not": [cond("lang", match="de"), cond("n", match=3)]}), p)
    assert matches(f({"must_not": [cond("lang", match="de"), cond("n", match=4)]}), p)
    # all three together
    both = {
        "must": [cond("ok", match=True)],
        "should": [cond("tags", match="b")],
        "must_not": [cond("n", match=4)],
    }
    assert matches(f(both), p)
    assert not matches(f({**both, "must_not": [cond("n", match=3)]}), p)
    assert not matches(f({**both, "should": [cond("tags", match="z")]}), p)
    # nested filters and dotted keys
    assert matches(f({"must": [{"should": [cond("meta.v", match=2)]}]}), p)
    assert not matches(f({"must": [{"must_not": [cond("meta.v", match=2)]}]}), p)


def test_a_missing_key_fails_a_condition_and_so_passes_must_not():
    p = {"a": 1}
    assert not matches(f({"must": [cond("b", match=1)]}), p)
    assert not matches(f({"must": [cond("b", range={"gt": 0})]}), p)
    assert matches(f({"must_not": [cond("b", match=1)]}), p)
    assert not matches(f({"must": [cond("a.b", match=1)]}), p)


def test_list_values_hold_if_any_element_does():
    p = {"tags": ["x", 5, True], "nums": [1, 10], "empty": []}
    assert matches(f({"must": [cond("tags", match=5)]}), p)
    assert matches(f({"must": [cond("tags", match_any=["q", "x"])]}), p)
    assert not matches(f({"must": [cond("tags", match=1)]}), p)  # True is not 1
    assert matches(f({"must": [cond("nums", range={"gt": 5})]}), p)
    assert not matches(f({"must": [cond("nums", range={"gt": 10})]}), p)
    assert not matches(f({"must": [cond("empty", match=1)]}), p)
    assert not matches(f({"must": [cond("empty", range={"gt": 0})]}), p)


def test_ranges_never_hold_for_booleans_strings_or_objects():
    for value in (True, False, "5", None, {"x": 5}, [True, "7"]):
        assert not matches(f({"must": [cond("v", range={"gte": 0})]}), {"v": value}), value
    assert matches(f({"must": [cond("v", range={"gte": 0})]}), {"v": 0})
    assert matches(f({"must": [cond("v", range={"lt": 1})]}), {"v": 0.5})


def test_matches_compare_kinds_exactly():
    assert matches(f({"must": [cond("v", match=1)]}), {"v": 1.0})
    assert not matches(f({"must": [cond("v", match=1)]}), {"v": True})
    assert not matches(f({"must": [cond("v", match=True)]}), {"v": 1})
    assert not matches(f({"must": [cond("v", match="1")]}), {"v": 1})
    assert not matches(f({"must": [cond("v", match=1)]}), {"v": None})
    assert not matches(f({"must": [cond("v", match=1)]}), {"v": {"x": 1}})
