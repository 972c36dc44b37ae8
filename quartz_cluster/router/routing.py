"""Pure routing helpers: which shard owns which point, and merging per-shard top-k lists."""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np

from quartz_cluster.meta.schema import shard_of


def split_by_shard(ids: Sequence[str], shards: int) -> dict[int, np.ndarray]:
    """shard -> indices (into ids) of the points it owns, in request order."""
    owner = np.fromiter((shard_of(pid, shards) for pid in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return {s: order[bounds[s] : bounds[s + 1]] for s in range(shards) if bounds[s + 1] > bounds[s]}


def merge_top_k(
    metric: str, k: int, per_shard: Sequence[Sequence[tuple[Sequence[str], Sequence[float], Sequence[bytes]]]]
) -> list[tuple[list[str], list[float], list[bytes]]]:
    """per_shard[s][q] = (ids, scores, payloads) of shard s for query q, each best first.
    Returns per query the best k overall, best first (cosine/ip: highest; l2: lowest).
    Each point lives on exactly one shard, so no deduplication is needed."""
    if not per_shard:
        return []
    sign = 1.0 if metric == "l2" else -1.0
    out = []
    for q in range(len(per_shard[0])):
        candidates = []  # built eagerly: lazy generators here would bind the last shard's lists
        for s, results in enumerate(per_shard):
            ids, scores, payloads = results[q]
            for i, (pid, sc) in enumerate(zip(ids, scores, strict=True)):
                candidates.append((sign * sc, s, i, pid, sc, payloads[i] if payloads else b""))
        best = heapq.nsmallest(k, candidates)
        out.append(([b[3] for b in best], [b[4] for b in best], [b[5] for b in best]))
    return out
