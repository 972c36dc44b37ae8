"""The audit log: event shapes, and that every kind of tampering with a chain is detected and
named by the record it concerns."""

import copy
import hashlib
import inspect
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from quartz_cluster.audit.chain import (
    PROBLEMS_PER_CHAIN_MAX,
    Chain,
    Head,
    Problem,
    format_line,
    matches,
    parse_record_id,
    record_hash,
    record_id,
    verify,
    verify_chain,
)
from quartz_cluster.audit.event import MESSAGE_CHARS_MAX, make_event, parse_peer, timestamp

T0 = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def event(i: int = 0, **kw) -> dict:
    args = {
        "verb": "upsert",
        "code": 200,
        "key_id": "0123456789ab",
        "tenant": "acme",
        "role": "read-write",
        "resource": "points",
        "name": "docs",
        "source_ips": ["10.0.0.7"],
        "user_agent": "quartz-sdk/0.1",
        "annotations": {"quartz/points": str(i)},
        "received": T0 + timedelta(seconds=i),
        "completed": T0 + timedelta(seconds=i, milliseconds=3),
    }
    args.update(kw)
    return make_event(**args)


def build(chain_id: str = "router-a", n: int = 50) -> tuple[list[dict], Head]:
    chain = Chain(chain_id)
    records = [chain.append(event(i)) for i in range(n)]
    return records, chain.head


def stored(records: list) -> list:
    """The records as a store hands them back (JSON round trip, independent copies)."""
    return [None if r is None else orjson.loads(orjson.dumps(r)) for r in records]


def rid(seq: int, chain: str = "router-a") -> str:
    return record_id(chain, seq)


def named(problems: list[Problem]) -> list[tuple[str, str]]:
    return [(p.record, p.what) for p in problems]


# ------------------------------------------------------------------------------------------------
# Events


def test_event_has_the_kubernetes_fields():
    e = event(
        7,
        audit_id="f" * 32,
        annotations={"quartz/points": 100},
        source_ips=["10.0.0.7", "", "::1"],
    )
    assert e["kind"] == "Event" and e["apiVersion"] == "audit.k8s.io/v1"
    assert e["auditID"] == "f" * 32
    assert e["stage"] == "ResponseComplete" and e["level"] == "Metadata"
    assert e["verb"] == "upsert"
    assert e["user"] == {"username": "0123456789ab", "extra": {"tenant": ["acme"], "role": ["read-write"]}}
    assert e["sourceIPs"] == ["10.0.0.7", "::1"]
    assert e["userAgent"] == "quartz-sdk/0.1"
    assert e["objectRef"] == {"resource": "points", "namespace": "acme", "name": "docs"}
    assert e["responseStatus"] == {"code": 200, "status": "Success", "reason": "OK", "message": ""}
    assert e["requestReceivedTimestamp"] == "2025-03-04T05:06:14.890123Z"
    assert e["stageTimestamp"] == "2025-03-04T05:06:14.893123Z"
    assert e["annotations"] == {"quartz/points": "100"}
    assert set(e) == {
        "kind",
        "apiVersion",
        "level",
        "auditID",
        "stage",
        "verb",
        "user",
        "sourceIPs",
        "userAgent",
        "objectRef",
        "responseStatus",
        "requestReceivedTimestamp",
        "stageTimestamp",
        "annotations",
    }


def test_event_defaults_and_failures():
    e = make_event(verb="authenticate", code=401, reason="UNAUTHENTICATED", message="malformed API key")
    assert len(e["auditID"]) == 32 and int(e["auditID"], 16) >= 0
    assert e["user"] == {"username": "", "extra": {}}
    assert "objectRef" not in e
    assert e["responseStatus"] == {
        "code": 401,
        "status": "Failure",
        "reason": "UNAUTHENTICATED",
        "message": "malformed API key",
    }
    assert e["requestReceivedTimestamp"] == e["stageTimestamp"]
    assert e["stageTimestamp"].endswith("Z")
    assert datetime.fromisoformat(e["stageTimestamp"]) - datetime.now(UTC) < timedelta(seconds=5)
    assert make_event(verb="upsert", code=200)["auditID"] != make_event(verb="upsert", code=200)["auditID"]


