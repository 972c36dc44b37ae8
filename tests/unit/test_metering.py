"""The metering journal, the ledger's folding of records into hourly documents, the front
door's pure parts, and the coordinator's hour split (no network)."""

from __future__ import annotations

import calendar

import orjson
import pytest

from quartz_cluster.coordinator.billing import split_by_hour
from quartz_cluster.errors import InvalidArgument
from quartz_cluster.metering import journal as jmod
from quartz_cluster.metering import keys, ledger
from quartz_cluster.metering.journal import Cursor, Journal, JournalLocked
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2
from quartz_cluster.router import frontdoor

T0 = calendar.timegm((2026, 12, 3, 10, 59, 30))


def meter(
    rid: str, t: float = T0, tenant: str = "t1", key: str = "k1", op: str = "search", n: int = 0
) -> dict:
    return {"k": "m", "rid": rid, "att": 1, "t": t, "tn": tenant, "key": key, "op": op, "n": n}


# ------------------------------------------------------------------ journal


def test_journal_reads_back_what_was_appended_with_a_cursor_after_each(tmp_path):
    j = Journal(tmp_path)
    j.append([meter("a"), meter("b")])
    j.append([meter("c")])
    entries = j.read(Cursor(0, 0))
    assert [r["rid"] for r, _ in entries] == ["a", "b", "c"]
    assert [r["rid"] for r, _ in j.read(entries[0][1])] == ["b", "c"]
    assert j.read(entries[-1][1]) == []
    assert entries[-1][1] == j.end
    assert [r["rid"] for r, _ in j.read(Cursor(0, 0), limit=2)] == ["a", "b"]


def test_journal_cuts_a_torn_last_line_and_keeps_its_id_across_opens(tmp_path):
    j = Journal(tmp_path)
    j.append([meter("a")])
    first_id = j.id
    j.close()
    with open(tmp_path / "00000001.ndjson", "ab") as f:
        f.write(b'{"k": "m", "rid": "tor')  # a crash inside write(2)
    j = Journal(tmp_path)
    assert j.id == first_id
    j.append([meter("b")])
    assert [r["rid"] for r, _ in j.read(Cursor(0, 0))] == ["a", "b"]


def test_journal_is_locked_to_one_process(tmp_path):
    Journal(tmp_path)
    with pytest.raises(JournalLocked):
        Journal(tmp_path)


def test_journal_rolls_segments_reads_across_them_and_prunes_passed_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(jmod, "SEGMENT_BYTES_MAX", 300)
    j = Journal(tmp_path)
    for i in range(10):
        j.append([meter(f"r{i}")])
    assert len(j.segments()) > 2
    entries = j.read(Cursor(0, 0))
    assert [r["rid"] for r, _ in entries] == [f"r{i}" for i in range(10)]
    j.prune(entries[6][1])
    assert min(j.segments()) == entries[6][1].segment
    assert [r["rid"] for r, _ in j.read(entries[6][1])] == ["r7", "r8", "r9"]
    assert Cursor.from_obj(orjson.loads(orjson.dumps(entries[3][1].to_obj()))) == entries[3][1]


# ------------------------------------------------------------------ ledger


def test_aggregate_folds_calls_by_tenant_hour_key_and_operation():
    records = [
        meter("a"),
        meter("b", op="upsert", n=10),
        meter("c", t=T0 + 60, op="upsert", n=5),  # the next hour
        meter("d", tenant="t2", key="k2"),
        {"k": "q", "t": T0, "tn": "t1", "c": "docs", "kk": 3, "f": True, "ms": 1.5, "st": "OK"},
        {"k": "a", "e": {"verb": "upsert"}},
    ]
    b = ledger.aggregate(records, skip_rids=frozenset({"d"}))
    h10, h11 = keys.hour_of(T0), keys.hour_of(T0 + 60)
    assert h10 != h11
    assert b.hours[("t1", h10)].calls == {"k1": {"search": 1, "upsert": 1}}
    assert b.hours[("t1", h10)].vectors == {"k1": 10}
    assert b.hours[("t1", h11)].total_vectors == 5
    assert ("t2", h10) not in b.hours  # skipped: counted by another router
    assert b.metered == 3
    assert sorted(r for rids in b.rids.values() for r in rids) == ["a", "b", "c"]
    assert [q["c"] for q in b.queries["t1"]] == ["docs"]


