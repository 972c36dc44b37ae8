"""Merging top-k lists: per shard on a node that searched several, per node on the router.
Pure: no gRPC, no storage."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

# queries merged per numpy step (1,024 queries x 64 shards x k 1,024 at once would be 0.5 GB)
MERGE_CHUNK_QUERIES = 64
VECTORIZED_QUERIES_MIN = 8  # batches of fewer queries merge with a heap per query (1 query: 6 vs 11 us)
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
    if len(per_source[0]) < VECTORIZED_QUERIES_MIN:
        return _merge_small(metric, k, per_source)
    out: list = []
    for first in range(0, len(per_source[0]), MERGE_CHUNK_QUERIES):  # bounded memory per step
        out += _merge_block(
            metric, k, [results[first : first + MERGE_CHUNK_QUERIES] for results in per_source]
        )
    return out


def _merge_block(metric: str, k: int, per_source: Sequence[Sequence[Hits]]) -> list:
    # One matrix per block of queries: row q holds every source's scores for query q side by side
    # (source s in columns [s*width, (s+1)*width)), padded with the worst key; a stable sort per
    # row then orders by score, ties by source then rank, and only the k winners are touched in
    # Python. A NaN score is no hit (as in _merge_small).
    n_queries, n_sources = len(per_source[0]), len(per_source)
    width = max((len(r[1]) for results in per_source for r in results), default=0)
    if width == 0:
        return [([], [], []) for _ in range(n_queries)]
    keys = np.zeros((n_queries, n_sources * width))
    valid = np.zeros(keys.shape, dtype=bool)
    for s, results in enumerate(per_source):
        for q, (_, scores, _) in enumerate(results):
            if len(scores):
                keys[q, s * width : s * width + len(scores)] = scores
                valid[q, s * width : s * width + len(scores)] = True
    valid &= ~np.isnan(keys)
    if metric != "l2":  # higher is better: sort by the negated score
        np.negative(keys, out=keys)
    big = np.finfo(keys.dtype).max  # a real score of +-inf still sorts before the padding
    keys = np.where(valid, np.clip(keys, -big, big), np.inf)
    order = np.argsort(keys, axis=1, kind="stable")[:, :k]
    found = np.minimum(valid.sum(axis=1), k).tolist()
    out = []
    for q, (row, n) in enumerate(zip(order.tolist(), found, strict=True)):
        ids, scores, payloads = [], [], []
        for j in row[:n]:
            s, i = divmod(j, width)
            src_ids, src_scores, src_payloads = per_source[s][q]
            ids.append(src_ids[i])
            scores.append(src_scores[i])
            payloads.append(src_payloads[i] if src_payloads else b"")
        out.append((ids, scores, payloads))
    return out


def _merge_small(metric: str, k: int, per_source: Sequence[Sequence[Hits]]) -> list:
    """The same merge for a few queries, where numpy's per-call overhead would dominate."""
    sign = 1.0 if metric == "l2" else -1.0
    out = []
    for q in range(len(per_source[0])):
        candidates = []  # built eagerly: lazy generators here would bind the last source's lists
        for s, results in enumerate(per_source):
            ids, scores, payloads = results[q]
            for i, (pid, sc) in enumerate(zip(ids, scores, strict=True)):
                if sc == sc:  # a NaN score is no hit
                    candidates.append((sign * sc, s, i, pid, sc, payloads[i] if payloads else b""))
        best = heapq.nsmallest(k, candidates)
        out.append(([b[3] for b in best], [b[4] for b in best], [b[5] for b in best]))
    return out


def merge_hits(metric: str, k: int, per_source: Sequence[Sequence], count: int) -> tuple[list, list[str]]:
    """per_source[s][q]: source s's answer to query q, anything with ids, scores, payloads and
    plan (a shard's SearchHits on a node, a node's SearchResult on the router) -> per query
    (ids, scores, payloads) and plan. No source: `count` empty answers."""
    if not per_source:
        return [([], [], [])] * count, [""] * count
    if len(per_source) == 1:  # nothing to merge: the answers as they are
        return [(r.ids, r.scores, r.payloads) for r in per_source[0]], [r.plan for r in per_source[0]]
    merged = merge_top_k(metric, k, [[(r.ids, r.scores, r.payloads) for r in src] for src in per_source])
    return merged, merge_plans([[r.plan for r in src] for src in per_source])


def merge_plans(per_source: Sequence[Sequence[str]]) -> list[str]:
    """per_source[s][q] = how source s answered query q ("hnsw", "exact", or several joined by
    commas) -> per query the distinct plans, sorted, joined by commas."""
    if not per_source:
        return []
    return [
        ",".join(sorted({p for plans in column for p in plans.split(",") if p}))
        for column in zip(*per_source, strict=True)
    ]