def test_object_namespace():
    # an admin of "default" creating a key of tenant "acme": the object is in acme
    e = make_event(
        verb="create_key", code=200, tenant="default", resource="keys", namespace="acme", name="k1"
    )
    assert e["user"]["extra"]["tenant"] == ["default"]
    assert e["objectRef"] == {"resource": "keys", "namespace": "acme", "name": "k1"}
    # tenants are cluster-scoped
    e = make_event(verb="create_tenant", code=200, tenant="default", resource="tenants", name="acme")
    assert e["objectRef"] == {"resource": "tenants", "name": "acme"}


def test_event_takes_no_bodies():
    params = set(inspect.signature(make_event).parameters)
    assert not params & {"vectors", "vector", "payload", "payloads", "filter", "secret", "key", "body"}
    with pytest.raises(TypeError):
        make_event(verb="upsert", code=200, payloads=[{"a": 1}])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        make_event(verb="upsert", code=200, vectors=[[0.1, 0.2]])  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        make_event("upsert", 200)  # type: ignore[misc]  # keyword arguments only


def test_free_text_is_cut_and_secrets_redacted():
    e = make_event(
        verb="upsert", code=400, reason="INVALID_ARGUMENT", message="x" * 1000, user_agent="u" * 999
    )
    assert len(e["responseStatus"]["message"]) == MESSAGE_CHARS_MAX
    assert e["responseStatus"]["message"].endswith("…")
    assert len(e["userAgent"]) == MESSAGE_CHARS_MAX
    key = "qz_0123456789ab_" + "f" * 40
    e = make_event(verb="authenticate", code=401, message=f"bad key {key}", annotations={"quartz/note": key})
    assert "f" * 40 not in orjson.dumps(e).decode()
    assert e["responseStatus"]["message"] == "bad key qz_0123456789ab_<redacted>"


@pytest.mark.parametrize(
    "kw",
    [
        {"verb": ""},
        {"verb": "Up sert"},
        {"code": 42},
        {"code": True},
        {"resource": "Points!"},
        {"annotations": {"n": 1.5}},
        {"annotations": {"": "x"}},
        {"completed": datetime(2025, 1, 1)},  # naive
    ],
)
def test_event_rejects(kw):
    args = {"verb": "upsert", "code": 200}
    args.update(kw)
    with pytest.raises(ValueError):
        make_event(**args)


