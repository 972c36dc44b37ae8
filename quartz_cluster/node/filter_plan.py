"""How a filtered search runs on a shard, from the exact number of points the filter admits
(the payload index counts them, ADR 3): brute force over those points, or the HNSW graph
walked with the filter.

Brute force costs about one distance per candidate; the filtered graph walk costs about
ef-many expansions divided by the share of points admitted (the walk steps over the rejected
ones). Measured on 384-d pydocs shards of 20k and 60k points, one query at ef 32
(docs/BENCHMARKS.md): brute force wins below ~15-20 % selectivity (0.07 ms against 0.8 ms at
5 % of 20k), the graph above it (0.12 ms against 2.5 ms at 76 % of 20k). Below ~10 % the graph
also loses recall, which brute force never does."""

from __future__ import annotations

from quartz_cluster import limits

EXACT = "exact"
GRAPH = "hnsw-filtered"


def filter_plan(candidates: int, live: int) -> str:
    """EXACT or GRAPH for a filter admitting `candidates` of a shard's `live` points."""
    if candidates > limits.EXACT_SEARCH_CANDIDATES_MAX:
        return GRAPH  # brute force is bounded, whatever the share
    if candidates <= limits.EXACT_SEARCH_ALWAYS_CANDIDATES_MAX:
        return EXACT  # exact and ~0.07 ms: no reason to give up recall on a small shard
    if candidates < limits.GRAPH_FILTER_SELECTIVITY_MIN * live:
        return EXACT
    return GRAPH
