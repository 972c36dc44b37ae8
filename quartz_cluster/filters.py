"""Payload filters (Qdrant-like) parsed into a small immutable tree, plus a pure evaluator.

Grammar::

    filter    := {"must": [cond...], "should": [cond...], "must_not": [cond...]}   (all optional)
    cond      := {"key": K, "match": V}           V: string, integer, number or bool
               | {"key": K, "match_any": [V...]}
               | {"key": K, "range": {"gt"|"gte"|"lt"|"lte": number, ...}}
               | filter                             (nested)

Qdrant's spellings {"match": {"value": V}} and {"match": {"any": [...]}} are accepted too.
`must` needs every condition, `should` at least one (when present), `must_not` none.
Keys may be dotted paths into nested objects ("meta.lang"), at any depth (a key is at most
KEY_CHARS_MAX characters). When the payload value is a list, a condition holds if it holds for
any element. Booleans never equal numbers (JSON semantics). Numbers compare exactly, as Python
compares them: integers are never rounded to float (2**53 + 1 != 2**53, over the whole int64 and
uint64 range JSON payloads decode to), and an integer equals the float of the same value (1 == 1.0).
`matches` is the reference semantics; the node's PayloadIndex must agree with it on every payload
the write path accepts (tests/unit/test_filter_index_agreement.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Union

import orjson

from quartz_cluster import limits
from quartz_cluster.errors import InvalidArgument

MISSING = object()
KEY_CHARS_MAX = limits.ID_BYTES_MAX  # a filter key (dotted path) is at most this many characters

# A comparable, hashable form of a scalar: ("s", str) | ("n", int | float) | ("b", bool).
# Numbers keep their type: Python compares and hashes int and float exactly (1 == 1.0 and
# hash(1) == hash(1.0), but 2**53 + 1 != float(2**53)), so big integers are never rounded.
ValueKey = tuple[str, Any]


def value_key(value: object) -> ValueKey | None:
    """The key a scalar payload value is compared and indexed by; None if not a scalar."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


@dataclass(frozen=True, slots=True)
class Match:
    key: str
    values: frozenset[ValueKey]  # one value for "match", several for "match_any"


@dataclass(frozen=True, slots=True)
class Range:
    key: str  # bounds are exact: an int bound is not rounded to float
    gt: int | float | None = None
    gte: int | float | None = None
    lt: int | float | None = None
    lte: int | float | None = None

    def holds(self, x: int | float) -> bool:
        return (
            (self.gt is None or x > self.gt)
            and (self.gte is None or x >= self.gte)
            and (self.lt is None or x < self.lt)
            and (self.lte is None or x <= self.lte)
        )


@dataclass(frozen=True, slots=True)
class Filter:
    must: tuple[Condition, ...] = ()
    should: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()

    def keys(self) -> set[str]:
        out: set[str] = set()
        for cond in (*self.must, *self.should, *self.must_not):
            out |= cond.keys() if isinstance(cond, Filter) else {cond.key}
        return out


Condition = Union[Match, Range, Filter]  # noqa: UP007 (a runtime alias, used before Filter exists)


def parse(raw: str | bytes | dict | None, field: str = "filter") -> Filter | None:
    """Parse and validate a filter. None/empty means no filter."""
    if raw is None or raw in ("", b""):
        return None
    if isinstance(raw, str | bytes):
        if len(raw) > limits.FILTER_BYTES_MAX:
            raise InvalidArgument(f"longer than {limits.FILTER_BYTES_MAX} bytes", field)
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidArgument(f"not valid JSON ({exc})", field) from None
    counter = [0]
    parsed = _filter(raw, field, 0, counter)
    return parsed if (parsed.must or parsed.should or parsed.must_not) else None


def _filter(obj: object, field: str, depth: int, counter: list[int]) -> Filter:
    if not isinstance(obj, dict):
        raise InvalidArgument("must be an object with must / should / must_not", field)
    if depth > limits.FILTER_DEPTH_MAX:
        raise InvalidArgument(f"nested deeper than {limits.FILTER_DEPTH_MAX}", field)
    unknown = set(obj) - {"must", "should", "must_not"}
    if unknown:
        raise InvalidArgument(f"unknown clause {sorted(unknown)[0]!r} (use must, should, must_not)", field)
    clauses = {}
    for clause in ("must", "should", "must_not"):
        items = obj.get(clause, [])
        if isinstance(items, dict):  # Qdrant allows a single condition
            items = [items]
        if not isinstance(items, list):
            raise InvalidArgument("must be a list of conditions", f"{field}.{clause}")
        clauses[clause] = tuple(
            _condition(c, f"{field}.{clause}[{i}]", depth, counter) for i, c in enumerate(items)
        )
    return Filter(**clauses)


