"""Whether a node can write, as it reports in its registration (NodeRecord.health) and in
`quartz_node_writable`: its data dir's filesystem has room, and every replica writes and
checkpoints. An unhealthy node keeps serving reads; the coordinator hands its primaries to
healthy in-sync replicas and moves its replicas away (self-remediation, DESIGN §14)."""

from __future__ import annotations

import shutil

from quartz_cluster import limits


def disk_problem(free_bytes: int, free_bytes_min: int = limits.NODE_DISK_FREE_BYTES_MIN) -> str:
    """The same text for as long as the problem lasts: the node's record (in etcd, watched by
    every router and coordinator) changes only when its health does."""
    if free_bytes < free_bytes_min:
        return f"disk nearly full: under {free_bytes_min / 2**20:.0f} MiB free"
    return ""


def node_health(registry, data_dir: str) -> str:
    """ "" when the node can write, else why not (the first problem found)."""
    try:
        problem = disk_problem(shutil.disk_usage(data_dir).free)
    except OSError as exc:
        problem = f"data dir unreadable: {exc}"
    if problem:
        return problem
    for replica in list(registry.shards.values()):
        health = replica.health()
        if health != "ok":
            return f"shard {replica.spec.name}: {health}"
    return ""
