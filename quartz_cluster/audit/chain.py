"""Hash-chained, append-only audit records, their verification, and the filtering and one-line
form of `quartz audit tail`. Pure: no I/O.

The log is a set of chains, one per writer (e.g. one per router process incarnation), so writers
never coordinate. A chain id is a name of 1..64 characters [a-zA-Z0-9_-]. A record is

    {"chain": id, "seq": n, "prev": <hash of record n-1, "" for n = 0>, "event": {...}, "hash": h}

with h = sha256 (hex) of the canonical JSON (orjson, sorted keys) of {chain, seq, prev, event}.
A record is stored under `record_id(chain, seq)` ("chain:000000000042", which sorts by seq), and
each writer keeps a head: (seq of its next record, hash of its last record).

What `verify_chain` detects, each named by the record it concerns:
- an edited record: its hash no longer matches its contents;
- an edited and re-hashed record: the next record's prev no longer links to it;
- a removed record: a gap (a slot without a record), or, at the end, the head is past the chain;
- reordered records, or a record copied elsewhere: it names another chain or seq than the one it
  is stored as;
- a replaced tail: the head's hash is not the last record's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import orjson

from quartz_cluster.audit.event import parse_timestamp

CHAIN_ID_RE = re.compile(r"[a-zA-Z0-9_-]{1,64}")
SEQ_DIGITS = 12
SEQ_MAX = 10**SEQ_DIGITS - 1
PROBLEMS_PER_CHAIN_MAX = 100
_RECORD_ID_RE = re.compile(rf"([a-zA-Z0-9_-]{{1,64}}):([0-9]{{{SEQ_DIGITS}}})")
_HASH_RE = re.compile(r"[0-9a-f]{64}")
_FIELDS = ("chain", "seq", "prev", "event", "hash")


def check_chain_id(chain_id: str) -> str:
    if not isinstance(chain_id, str) or CHAIN_ID_RE.fullmatch(chain_id) is None:
        raise ValueError(f"chain id: expected 1..64 characters [a-zA-Z0-9_-], got {chain_id!r}")
    return chain_id


def record_id(chain: str, seq: int) -> str:
    """The key a record is stored under: f"{chain}:{seq:012d}" (sorts in seq order)."""
    check_chain_id(chain)
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= SEQ_MAX:
        raise ValueError(f"seq: expected 0..{SEQ_MAX}, got {seq!r}")
    return f"{chain}:{seq:0{SEQ_DIGITS}d}"


def parse_record_id(text: str) -> tuple[str, int]:
    """(chain, seq) of a record id; ValueError if it is not one."""
    m = _RECORD_ID_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"record id: expected <chain>:<{SEQ_DIGITS} digits>, got {text!r}")
    return m.group(1), int(m.group(2))


def canonical(value: object) -> bytes:
    """The canonical JSON of a value: orjson with sorted keys (no whitespace)."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def record_hash(chain: str, seq: int, prev: str, event: dict) -> str:
    """sha256 (hex) of the canonical JSON of {chain, seq, prev, event}."""
    body = {"chain": chain, "seq": seq, "prev": prev, "event": event}
    return hashlib.sha256(canonical(body)).hexdigest()


class Head(NamedTuple):
    """Where a chain stands: the seq of its next record and the hash of its last ("" if none)."""

    seq: int
    hash: str


class Chain:
    """One writer's chain. `append` is the only way forward; resume a chain after a restart with
    the head it had stored (seq of the next record, hash of the last)."""

    def __init__(self, chain_id: str, seq: int = 0, prev: str = "") -> None:
        self.chain_id = check_chain_id(chain_id)
        record_id(chain_id, seq)  # checks seq
        if seq == 0 and prev != "":
            raise ValueError("prev: a chain starting at seq 0 has no previous record (prev must be '')")
        if seq > 0 and (not isinstance(prev, str) or _HASH_RE.fullmatch(prev) is None):
            raise ValueError(f"prev: expected the 64-hex hash of record {seq - 1}, got {prev!r}")
        self._seq = seq
        self._prev = prev

    @property
    def head(self) -> Head:
        return Head(self._seq, self._prev)

    def append(self, event: dict) -> dict:
        """The next record holding `event`. The record holds a copy of the event as its canonical
        JSON reads back, so what is stored is exactly what was hashed (and later changes to
        `event` do not touch it). TypeError if the event is not JSON (orjson) serialisable."""
        if not isinstance(event, dict):
            raise TypeError(f"event: expected a dict, got {type(event).__name__}")
        record_id(self.chain_id, self._seq)  # checks the seq has not run out
        stored = orjson.loads(canonical(event))
        digest = record_hash(self.chain_id, self._seq, self._prev, stored)
        record = {"chain": self.chain_id, "seq": self._seq, "prev": self._prev, "event": stored}
        record["hash"] = digest
        self._seq += 1
        self._prev = digest
        return record


