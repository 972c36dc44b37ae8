"""Where replicas go. Pure and deterministic: the same inputs give the same placement."""

from __future__ import annotations

from collections import deque
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

    Replicas: each goes to the node with the fewest replicas so far (counting what other
    collections already put there); ties break by a stable hash so collections spread out.
    Primaries: a first greedy pick per shard, then rebalanced along augmenting paths (move a
    primary from the busiest node to another replica of that shard, and so on) until no node
    has two primaries more than another, or no move can improve it."""
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
    return _balance_primaries(out, prim)


def _balance_primaries(placement: list[tuple[str, ...]], prim: dict[str, int]) -> list[tuple[str, ...]]:
    shards = [list(r) for r in placement]
    for _ in range(len(shards) * len(prim) + 1):  # each round moves one primary; bounded
        top = max(prim.values())
        targets = {n for n, c in prim.items() if c <= top - 2}
        if not targets:
            break
        # Breadth-first from the busiest nodes: an edge u -> v is "u leads a shard that v holds".
        queue = deque(n for n, c in prim.items() if c == top)
        seen, via, found = set(queue), {}, None
        while queue and found is None:
            u = queue.popleft()
            for si, replicas in enumerate(shards):
                if replicas[0] != u:
                    continue
                for v in replicas[1:]:
                    if v in seen:
                        continue
                    seen.add(v)
                    via[v] = (u, si)
                    if v in targets:
                        found = v
                        break
                    queue.append(v)
                if found is not None:
                    break
        if found is None:
            break
        v = found
        while v in via:  # shift leadership one step along the path
            u, si = via[v]
            shards[si].remove(v)
            shards[si].insert(0, v)
            prim[u] -= 1
            prim[v] += 1
            v = u
    return [tuple(r) for r in shards]