def _condition(obj: object, field: str, depth: int, counter: list[int]) -> Condition:
    counter[0] += 1
    if counter[0] > limits.FILTER_CONDITIONS_MAX:
        raise InvalidArgument(f"more than {limits.FILTER_CONDITIONS_MAX} conditions", field)
    if not isinstance(obj, dict):
        raise InvalidArgument("a condition must be an object", field)
    if "key" not in obj:
        if set(obj) & {"must", "should", "must_not"}:
            return _filter(obj, field, depth + 1, counter)
        raise InvalidArgument("a condition needs a 'key' (or must / should / must_not)", field)
    key = obj["key"]
    if not isinstance(key, str) or not key or len(key) > KEY_CHARS_MAX:
        raise InvalidArgument("must be a non-empty string", f"{field}.key")
    kinds = set(obj) - {"key"}
    if len(kinds) != 1 or not kinds <= {"match", "match_any", "range"}:
        raise InvalidArgument("needs exactly one of match, match_any, range", field)
    kind = kinds.pop()
    arg = obj[kind]
    if kind == "match" and isinstance(arg, dict):  # Qdrant: {"value": v} or {"any": [...]}
        if set(arg) == {"value"}:
            arg = arg["value"]
        elif set(arg) == {"any"}:
            kind, arg = "match_any", arg["any"]
        else:
            raise InvalidArgument("must be a scalar, {'value': v} or {'any': [...]}", f"{field}.match")
    if kind == "match":
        return Match(key, frozenset([_scalar(arg, f"{field}.match")]))
    if kind == "match_any":
        if not isinstance(arg, list) or not arg or len(arg) > limits.MATCH_ANY_VALUES_MAX:
            raise InvalidArgument(
                f"must be a list of 1..{limits.MATCH_ANY_VALUES_MAX} scalars", f"{field}.match_any"
            )
        return Match(key, frozenset(_scalar(v, f"{field}.match_any[{i}]") for i, v in enumerate(arg)))
    if not isinstance(arg, dict) or not arg or set(arg) - {"gt", "gte", "lt", "lte"}:
        raise InvalidArgument("must be an object with some of gt, gte, lt, lte", f"{field}.range")
    bounds = {}
    for op, bound in arg.items():
        if not _is_number(bound):
            raise InvalidArgument("must be a finite number", f"{field}.range.{op}")
        bounds[op] = bound
    return Range(key, **bounds)


def _is_number(value: object) -> bool:
    """An int (any size; never a bool) or a finite float."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _scalar(value: object, field: str) -> ValueKey:
    key = value_key(value)
    if key is None or (key[0] == "n" and not _is_number(key[1])):
        raise InvalidArgument("must be a string, a finite number or a boolean", field)
    return key


def lookup(payload: dict, key: str) -> object:
    """The value at a dotted path, or MISSING."""
    node: object = payload
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return MISSING
        node = node[part]
    return node


def _holds(cond: Match | Range, value: object) -> bool:
    values = value if isinstance(value, list) else [value]
    if isinstance(cond, Match):
        return any(value_key(v) in cond.values for v in values)
    return any(not isinstance(v, bool) and isinstance(v, int | float) and cond.holds(v) for v in values)


def matches(flt: Filter | None, payload: dict) -> bool:
    """Pure evaluation of a filter against one payload: the reference semantics."""
    if flt is None:
        return True

    def check(cond: Condition) -> bool:
        if isinstance(cond, Filter):
            return matches(cond, payload)
        value = lookup(payload, cond.key)
        return value is not MISSING and _holds(cond, value)

    return (
        all(check(c) for c in flt.must)
        and (not flt.should or any(check(c) for c in flt.should))
        and not any(check(c) for c in flt.must_not)
    )