@dataclass(frozen=True, slots=True)
class Problem:
    """What is wrong, and where: `seq` None means the chain as a whole."""

    chain: str
    seq: int | None
    what: str

    @property
    def record(self) -> str:
        """The record named: its record id ("chain:000000000042"), or the chain id."""
        if self.seq is None:
            return self.chain
        return f"{self.chain}:{self.seq:0{SEQ_DIGITS}d}"

    def __str__(self) -> str:
        return f"{self.record}: {self.what}"


@dataclass(frozen=True, slots=True)
class Report:
    problems: tuple[Problem, ...]
    records: int  # records checked (slots holding something)
    chains: int

    @property
    def ok(self) -> bool:
        return not self.problems


def _malformed(record: object) -> str | None:
    """Why `record` is not a record at all (None when its fields have the right types)."""
    if not isinstance(record, dict):
        return f"malformed record: expected an object, got {type(record).__name__}"
    absent = [f for f in _FIELDS if f not in record]
    if absent:
        return f"malformed record: no {', '.join(absent)}"
    seq = record["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool):
        return f"malformed record: seq is {type(seq).__name__}, not an integer"
    for field in ("chain", "prev", "hash"):
        if not isinstance(record[field], str):
            return f"malformed record: {field} is {type(record[field]).__name__}, not a string"
    if not isinstance(record["event"], dict):
        return f"malformed record: event is {type(record['event']).__name__}, not an object"
    return None


def _hash_ok(record: dict) -> bool:
    try:
        digest = record_hash(record["chain"], record["seq"], record["prev"], record["event"])
    except (TypeError, orjson.JSONEncodeError):  # e.g. an integer out of 64 bits
        return False
    return digest == record["hash"]


def verify_chain(
    chain_id: str,
    records: Iterable[dict | tuple[str, dict | None] | None],
    start: int = 0,
    start_prev: str | None = None,
    head: tuple[int, str] | None = None,
) -> list[Problem]:
    """Every problem of one chain, in seq order (verification goes on after a problem), at most
    PROBLEMS_PER_CHAIN_MAX of them and then one saying how many more there were.

    records: the chain's slots in seq order from `start`. An item is either
    - a record or None, stored as the next seq (None: the store has no record there), or
    - a pair (record id it is stored under, record or None), e.g. from a key-ordered scan: a
      stored seq that skips ahead leaves a gap, which is reported as missing (a key that is not
      a record id takes no slot; it is reported against the chain).
    start_prev: the hash of record start-1 ("" when start is 0, the default; None when start > 0:
    the first record's prev is then not checked).
    head: the writer's (next seq, last hash); None when unknown (a removed tail then goes unseen).
    """
    check_chain_id(chain_id)
    problems: list[Problem] = []
    dropped: list[int | None] = []  # seq of the first problem not listed; how many

    def report(seq: int | None, what: str) -> None:
        if len(problems) < PROBLEMS_PER_CHAIN_MAX:
            problems.append(Problem(chain_id, seq, what))
        else:
            if not dropped:
                dropped.extend([seq, 0])
            dropped[1] += 1

    if start_prev is None and start == 0:
        start_prev = ""
    expected = start  # seq of the next slot
    # The stored hash of the record in slot expected-1, or None when there is nothing to link to
    # (the slot is missing, or its record was reported as not belonging there).
    link: str | None = start_prev
    last_hash = ""  # stored hash of the record in the last slot, "" if that slot was empty
    for item in records:
        if isinstance(item, tuple):
            stored_id, record = item
            try:
                stored_chain, seq = parse_record_id(stored_id)
            except ValueError:
                report(None, f"something stored under {stored_id!r}, which is not a record id")
                continue
            if stored_chain != chain_id:
                report(seq, f"stored under chain {stored_chain!r} but read as part of chain {chain_id!r}")
            if seq < expected:
                report(seq, f"stored out of order: after seq {expected - 1}")
                continue
            if seq > expected:
                gap = seq - expected
                report(expected, "missing" if gap == 1 else f"missing ({gap} records, up to seq {seq - 1})")
                link = None
        else:
            record, seq = item, expected
        expected = seq + 1
        if record is None:
            report(seq, "missing")
            link, last_hash = None, ""
            continue
        why = _malformed(record)
        if why is not None:
            report(seq, why)
            link, last_hash = None, ""
            continue
        if not _hash_ok(record):
            report(seq, "hash mismatch (edited)")
        if record["chain"] != chain_id or record["seq"] != seq:
            report(
                seq,
                f"record names chain {record['chain']!r} / seq {record['seq']} "
                f"but is stored as chain {chain_id!r} / seq {seq}",
            )
            link, last_hash = None, record["hash"]
            continue
        if link is not None and record["prev"] != link:
            report(seq, "prev does not link to the record before (a record was removed or reordered)")
        link = last_hash = record["hash"]

    if head is not None:
        head_seq, head_hash = head
        if head_seq > expected:
            if expected == start:
                what = f"the chain has no records but the head says it ends at seq {head_seq - 1}"
            else:
                what = f"chain ends at seq {expected - 1} but the head says {head_seq - 1}"
            report(expected, f"{what} (records removed at the end)")
        elif head_seq < expected:
            report(
                head_seq,
                f"record past the head: the head says the chain ends at seq {head_seq - 1} "
                f"(appended without the head, or the head was rolled back)",
            )
        elif expected > start and last_hash and head_hash != last_hash:
            report(expected - 1, "the head's hash is not this record's (the last record was replaced)")
    if dropped:
        problems.append(Problem(chain_id, dropped[0], f"{dropped[1]} more problems from here not listed"))
    return problems


def verify(
    records_by_chain: Mapping[str, list],
    heads: Mapping[str, tuple[int, str]],
    starts: Mapping[str, tuple[int, str | None]] | None = None,
) -> Report:
    """Verify every chain. records_by_chain: chain id -> its slots (as for verify_chain); heads:
    chain id -> (next seq, last hash); starts: chain id -> (first seq, hash of the record before
    it) for chains whose older records were deliberately dropped (default: seq 0). A chain with
    records but no head, or a head with no records, is a problem too."""
    problems: list[Problem] = []
    checked = 0
    names = sorted(set(records_by_chain) | set(heads))
    for name in names:
        if not isinstance(name, str) or CHAIN_ID_RE.fullmatch(name) is None:
            problems.append(Problem(str(name), None, "not a chain id (1..64 characters [a-zA-Z0-9_-])"))
            continue
        start, start_prev = (starts or {}).get(name, (0, None))
        records = list(records_by_chain.get(name, ()))
        checked += sum(1 for r in records if (r[1] if isinstance(r, tuple) else r) is not None)
        head = heads.get(name)
        if head is None and records:
            problems.append(
                Problem(name, None, "the chain has records but no head (a removed tail would go unseen)")
            )
        problems.extend(verify_chain(name, records, start, start_prev, head))
    return Report(tuple(problems), checked, len(names))


def _since(value: datetime | float | str) -> datetime:
    if isinstance(value, str):
        return parse_timestamp(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("since: a naive datetime has no time zone; pass an aware one")
        return value
    return datetime.fromtimestamp(value, UTC)


def _get(value: object, *path: str) -> object:
    """value[path[0]][path[1]]...; None where a step is absent or not an object (damaged records)."""
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def event_tenants(event: dict) -> set[str]:
    """The tenants an event concerns: the caller's, the object's namespace, and the tenant
    acted on (a "tenants" object)."""
    caller = _get(event, "user", "extra", "tenant")
    tenants = {t for t in caller if isinstance(t, str)} if isinstance(caller, list) else set()
    namespace, name = _get(event, "objectRef", "namespace"), _get(event, "objectRef", "name")
    if isinstance(namespace, str) and namespace:
        tenants.add(namespace)
    if _get(event, "objectRef", "resource") == "tenants" and isinstance(name, str) and name:
        tenants.add(name)
    return tenants


def matches(
    event: dict,
    tenant: str | None = None,
    since_ts: datetime | float | str | None = None,
    verb: str | Iterable[str] | None = None,
) -> bool:
    """Whether `quartz audit tail` shows the event: it concerns `tenant` (event_tenants), it was
    answered at or after `since_ts` (stageTimestamp; an aware datetime, seconds since the epoch
    or RFC 3339), and its verb is `verb` (or one of them). None: no condition. An event without a
    readable timestamp does not match a `since_ts`."""
    if tenant is not None and tenant not in event_tenants(event):
        return False
    if verb is not None:
        verbs = {verb} if isinstance(verb, str) else set(verb)
        if _get(event, "verb") not in verbs:
            return False
    if since_ts is not None:
        try:
            at = parse_timestamp(_get(event, "stageTimestamp"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False
        if at < _since(since_ts):
            return False
    return True


def _field(value: object) -> str:
    """A value for one space-separated column: "-" when empty; whitespace and control characters
    escaped (\\x0a), so a line stays one line of columns."""
    text = "" if value is None else str(value)
    if not text:
        return "-"
    return "".join(c if c.isprintable() and not c.isspace() else _escape(c) for c in text)


def _escape(c: str) -> str:
    return f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"


def format_line(record: dict) -> str:
    """One human line: time, verb, user (key id), tenant (the caller's), object
    (resource/namespace/name), status code and reason, and the record id. Tolerates damaged
    records (what is absent shows as "-")."""
    event = _get(record, "event")
    tenants = _get(event, "user", "extra", "tenant")
    resource = _get(event, "objectRef", "resource")
    path = "/".join(
        str(p) for p in (_get(event, "objectRef", "namespace"), _get(event, "objectRef", "name")) if p
    )
    obj = f"{resource or '-'}/{path}" if path else resource
    try:
        where = record_id(record["chain"], record["seq"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        where = "?"
    columns = (
        _get(event, "stageTimestamp"),
        _get(event, "verb"),
        _get(event, "user", "username"),
        tenants[0] if isinstance(tenants, list) and tenants else None,
        obj,
        _get(event, "responseStatus", "code"),
        _get(event, "responseStatus", "reason"),
    )
    return " ".join(_field(c) for c in columns) + f" [{_field(where)}]"