def test_calls_hour_adds_and_round_trips():
    a = ledger.CallsHour({"k1": {"search": 2}}, {"k1": 4})
    a.add(ledger.CallsHour({"k1": {"search": 1, "count": 1}, "k2": {"get": 3}}, {"k2": 1}))
    back = ledger.CallsHour.from_json(a.to_json())
    assert back.calls == {"k1": {"search": 3, "count": 1}, "k2": {"get": 3}}
    assert back.total_calls == 7 and back.total_vectors == 5
    assert back.by_operation() == {"count": 1, "get": 3, "search": 3}


def test_query_history_keeps_the_latest_and_shows_no_content():
    old = orjson.dumps([{"t": i, "c": "x", "kk": 1, "f": False, "ms": 1, "st": "OK"} for i in range(250)])
    merged = orjson.loads(
        ledger.merge_queries(old, [{"t": 999, "c": "y", "kk": 2, "f": True, "ms": 2, "st": "OK"}])
    )
    assert len(merged) == ledger.QUERY_HISTORY_MAX and merged[-1]["t"] == 999
    view = ledger.query_view(merged[-1])
    assert set(view) == {"time", "key", "collection", "k", "queries", "filter", "latency_ms", "status"}


def test_rid_buckets_spread_and_are_stable():
    buckets = {keys.rid_bucket(f"{i:032x}") for i in range(200)}
    assert len(buckets) == 16 and keys.rid_bucket("abc") == keys.rid_bucket("abc")


# ------------------------------------------------------------------ front door (pure parts)


def test_cost_is_points_written_or_queries_searched():
    up = quartz_pb2.UpsertRequest(points=node_pb2.PointBatch(ids=["a", "b", "c"]))
    assert frontdoor.cost("Upsert", up) == 3
    assert frontdoor.cost("Delete", quartz_pb2.DeleteRequest(ids=["a"] * 7)) == 7
    s = quartz_pb2.SearchPointsRequest(queries=node_pb2.Vectors(count=5, dim=2))
    assert frontdoor.cost("Search", s) == 5
    assert frontdoor.cost("Count", quartz_pb2.CountRequest()) == 1


def test_request_id_and_attempt_come_from_metadata_or_a_fresh_id():
    rid, attempt = frontdoor.request_id([("quartz-request-id", "abc"), ("quartz-attempt", "3")])
    assert (rid, attempt) == ("abc", 3)
    rid1, a1 = frontdoor.request_id([])
    rid2, _ = frontdoor.request_id([])
    assert a1 == 1 and rid1 != rid2 and len(rid1) == 32
    too_long = "x" * (frontdoor.REQUEST_ID_CHARS_MAX + 1)
    assert frontdoor.request_id([("quartz-request-id", too_long)])[0] != too_long
    with pytest.raises(InvalidArgument, match="quartz-attempt"):
        frontdoor.request_id([("quartz-attempt", "two")])


def test_every_public_method_has_an_operation_class():
    methods = {m.name for m in quartz_pb2.DESCRIPTOR.services_by_name["Quartz"].methods}
    assert methods == set(frontdoor.OPS)
    assert {op.op_class for op in frontdoor.OPS.values()} == {"read", "write", "manage"}
    billable = {m for m, op in frontdoor.OPS.items() if op.billable}
    assert billable == {
        "CreateCollection",
        "DropCollection",
        "ListCollections",
        "DescribeCollection",
        "Upsert",
        "Delete",
        "Get",
        "Search",
        "Count",
        "Scroll",
    }


# ------------------------------------------------------------------ coordinator: hours


def test_split_by_hour_covers_the_interval_exactly():
    parts = split_by_hour(T0, T0 + 3600 + 45)
    assert [h for h, _ in parts] == [keys.hour_of(T0), keys.hour_of(T0 + 30), keys.hour_of(T0 + 3630)]
    assert [s for _, s in parts] == [30, 3600, 15]
    assert split_by_hour(T0, T0) == []
