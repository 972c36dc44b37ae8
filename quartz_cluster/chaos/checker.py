"""Verdicts from a history. Pure: everything it needs is passed in, so it is unit-tested.

In Jepsen's terms, for writes with unique ids:
  lost        acknowledged, but absent after the cluster converged (must be empty)
  recovered   not acknowledged (error or timeout), yet present: fine, the outcome was unknown
  unexpected  read (by a get or a search) but never attempted by any writer (must be empty)
  duplicated  an id counted or returned twice (must be empty)
  stale       acknowledged before a strong read began, yet missing from its answer (must be
              empty: a strong read sees every write acknowledged before it)
  divergent   shards whose replicas hold different states after convergence (must be empty)
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Verdict:
    lost: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    divergent_shards: list[int] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated or self.stale or self.divergent_shards)


def check(
    attempted: set[str],
    acked: set[str],
    present: set[str],
    read_ids: set[str],
    result_lists: list[list[str]],
    stored_count: int,
    replica_states: dict[int, list[object]],
    strong_read_misses: list[str] = (),
) -> Verdict:
    """attempted/acked: ids writers tried / got acknowledged; present: ids a strong read of every
    attempted id returned after convergence; read_ids: every id any read returned during the run;
    result_lists: each search's hit ids (an id twice in one list is a duplicate); stored_count:
    the collection's count after convergence; replica_states: per shard, one comparable state
    per replica (they must all be equal); strong_read_misses: ids acknowledged before a strong
    read began that it did not return."""
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
    v.stale = sorted(set(strong_read_misses))
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
    after it (None if none did before the run ended), and the reads that completed while it was
    in force (between the fault and its heal), eventual and strong, ok and failed; and the write
    outage: the longest time without an acknowledged write from the fault until its heal (a
    fault like losing etcd's quorum stops writes only once leases lapse, not at once)."""
    writes = sorted((e for e in events if e.get("type") == "write" and e["ok"]), key=lambda e: e["t0"])
    reads = [e for e in events if e.get("type") == "read"]
    heals = [e for e in events if e.get("type") == "heal"]
    end = max((e.get("t1", e.get("t", 0.0)) for e in events), default=0.0)
    out = []
    for f in (e for e in events if e.get("type") == "fault"):
        first = next((w for w in writes if w["t0"] >= f["t"]), None)
        heal = next(
            (
                h
                for h in heals
                if h["fault"] == f["fault"] and h.get("target") == f.get("target") and h["t"] >= f["t"]
            ),
            None,
        )
        healed_at = end if heal is None else heal["t"]
        acks = [f["t"], *sorted(w["t1"] for w in writes if f["t"] <= w["t1"] <= healed_at)]
        acks.append(min((w["t1"] for w in writes if w["t1"] > healed_at), default=end))
        outage = max(b - a for a, b in itertools.pairwise(acks))
        during = [r for r in reads if f["t"] <= r["t1"] <= healed_at]
        counts = {"eventual_ok": 0, "eventual_failed": 0, "strong_ok": 0, "strong_failed": 0}
        for r in during:
            kind = "strong" if r.get("kind") == "get-strong" else "eventual"
            counts[f"{kind}_{'ok' if r['ok'] else 'failed'}"] += 1
        out.append(
            {
                "fault": f["fault"],
                "target": f.get("target"),
                "t": f["t"],
                "healed_after_s": round(healed_at - f["t"], 3),
                "recovered_after_s": None if first is None else round(first["t1"] - f["t"], 3),
                "write_outage_s": round(outage, 3),
                "reads_during": counts,
            }
        )
    return out
