"""Verdicts from a history. Pure: everything it needs is passed in, so it is unit-tested.

In Jepsen's terms, for writes with unique ids:
  lost        acknowledged, but absent after the cluster converged (must be empty)
  recovered   not acknowledged (error or timeout), yet present: fine, the outcome was unknown
  unexpected  read (by a get or a search) but never attempted by any writer (must be empty)
  duplicated  an id counted or returned twice (must be empty)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    divergent_shards: list[int] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated)


def check(
    attempted: set[str],
    acked: set[str],
    present: set[str],
    read_ids: set[str],
    result_lists: list[list[str]],
    stored_count: int,
    replica_states: dict[int, list[object]],
) -> Verdict:
    """attempted/acked: ids writers tried / got acknowledged; present: ids a strong read of every
    attempted id returned after convergence; read_ids: every id any read returned during the run;
    result_lists: each search's hit ids (an id twice in one list is a duplicate); stored_count:
    the collection's count after convergence; replica_states: per shard, one comparable state
    per replica (they must all be equal)."""
    v = Verdict()
    v.lost = sorted(acked - present)
    v.recovered = sorted((attempted - acked) & present)
    v.unexpected = sorted(read_ids - attempted)
    dup: set[str] = set()
    for ids in result_lists:
        dup.update(pid for pid, n in Counter(ids).items() if n > 1)
    if stored_count > len(present):
        dup.add(f"<count {stored_count} > {len(present)} distinct ids present>")
    v.duplicated = sorted(dup)
    v.divergent_shards = sorted(
        s for s, states in replica_states.items() if any(x != states[0] for x in states)
    )
    return v


def availability(events: list[dict], bucket_s: float = 1.0) -> list[dict]:
    """Per time bucket: successful and failed writes and reads (by the time they completed)."""
    if not events:
        return []
    end = max(e["t1"] for e in events if "t1" in e) if any("t1" in e for e in events) else 0.0
    buckets = [
        {"t": i * bucket_s, "write_ok": 0, "write_err": 0, "read_ok": 0, "read_err": 0, "eventual_read_ok": 0}
        for i in range(int(end // bucket_s) + 1)
    ]
    for e in events:
        if e.get("type") not in ("write", "read") or "t1" not in e:
            continue
        b = buckets[int(e["t1"] // bucket_s)]
        b[f"{e['type']}_{'ok' if e['ok'] else 'err'}"] += 1
        if e["type"] == "read" and e["ok"] and e.get("kind") in ("search", "get-eventual"):
            b["eventual_read_ok"] += 1
    return buckets


def recovery_times(events: list[dict]) -> list[dict]:
    """For each fault: seconds from its injection to the first acknowledged write that started
    after it (None if none did before the run ended)."""
    writes = sorted((e for e in events if e.get("type") == "write" and e["ok"]), key=lambda e: e["t0"])
    out = []
    for f in (e for e in events if e.get("type") == "fault"):
        first = next((w for w in writes if w["t0"] >= f["t"]), None)
        out.append(
            {
                "fault": f["fault"],
                "target": f.get("target"),
                "t": f["t"],
                "recovered_after_s": None if first is None else round(first["t1"] - f["t"], 3),
            }
        )
    return out