def test_timestamp():
    assert timestamp(0) == "1970-01-01T00:00:00.000000Z"
    assert timestamp(1.5) == "1970-01-01T00:00:01.500000Z"
    plus2 = datetime(2025, 1, 1, 2, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert timestamp(plus2) == "2025-01-01T02:00:00.000000Z"


@pytest.mark.parametrize(
    ("peer", "ip"),
    [
        ("ipv4:127.0.0.1:5555", "127.0.0.1"),
        ("ipv4:10.1.2.3", "10.1.2.3"),
        ("ipv6:[::1]:5555", "::1"),
        ("ipv6:%5B::1%5D:5555", "::1"),
        ("ipv6:[2001:db8::0001]:443", "2001:db8::1"),
        ("ipv6:::1", "::1"),
        ("192.168.0.9", "192.168.0.9"),
        ("::1", "::1"),
        ("unix:/tmp/quartz.sock", ""),
        ("unix-abstract:quartz", ""),
        ("ipv4:not-an-ip:1", ""),
        ("", ""),
    ],
)
def test_parse_peer(peer, ip):
    assert parse_peer(peer) == ip


# ------------------------------------------------------------------------------------------------
# Chains


def test_record_ids():
    assert record_id("router-a", 42) == "router-a:000000000042"
    assert parse_record_id("router-a:000000000042") == ("router-a", 42)
    assert parse_record_id(record_id("A_b-9", 10**12 - 1)) == ("A_b-9", 10**12 - 1)
    assert sorted(record_id("c", s) for s in (10, 9, 100)) == [record_id("c", s) for s in (9, 10, 100)]
    for bad in ("", "a:1", "a:00000000001x", "a b:000000000001", "x" * 65 + ":000000000001"):
        with pytest.raises(ValueError):
            parse_record_id(bad)
    for chain, seq in (("a:b", 0), ("", 0), ("x" * 65, 0), ("a", -1), ("a", 10**12)):
        with pytest.raises(ValueError):
            record_id(chain, seq)


def test_chain_links_records():
    records, head = build(n=3)
    assert [r["seq"] for r in records] == [0, 1, 2]
    assert records[0]["prev"] == ""
    assert records[1]["prev"] == records[0]["hash"] and records[2]["prev"] == records[1]["hash"]
    r = records[1]
    body = {"chain": "router-a", "seq": 1, "prev": r["prev"], "event": r["event"]}
    assert r["hash"] == record_hash("router-a", 1, r["prev"], r["event"])
    assert r["hash"] == hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert head == (3, records[2]["hash"]) and head.seq == 3


def test_chain_copies_the_event():
    chain = Chain("w")
    e = event()
    r = chain.append(e)
    e["verb"] = "delete"
    assert r["event"]["verb"] == "upsert"
    assert verify_chain("w", [r], head=chain.head) == []


def test_chain_resumes_from_its_head():
    records, head = build(n=5)
    resumed = Chain("router-a", *head)
    records += [resumed.append(event(i)) for i in range(5, 8)]
    assert verify_chain("router-a", stored(records), head=resumed.head) == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("bad id",), ValueError),
        (("a", 0, "f" * 64), ValueError),
        (("a", 3, ""), ValueError),
        (("a", 3, "xyz"), ValueError),
        (("a", -1), ValueError),
    ],
)
def test_chain_rejects(args, error):
    with pytest.raises(error):
        Chain(*args)


def test_chain_rejects_non_json_events():
    chain = Chain("a")
    with pytest.raises(TypeError):
        chain.append({"x": object()})
    with pytest.raises(TypeError):
        chain.append([1, 2])  # type: ignore[arg-type]
    assert chain.head == (0, "")


def test_intact_chain_verifies():
    records, head = build()
    assert len(records) == 50
    assert verify_chain("router-a", stored(records), head=head) == []
    report = verify({"router-a": stored(records)}, {"router-a": head})
    assert report.ok and report.problems == () and report.records == 50 and report.chains == 1


def test_edited_record():
    records, head = build()
    log = stored(records)
    log[17]["event"]["responseStatus"]["code"] = 403
    assert named(verify_chain("router-a", log, head=head)) == [(rid(17), "hash mismatch (edited)")]
    report = verify({"router-a": log}, {"router-a": head})
    assert not report.ok
    assert [str(p) for p in report.problems] == ["router-a:000000000017: hash mismatch (edited)"]


@pytest.mark.parametrize("field", ["prev", "hash"])
def test_edited_link_fields(field):
    records, head = build()
    log = stored(records)
    log[20][field] = "0" * 64
    problems = named(verify_chain("router-a", log, head=head))
    if field == "prev":  # its hash covers prev
        assert problems == [
            (rid(20), "hash mismatch (edited)"),
            (rid(20), "prev does not link to the record before (a record was removed or reordered)"),
        ]
    else:  # its hash no longer matches, and the next record no longer links to it
        assert problems == [
            (rid(20), "hash mismatch (edited)"),
            (rid(21), "prev does not link to the record before (a record was removed or reordered)"),
        ]


def test_edited_and_rehashed_record():
    records, head = build()
    log = stored(records)
    r = log[30]
    r["event"]["user"]["username"] = "somebody-else"
    r["hash"] = record_hash(r["chain"], r["seq"], r["prev"], r["event"])
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(31), "prev does not link to the record before (a record was removed or reordered)")
    ]


