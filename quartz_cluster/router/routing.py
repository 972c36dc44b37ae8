"""Pure routing helpers: which shard owns which point, and which nodes to read shards from."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import numpy as np

from quartz_cluster.meta.schema import shard_of


def split_by_shard(ids: Sequence[str], shards: int) -> dict[int, np.ndarray]:
    """shard -> indices (into ids) of the points it owns, in request order."""
    owner = np.fromiter((shard_of(pid, shards) for pid in ids), dtype=np.int64, count=len(ids))
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return {s: order[bounds[s] : bounds[s + 1]] for s in range(shards) if bounds[s + 1] > bounds[s]}


def cover(holders: Mapping[int, Sequence[str]], rng: random.Random) -> list[tuple[str, list[int]]]:
    """Which node to read each shard from so that as few nodes as possible are called: shard ->
    the nodes able to answer it, in, (node, its shards) out; every shard in exactly one group,
    on a node that holds it. Greedy set cover (the node holding most of the shards still
    uncovered first), ties broken by `rng` so that reads spread over all replicas. With 3
    nodes and 3 shards x 2 replicas: 2 calls instead of 3."""
    uncovered = set(holders)
    groups: list[tuple[str, list[int]]] = []
    while uncovered:
        counts: dict[str, int] = {}
        for shard in uncovered:
            for node in holders[shard]:
                counts[node] = counts.get(node, 0) + 1
        if not counts:
            raise ValueError(f"shards {sorted(uncovered)} have no node to read from")
        most = max(counts.values())
        node = rng.choice(sorted(n for n, c in counts.items() if c == most))
        shards = sorted(s for s in uncovered if node in holders[s])
        groups.append((node, shards))
        uncovered.difference_update(shards)
    return groups
