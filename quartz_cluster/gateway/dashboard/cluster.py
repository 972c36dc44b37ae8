"""The cluster as the dashboard shows it: nodes, shards with each replica's lag, and every
tenant's collections, from the router's shard map (a coordinator.reconcile.ClusterView) and the
nodes' own stats of the replicas they hold.

Each live node is asked once (ListShards: the stats of all its replicas in one call, instead of
one Stats call per replica), with a short deadline and a bound on the calls in flight. A node
that does not answer is shown as unreachable, its replicas' positions unknown: the table is
always built. `table` is pure (unit-tested); `gather` and `status` do the calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from quartz_cluster.proto.quartz.v1 import node_pb2

STATS_TIMEOUT_S = 2.0  # a node that has not answered by then is shown as unreachable
STATS_CONCURRENCY = 8  # ListShards calls in flight at once, whatever the number of nodes
ERROR_CHARS_MAX = 200  # of a node's error message, as shown


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What a node reports of one replica it holds (node.proto ShardStats)."""

    log_end: int
    count: int
    role: str = ""
    health: str = ""
    storage_bytes: int = 0


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """A node's answer: its replicas by (collection id, shard), or why it gave none."""

    replicas: Mapping[tuple[str, int], ReplicaStats] = field(default_factory=dict)
    error: str | None = None
    rss_bytes: int = 0


def answer_of(resp: node_pb2.ListShardsResponse) -> NodeAnswer:
    replicas, rss = {}, 0
    for st in resp.shards:
        ref = st.spec.ref
        replicas[(ref.collection_id, ref.shard)] = ReplicaStats(
            log_end=st.log_end,
            count=st.count,
            role=st.role,
            health=st.health,
            storage_bytes=st.storage_bytes,
        )
        rss = max(rss, st.rss_bytes)
    return NodeAnswer(replicas, None, rss)


def _state(node: str, view, answers: Mapping[str, NodeAnswer], key: tuple[str, int]) -> str:
    if node not in view.nodes:
        return "down"  # no lease: the process is gone or cut off from etcd
    a = answers.get(node)
    if a is None or a.error is not None:
        return "unreachable"
    return "ok" if key in a.replicas else "missing"  # missing: being created, or not yet opened


