"""Merging top-k lists: per shard on a node that searched several, per node on the router.
Pure: no gRPC, no storage."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

Hits = tuple[Sequence[str], Sequence[float], Sequence[bytes]]  # ids, scores, payloads: best first


def merge_top_k(
    metric: str, k: int, per_source: Sequence[Sequence[Hits]]
) -> list[tuple[list[str], list[float], list[bytes]]]:
    """per_source[s][q] = (ids, scores, payloads) of source s (a shard, or a node's merged
    shards) for query q, each best first. Returns per query the best k overall, best first
    (cosine/ip: highest; l2: lowest). Each point lives on exactly one shard, and the sources
    cover disjoint shards, so no deduplication is needed."""
    if not per_source:
        return []
    if len(per_source) == 1:
        return [(list(i), list(s), list(p) if p else [b""] * len(i)) for i, s, p in per_source[0]]
    sign = 1.0 if metric == "l2" else -1.0
    out = []
    for q in range(len(per_source[0])):
        candidates = []  # built eagerly: lazy generators here would bind the last source's lists
        for s, results in enumerate(per_source):
            ids, scores, payloads = results[q]
            for i, (pid, sc) in enumerate(zip(ids, scores, strict=True)):
                candidates.append((sign * sc, s, i, pid, sc, payloads[i] if payloads else b""))
        best = heapq.nsmallest(k, candidates)
        out.append(([b[3] for b in best], [b[4] for b in best], [b[5] for b in best]))
    return out


def merge_plans(per_source: Sequence[Sequence[str]]) -> list[str]:
    """per_source[s][q] = how source s answered query q ("hnsw", "exact", or several joined by
    commas) -> per query the distinct plans, sorted, joined by commas."""
    if not per_source:
        return []
    return [
        ",".join(sorted({p for plans in column for p in plans.split(",") if p}))
        for column in zip(*per_source, strict=True)
    ]
