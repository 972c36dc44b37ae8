"""Pure bookkeeping of metered usage: journal records in, hourly documents out.

A meter record (one per acknowledged public call):
    {"k": "m", "rid": request id, "att": attempt, "t": unix s, "tn": tenant, "key": key id,
     "op": operation, "n": vectors written}
A query record (one per search, for the query history; never vectors or payloads):
    {"k": "q", "t", "tn", "key", "c": collection, "kk": k, "nq": queries, "f": filter present,
     "ms": latency, "st": status}
An hour of calls, as stored (keys.calls_key):
    {"calls": {key id: {operation: n}}, "vectors": {key id: n}}
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from quartz_cluster.metering import keys

METER, QUERY, AUDIT = "m", "q", "a"
QUERY_HISTORY_MAX = 200  # the latest searches kept per tenant and router journal


@dataclass(slots=True)
class CallsHour:
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    vectors: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: bytes | None) -> CallsHour:
        if not raw:
            return cls()
        obj = orjson.loads(raw)
        return cls({k: dict(v) for k, v in obj.get("calls", {}).items()}, dict(obj.get("vectors", {})))

    def to_json(self) -> bytes:
        return orjson.dumps({"calls": self.calls, "vectors": self.vectors}, option=orjson.OPT_SORT_KEYS)

    def add(self, other: CallsHour) -> None:
        for key, ops in other.calls.items():
            mine = self.calls.setdefault(key, {})
            for op, n in ops.items():
                mine[op] = mine.get(op, 0) + n
        for key, n in other.vectors.items():
            self.vectors[key] = self.vectors.get(key, 0) + n

    @property
    def total_calls(self) -> int:
        return sum(n for ops in self.calls.values() for n in ops.values())

    @property
    def total_vectors(self) -> int:
        return sum(self.vectors.values())

    def by_operation(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for ops in self.calls.values():
            for op, n in ops.items():
                out[op] += n
        return dict(sorted(out.items()))


@dataclass(slots=True)
class Batch:
    """What one shipping pass adds: calls per (tenant, hour), request ids per bucket and
    minute, the latest queries per tenant."""

    hours: dict[tuple[str, str], CallsHour] = field(default_factory=dict)
    rids: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    queries: dict[str, list[dict]] = field(default_factory=dict)
    metered: int = 0
    keys: int = 0  # etcd keys the batch writes
    consumed: int = 0  # records folded (the rest go in the next batch)


def aggregate(records: list[dict], skip_rids: frozenset[str] = frozenset(), keys_max: int = 0) -> Batch:
    """Fold journal records into a Batch; meter records whose request id is in `skip_rids`
    (counted already, by another router) are left out. keys_max > 0: stop before the record
    that would make the batch write more than that many etcd keys; `Batch.consumed` says how
    many records it folded."""
    b = Batch()
    times: dict[int, tuple[str, str]] = {}  # minute -> (hour, minute) strings: one strftime per minute
    for i, r in enumerate(records):
        kind = r.get("k")
        if kind == METER:
            minute_n = int(r["t"]) // 60
            names = times.get(minute_n)
            if names is None:
                names = times[minute_n] = (keys.hour_of(r["t"]), keys.minute_of(r["t"]))
            hour_key = (r["tn"], names[0])
            rid_key = (keys.rid_bucket(r["rid"]), names[1])
            if keys_max and (hour_key not in b.hours) + (rid_key not in b.rids) + b.keys > keys_max:
                b.consumed = i
                return b
            if r["rid"] in skip_rids:
                continue
            hour = b.hours.get(hour_key)
            if hour is None:
                hour = b.hours[hour_key] = CallsHour()
                b.keys += 1
            ops = hour.calls.setdefault(r["key"], {})
            ops[r["op"]] = ops.get(r["op"], 0) + 1
            if r.get("n"):
                hour.vectors[r["key"]] = hour.vectors.get(r["key"], 0) + r["n"]
            rids = b.rids.get(rid_key)
            if rids is None:
                rids = b.rids[rid_key] = []
                b.keys += 1
            rids.append(r["rid"])
            b.metered += 1
        elif kind == QUERY:  # written by the shipper at its own pace (no key counted here)
            b.queries.setdefault(r["tn"], []).append(r)
    b.consumed = len(records)
    return b


def merge_queries(stored: bytes | None, new: list[dict]) -> bytes:
    old = orjson.loads(stored) if stored else []
    return orjson.dumps((old + new)[-QUERY_HISTORY_MAX:])


def query_view(r: dict) -> dict:
    """A query record as the API shows it."""
    return {
        "time": r["t"],
        "key": r.get("key", ""),
        "collection": r["c"],
        "k": r["kk"],
        "queries": r.get("nq", 1),
        "filter": bool(r["f"]),
        "latency_ms": r["ms"],
        "status": r["st"],
    }