def table(view, answers: Mapping[str, NodeAnswer]) -> dict:
    """The dashboard's cluster table (the shape of models.ClusterStatus). `answers`: each node
    asked, by id. A replica's lag is how many log entries it is behind its primary's log end
    (None when either position is unknown)."""
    owners = {c.id: c for c in view.collections.values()}
    unhealthy = {
        n: rec.health for n, rec in view.nodes.items() if getattr(rec, "health", "")
    }  # the node reports it cannot write (disk full, checkpoints failing)
    shards = []
    for cid, by_shard in sorted(
        view.shards.items(),
        key=lambda kv: ((owners[kv[0]].tenant, owners[kv[0]].name) if kv[0] in owners else ("?", kv[0]),),
    ):
        if cid in view.tombstones:
            continue
        coll = owners.get(cid)
        for s, (rec, _) in sorted(by_shard.items()):
            in_sync = [i.node for i in rec.in_sync]
            primary_stats = _stats(answers, rec.primary, (cid, s))
            replicas = []
            for node in rec.replicas:
                st = _stats(answers, node, (cid, s))
                lag = None
                if st is not None and primary_stats is not None:
                    lag = max(0, primary_stats.log_end - st.log_end)
                replicas.append(
                    {
                        "node": node,
                        "primary": node == rec.primary,
                        "in_sync": node in in_sync,
                        "state": _state(node, view, answers, (cid, s)),
                        "log_end": None if st is None else st.log_end,
                        "lag": lag,
                        "count": None if st is None else st.count,
                        "health": "" if st is None else st.health,
                    }
                )
            shards.append(
                {
                    "tenant": coll.tenant if coll else "?",
                    "collection": coll.name if coll else rec.collection,
                    "collection_id": cid,
                    "shard": s,
                    "epoch": rec.epoch,
                    "primary": rec.primary,
                    "ready": rec.ready,
                    "in_sync": in_sync,
                    "replication_factor": coll.replication_factor if coll else len(rec.replicas),
                    "replicas": replicas,
                }
            )
    known = set(view.nodes) | {
        n for sh in shards for n in (sh["primary"], *(r["node"] for r in sh["replicas"]))
    }
    known.discard("")
    nodes = []
    for n in sorted(known):
        a = answers.get(n)
        alive = n in view.nodes
        nodes.append(
            {
                "id": n,
                "address": view.nodes[n].address if alive else None,
                "alive": alive,
                "reachable": None if not alive or a is None else a.error is None,
                "error": (a.error or "")[:ERROR_CHARS_MAX] if a is not None else "",
                "health": unhealthy.get(n, ""),
                "draining": n in view.draining,
                "replicas": sum(any(r["node"] == n for r in sh["replicas"]) for sh in shards),
                "primaries": sum(sh["primary"] == n for sh in shards),
                "rss_bytes": a.rss_bytes if a is not None and a.error is None else None,
            }
        )
    collections = []
    for c in sorted(view.collections.values(), key=lambda c: (c.tenant, c.name)):
        if c.id in view.tombstones:
            continue
        mine = [sh for sh in shards if sh["collection_id"] == c.id]
        counts = [
            next((r["count"] for r in sh["replicas"] if r["primary"]), None) for sh in mine
        ]  # the primary's count of each shard
        known_counts = [x for x in counts if x is not None]
        collections.append(
            {
                "tenant": c.tenant,
                "name": c.name,
                "id": c.id,
                "dim": c.dim,
                "metric": c.metric,
                "shards": c.shards,
                "replication_factor": c.replication_factor,
                "points": sum(known_counts),
                "points_complete": len(known_counts) == c.shards,
                "ready": len(mine) == c.shards and all(sh["ready"] for sh in mine),
            }
        )
    lags = [r["lag"] for sh in shards for r in sh["replicas"] if r["lag"] is not None]
    return {
        "revision": view.revision,
        "summary": {
            "nodes": len(nodes),
            "nodes_alive": sum(n["alive"] for n in nodes),
            "nodes_unreachable": sum(n["reachable"] is False for n in nodes),
            "shards": len(shards),
            "shards_without_primary": sum(not sh["ready"] for sh in shards),
            "shards_under_replicated": sum(len(sh["in_sync"]) < sh["replication_factor"] for sh in shards),
            "max_lag": max(lags, default=0),
            "collections": len(collections),
        },
        "nodes": nodes,
        "shards": shards,
        "collections": collections,
    }


def _stats(answers: Mapping[str, NodeAnswer], node: str, key: tuple[str, int]) -> ReplicaStats | None:
    a = answers.get(node)
    return None if a is None or a.error is not None else a.replicas.get(key)


async def gather(
    addresses: Mapping[str, str],
    list_shards: Callable,
    timeout_s: float = STATS_TIMEOUT_S,
    concurrency: int = STATS_CONCURRENCY,
) -> dict[str, NodeAnswer]:
    """Ask each node (id -> address) for its replicas: `list_shards(address, timeout_s)` awaits
    a ListShardsResponse. Never raises: a node that fails or is late answers with its error."""
    gate = asyncio.Semaphore(concurrency)

    async def one(address: str) -> NodeAnswer:
        async with gate:
            try:
                return answer_of(await asyncio.wait_for(list_shards(address, timeout_s), timeout_s))
            except TimeoutError:
                return NodeAnswer(error=f"no answer within {timeout_s:g} s")
            except Exception as exc:  # any failure of one node is that node's state, not the page's
                details = exc.details() if hasattr(exc, "details") else None
                code = exc.code().name if hasattr(exc, "code") and callable(exc.code) else type(exc).__name__
                return NodeAnswer(error=f"{code}: {details or exc}")

    ids = sorted(addresses)
    found = await asyncio.gather(*(one(addresses[n]) for n in ids))
    return dict(zip(ids, found, strict=True))


async def status(view, nodes) -> dict:
    """The table of `view` (the router's shard map), each live node asked through `nodes` (the
    router's NodePool: member-authenticated stubs)."""

    async def list_shards(address: str, timeout_s: float):
        return await nodes.stub(address).ListShards(node_pb2.ListShardsRequest(), timeout=timeout_s)

    answers = await gather({n: rec.address for n, rec in view.nodes.items()}, list_shards)
    return table(view, answers)