def test_edited_and_rehashed_last_record():
    records, head = build()
    log = stored(records)
    r = log[49]
    r["event"]["verb"] = "delete"
    r["hash"] = record_hash(r["chain"], r["seq"], r["prev"], r["event"])
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(49), "the head's hash is not this record's (the last record was replaced)")
    ]


def test_removed_record_in_the_middle():
    records, head = build()
    log = stored(records)
    log[25] = None  # read by id: nothing stored there
    assert named(verify_chain("router-a", log, head=head)) == [(rid(25), "missing")]


def test_removed_records_in_a_key_ordered_scan():
    records, head = build()
    scan = [(rid(r["seq"]), r) for r in stored(records) if r["seq"] not in (10, 30, 31, 32)]
    assert named(verify_chain("router-a", scan, head=head)) == [
        (rid(10), "missing"),
        (rid(30), "missing (3 records, up to seq 32)"),
    ]
    report = verify({"router-a": scan}, {"router-a": head})
    assert report.records == 46 and [p.record for p in report.problems] == [rid(10), rid(30)]


def test_removed_first_record():
    records, head = build()
    scan = [(rid(r["seq"]), r) for r in stored(records)[1:]]
    assert named(verify_chain("router-a", scan, head=head)) == [(rid(0), "missing")]


def test_removed_record_and_the_tail_rewritten():
    """Record 25 deleted and every later one rewritten down one slot as a valid chain (the
    attacker re-hashes the whole tail): only the head tells, which the rewriter cannot move."""
    records, head = build()
    chain = Chain("router-a", 25, records[24]["hash"])
    log = stored(records[:25]) + [chain.append(r["event"]) for r in records[26:]]
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(49), "chain ends at seq 48 but the head says 49 (records removed at the end)"),
    ]
    log.append(chain.append(event(99)))  # and a made-up record to reach the head's length
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(49), "the head's hash is not this record's (the last record was replaced)"),
    ]


def test_removed_last_record():
    records, head = build()
    log = stored(records)[:-1]
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(49), "chain ends at seq 48 but the head says 49 (records removed at the end)")
    ]
    assert verify_chain("router-a", log, head=None) == []  # without the head it goes unseen


def test_removed_every_record():
    _, head = build()
    assert named(verify_chain("router-a", [], head=head)) == [
        (rid(0), "the chain has no records but the head says it ends at seq 49 (records removed at the end)")
    ]
    report = verify({}, {"router-a": head})
    assert not report.ok and report.chains == 1 and report.records == 0
    assert [p.record for p in report.problems] == [rid(0)]


def test_record_past_the_head():
    records, _ = build()
    log = stored(records)
    rolled_back = Head(48, records[47]["hash"])
    assert named(verify_chain("router-a", log, head=rolled_back)) == [
        (
            rid(48),
            "record past the head: the head says the chain ends at seq 47 "
            "(appended without the head, or the head was rolled back)",
        )
    ]


def test_reordered_records():
    records, head = build()
    log = stored(records)
    log[12], log[13] = log[13], log[12]  # the contents of two stored slots swapped
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(12), "record names chain 'router-a' / seq 13 but is stored as chain 'router-a' / seq 12"),
        (rid(13), "record names chain 'router-a' / seq 12 but is stored as chain 'router-a' / seq 13"),
    ]


def test_reordered_and_renumbered_records():
    """Two records swapped, their seq and prev rewritten and re-hashed so each looks right where
    it now is: the links break."""
    records, head = build()
    log = stored(records)
    a, b = log[13], log[12]
    a["seq"], b["seq"] = 12, 13
    a["prev"] = log[11]["hash"]
    a["hash"] = record_hash("router-a", 12, a["prev"], a["event"])
    b["prev"] = a["hash"]
    b["hash"] = record_hash("router-a", 13, b["prev"], b["event"])
    log[12], log[13] = a, b
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(14), "prev does not link to the record before (a record was removed or reordered)")
    ]


def test_reordered_in_a_key_ordered_scan():
    records, head = build()
    log = stored(records)
    scan = [(rid(r["seq"]), r) for r in log]
    scan[12], scan[13] = (rid(12), log[13]), (rid(13), log[12])
    assert [p.record for p in verify_chain("router-a", scan, head=head)] == [rid(12), rid(13)]


