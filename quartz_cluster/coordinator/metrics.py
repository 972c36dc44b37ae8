"""A coordinator's gauges, read from the leader's latest cluster view when Prometheus scrapes
(observability/metrics.py). Only the leader knows the cluster: a follower exports 0 for the
cluster-wide gauges (and `quartz_coordinator_leader` 0), so `max()` over coordinators is the
leader's figure."""

from __future__ import annotations

from quartz_cluster.coordinator.reconcile import _primary_gone
from quartz_cluster.observability.metrics import gauge


def cluster_figures(view) -> dict[str, int]:
    """Live and down nodes, shards below their replication factor, shards without a primary."""
    rf = {c.id: c.replication_factor for c in list(view.collections.values())}
    named: set[str] = set()
    under = without_primary = 0
    for cid, by_shard in list(view.shards.items()):
        for rec, _ in list(by_shard.values()):
            named.update(rec.replicas)
            if len(rec.in_sync) < rf.get(cid, len(rec.replicas)):
                under += 1
            if _primary_gone(view, rec):
                without_primary += 1
    return {
        "live": len(view.nodes),
        "down": len(named - set(view.nodes)),
        "under_replicated": under,
        "without_primary": without_primary,
    }


def coordinator_collector(coordinator):
    def collect():
        leader = coordinator.is_leader.is_set() and coordinator.view is not None
        figures = cluster_figures(coordinator.view) if leader else {}
        out = []
        g = gauge("quartz_coordinator_leader", "1 on the elected leader, 0 on the others")
        g.add_metric([], int(leader))
        out.append(g)
        nodes = gauge(
            "quartz_cluster_nodes", "Nodes: live (lease held), down (in the map, no lease)", ["state"]
        )
        nodes.add_metric(["live"], figures.get("live", 0))
        nodes.add_metric(["down"], figures.get("down", 0))
        out.append(nodes)
        for name, doc, key in (
            (
                "quartz_cluster_shards_under_replicated",
                "Shards with fewer in-sync replicas than their replication factor",
                "under_replicated",
            ),
            ("quartz_cluster_shards_without_primary", "Shards whose primary is gone", "without_primary"),
        ):
            g = gauge(name, doc)
            g.add_metric([], figures.get(key, 0))
            out.append(g)
        runner = coordinator.backups if leader else None
        last = gauge(
            "quartz_backup_last_success_timestamp_seconds",
            "When a schedule's last backup completed (Unix time; none yet: when it was created)",
            ["schedule"],
        )
        interval = gauge(
            "quartz_backup_schedule_interval_seconds", "Interval of a backup schedule", ["schedule"]
        )
        if runner is not None:
            for name, sched in list(runner.schedules.items()):
                interval.add_metric([name], sched.interval_s)
                # a schedule with no backup yet counts from its creation: missed after 2 intervals
                last.add_metric([name], runner.last_success_at.get(name, 0.0) or sched.created_at)
        out += [last, interval]
        return out

    return collect
