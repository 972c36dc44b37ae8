"""Where replicas go. Pure and deterministic: the same inputs give the same placement."""

from __future__ import annotations

from collections.abc import Iterable

import xxhash

from quartz_cluster.errors import FailedPrecondition


def _tiebreak(*parts: object) -> int:
    return xxhash.xxh64_intdigest("/".join(map(str, parts)).encode())


def place_collection(
    collection_id: str,
    shards: int,
    replication_factor: int,
    nodes: Iterable[str],
    replicas_per_node: dict[str, int] | None = None,
    primaries_per_node: dict[str, int] | None = None,
) -> list[tuple[str, ...]]:
    """For each shard, `replication_factor` distinct nodes, primary first.

    Greedy balance: each replica goes to the node with the fewest replicas so far (counting
    what other collections already put there), and each shard's primary is the one of its
    nodes with the fewest primaries. Ties break by a stable hash so collections spread out."""
    live = sorted(set(nodes))
    if replication_factor > len(live):
        raise FailedPrecondition(
            f"replication_factor {replication_factor} needs as many live nodes; {len(live)} are live",
            "replication_factor",
        )
    load = {n: (replicas_per_node or {}).get(n, 0) for n in live}
    prim = {n: (primaries_per_node or {}).get(n, 0) for n in live}
    out = []
    for shard in range(shards):
        chosen = sorted(live, key=lambda n: (load[n], _tiebreak(collection_id, shard, n)))[
            :replication_factor
        ]
        primary = min(chosen, key=lambda n: (prim[n], load[n], _tiebreak(collection_id, shard, "p", n)))
        for n in chosen:
            load[n] += 1
        prim[primary] += 1
        out.append((primary, *[n for n in chosen if n != primary]))
    return out