def test_scan_with_odd_keys():
    records, head = build(n=4)
    log = stored(records)
    scan = [(rid(0), log[0]), ("junk", log[1]), (rid(1), log[1]), (rid(3), log[3]), (rid(2), log[2])]
    assert named(verify_chain("router-a", scan, head=head)) == [
        ("router-a", "something stored under 'junk', which is not a record id"),
        (rid(2), "missing"),
        (rid(2), "stored out of order: after seq 3"),
    ]
    elsewhere = [(rid(0, "router-b"), log[0])]
    assert named(verify_chain("router-a", elsewhere, head=(1, log[0]["hash"]))) == [
        (rid(0), "stored under chain 'router-b' but read as part of chain 'router-a'"),
    ]


def test_tampered_seq():
    records, head = build()
    log = stored(records)
    log[5]["seq"] = 6
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(5), "hash mismatch (edited)"),
        (rid(5), "record names chain 'router-a' / seq 6 but is stored as chain 'router-a' / seq 5"),
    ]


def test_tampered_chain():
    records, head = build()
    log = stored(records)
    log[8]["chain"] = "router-b"
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(8), "hash mismatch (edited)"),
        (rid(8), "record names chain 'router-b' / seq 8 but is stored as chain 'router-a' / seq 8"),
    ]


def test_record_copied_from_another_chain():
    a, head_a = build("router-a", 10)
    b, _ = build("router-b", 10)
    log = stored(a)
    log[4] = stored(b)[4]  # self-consistent, but it belongs to another chain
    assert named(verify_chain("router-a", log, head=head_a)) == [
        (rid(4), "record names chain 'router-b' / seq 4 but is stored as chain 'router-a' / seq 4"),
    ]


def test_malformed_records():
    records, head = build(n=6)
    log = stored(records)
    del log[1]["hash"]
    log[3]["seq"] = "3"
    log[5] = "not a record"
    assert named(verify_chain("router-a", log, head=head)) == [
        (rid(1), "malformed record: no hash"),
        (rid(3), "malformed record: seq is str, not an integer"),
        (rid(5), "malformed record: expected an object, got str"),
    ]


def test_problems_are_bounded():
    records, head = build(n=300)
    log = stored(records)
    for r in log:
        r["event"]["verb"] = "delete"
    problems = verify_chain("router-a", log, head=head)
    assert len(problems) == PROBLEMS_PER_CHAIN_MAX + 1
    assert all(p.what == "hash mismatch (edited)" for p in problems[:-1])
    assert problems[-1] == Problem("router-a", 100, "200 more problems from here not listed")


def test_verify_from_a_later_start():
    records, head = build()
    log = stored(records)[20:]
    assert verify_chain("router-a", log, start=20, start_prev=records[19]["hash"], head=head) == []
    assert verify_chain("router-a", log, start=20, head=head) == []  # first prev unchecked
    assert named(verify_chain("router-a", log, start=20, start_prev="0" * 64, head=head)) == [
        (rid(20), "prev does not link to the record before (a record was removed or reordered)")
    ]
    report = verify({"router-a": log}, {"router-a": head}, starts={"router-a": (20, records[19]["hash"])})
    assert report.ok and report.records == 30


def test_several_chains():
    a, head_a = build("router-a", 20)
    b, head_b = build("router-b", 30)
    c, head_c = build("router-c", 5)
    logs = {"router-a": stored(a), "router-b": stored(b), "router-c": stored(c)}
    heads = {"router-a": head_a, "router-b": head_b, "router-c": head_c}
    report = verify(logs, heads)
    assert report.ok and report.records == 55 and report.chains == 3

    tampered = copy.deepcopy(logs)
    tampered["router-a"][3]["event"]["verb"] = "drop_collection"
    tampered["router-b"][10] = None
    tampered["router-c"].pop()
    report = verify(tampered, heads)
    assert not report.ok and report.records == 53 and report.chains == 3
    assert named(list(report.problems)) == [
        (rid(3, "router-a"), "hash mismatch (edited)"),
        (rid(10, "router-b"), "missing"),
        (rid(4, "router-c"), "chain ends at seq 3 but the head says 4 (records removed at the end)"),
    ]


