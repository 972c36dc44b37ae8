"""Admission control for collections: what a new collection would cost the cluster, refused
before it is created when it would go beyond the limits (issue 12: 41 accepted creates of 64
shards x RF 3 got a node OOM-killed). Pure: the router calls it with its view of the cluster;
each node also guards itself (node/memory.py NodeBudget)."""

from __future__ import annotations

import math

from quartz_cluster import limits
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import ResourceExhausted


def index_row_bytes(dim: int, m: int) -> int:
    """One element of an HNSW index's level 0: the vector, 2m links, its label and link count."""
    return dim * 4 + 2 * m * 4 + 16


def replica_bytes(dim: int, m: int) -> int:
    """What an empty replica costs a node: its HNSW index at the initial capacity plus the rest
    (RocksDB, payload index)."""
    return limits.REPLICA_BASE_BYTES + limits.INITIAL_CAPACITY * index_row_bytes(dim, m)


def check_create(
    view: ClusterView, tenant: str, shards: int, replication_factor: int, dim: int, m: int
) -> None:
    """Refuse (RESOURCE_EXHAUSTED, naming the limit) a collection the cluster cannot hold: one
    collection too many for the tenant, more replicas per live node than REPLICAS_PER_NODE_MAX, or more memory
    for empty replicas than the smallest node budget (placement spreads replicas evenly)."""
    live = len(view.nodes)
    collections = [c for c in view.collections.values() if c.id not in view.tombstones]
    owned = sum(c.tenant == tenant for c in collections)
    if owned >= limits.COLLECTIONS_PER_TENANT_MAX:
        raise ResourceExhausted(
            f"{owned} collections exist in this tenant: the limit is COLLECTIONS_PER_TENANT_MAX = "
            f"{limits.COLLECTIONS_PER_TENANT_MAX}; drop one first",
            "config.name",
        )
    if live == 0:
        return  # the replication-factor check reports it
    replicas = new = shards * replication_factor
    memory = new * replica_bytes(dim, m)
    for c in collections:
        placed = view.shards.get(c.id, {})
        count = (
            sum(len(rec.replicas) for rec, _ in placed.values())
            if placed
            else c.shards * c.replication_factor
        )
        replicas += count
        memory += count * replica_bytes(c.dim, c.m)
    per_node = math.ceil(replicas / live)
    if per_node > limits.REPLICAS_PER_NODE_MAX:
        raise ResourceExhausted(
            f"{shards} shards x {replication_factor} replicas would put {per_node} replicas on each of the "
            f"{live} live nodes: the limit is REPLICAS_PER_NODE_MAX = {limits.REPLICAS_PER_NODE_MAX}",
            "config.shards",
        )
    budgets = [n.memory_bytes_max for n in view.nodes.values() if n.memory_bytes_max > 0]
    if budgets and memory / live > min(budgets):
        raise ResourceExhausted(
            f"the collections' empty replicas alone would need {memory / live / 2**20:,.0f} MiB per node, "
            f"beyond the smallest node memory budget ({min(budgets) / 2**20:,.0f} MiB, --memory-max): "
            "fewer shards, a smaller replication factor or dimension, or more nodes",
            "config.shards",
        )
