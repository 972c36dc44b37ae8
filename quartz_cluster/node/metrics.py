"""A node's gauges, read from its shards when Prometheus scrapes (observability/metrics.py):
points per shard, in_sync size and replication lag per follower (exported by primaries), disk
space of the data dir, the memory budget, and whether the node can write."""

from __future__ import annotations

import shutil
import time

from quartz_cluster.node.health import node_health
from quartz_cluster.observability.metrics import gauge


def node_collector(registry, budget, data_dir: str):
    def collect():
        points = gauge(
            "quartz_shard_points", "Points held by a shard replica", ["collection_id", "shard", "role"]
        )
        in_sync = gauge(
            "quartz_shard_replicas_in_sync",
            "Replicas in a shard's in_sync set (the primary included), as its primary sees it",
            ["collection_id", "shard"],
        )
        lag_entries = gauge(
            "quartz_replication_lag_entries",
            "Log entries of the primary a follower has not acknowledged",
            ["collection_id", "shard", "replica"],
        )
        lag_seconds = gauge(
            "quartz_replication_lag_seconds",
            "Seconds since a follower last held the primary's whole log (0: it holds it now)",
            ["collection_id", "shard", "replica"],
        )
        now = time.monotonic()
        for (collection_id, shard), replica in list(registry.shards.items()):
            labels = [collection_id, str(shard)]
            points.add_metric([*labels, replica.role], len(replica.label_of))
            replicator = replica.replicator
            if replicator is None or replica.role != "primary":
                continue
            in_sync.add_metric(labels, replicator.in_sync_size())
            for node, (entries, seconds) in replicator.lag(now).items():
                lag_entries.add_metric([*labels, node], entries)
                lag_seconds.add_metric([*labels, node], seconds)
        disk = shutil.disk_usage(data_dir)
        health = node_health(registry, data_dir)
        out = [points, in_sync, lag_entries, lag_seconds]
        for name, doc, value in (
            ("quartz_node_disk_free_bytes", "Free bytes on the data dir's filesystem", disk.free),
            ("quartz_node_disk_capacity_bytes", "Size of the data dir's filesystem", disk.total),
            (
                "quartz_node_memory_budget_bytes",
                "The node's memory budget (--memory-max)",
                budget.memory_bytes_max,
            ),
            (
                "quartz_node_memory_reserved_bytes",
                "Memory counted against the budget (resident)",
                budget.rss(),
            ),
            ("quartz_node_shard_replicas", "Shard replicas on this node", len(registry.shards)),
            ("quartz_node_writable", "1 when the node can write (node/health.py), else 0", int(not health)),
        ):
            g = gauge(name, doc)
            g.add_metric([], value)
            out.append(g)
        return out

    return collect