def test_chains_without_heads_and_heads_without_chains():
    a, _ = build("router-a", 3)
    _, head_b = build("router-b", 3)
    report = verify({"router-a": stored(a)}, {"router-b": head_b})
    assert report.chains == 2 and report.records == 3
    assert named(list(report.problems)) == [
        ("router-a", "the chain has records but no head (a removed tail would go unseen)"),
        (
            rid(0, "router-b"),
            "the chain has no records but the head says it ends at seq 2 (records removed at the end)",
        ),
    ]
    report = verify({"bad id!": []}, {})
    assert named(list(report.problems)) == [("bad id!", "not a chain id (1..64 characters [a-zA-Z0-9_-])")]


# ------------------------------------------------------------------------------------------------
# tail


def test_matches():
    e = event(0)  # upsert by an acme key on acme's points, at T0 + 3 ms
    assert matches(e)
    assert matches(e, tenant="acme") and not matches(e, tenant="other")
    assert matches(e, verb="upsert") and not matches(e, verb="delete")
    assert matches(e, verb=["delete", "upsert"]) and not matches(e, verb=("delete",))
    assert matches(e, since_ts=T0) and not matches(e, since_ts=T0 + timedelta(seconds=1))
    assert matches(e, since_ts=T0.timestamp()) and not matches(e, since_ts=T0.timestamp() + 1)
    assert matches(e, since_ts="2025-03-04T05:06:07Z") and not matches(e, since_ts="2025-03-04T06:00:00Z")
    assert matches(e, since_ts="2025-03-04T07:06:07+02:00")  # the same moment as T0, minus 0.89 s
    assert matches(e, tenant="acme", verb="upsert", since_ts=T0)
    assert not matches(e, tenant="acme", verb="upsert", since_ts=T0 + timedelta(hours=1))


def test_matches_tenant_of_the_object():
    # an admin of "default" acting on acme's key and on the tenant acme itself
    key = make_event(
        verb="revoke_key", code=200, tenant="default", resource="keys", namespace="acme", name="k"
    )
    ten = make_event(verb="delete_tenant", code=200, tenant="default", resource="tenants", name="acme")
    anon = make_event(verb="authenticate", code=401, reason="UNAUTHENTICATED")
    for e in (key, ten):
        assert matches(e, tenant="acme") and matches(e, tenant="default") and not matches(e, tenant="x")
    assert not matches(anon, tenant="acme") and matches(anon)


def test_matches_tolerates_damaged_events():
    assert not matches({}, tenant="acme")
    assert not matches({"stageTimestamp": "yesterday"}, since_ts=T0)
    assert not matches({"user": {"extra": "acme"}}, tenant="acme")
    assert matches({"verb": "upsert"}, verb="upsert")


def test_format_line():
    records, _ = build(n=3)
    assert format_line(records[2]) == (
        "2025-03-04T05:06:09.893123Z upsert 0123456789ab acme points/acme/docs 200 OK [router-a:000000000002]"
    )
    chain = Chain("r")
    fail = chain.append(
        make_event(verb="authenticate", code=401, reason="UNAUTHENTICATED", completed=T0, message="x\ny")
    )
    assert (
        format_line(fail)
        == "2025-03-04T05:06:07.890123Z authenticate - - - 401 UNAUTHENTICATED [r:000000000000]"
    )
    odd = chain.append(
        make_event(
            verb="create_collection",
            code=200,
            tenant="t",
            resource="collections",
            name="a b\nc",
            completed=T0,
        )
    )
    line = format_line(odd)
    assert "\n" not in line and "collections/t/a\\x20b\\x0ac" in line
    assert format_line({}) == "- - - - - - - [?]"
    assert format_line({"chain": "r", "seq": 1, "event": "junk"}) == "- - - - - - - [r:000000000001]"
