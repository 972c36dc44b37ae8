"""Faults a single machine can suffer, injected into a LocalCluster. Each returns a heal step
(run later by the schedule) and a description for the history."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from quartz_cluster.client import QuartzClient
from quartz_cluster.cluster import LocalCluster

PAUSE_BEYOND_LEASE_S = 2.0
DRAIN_WAIT_S = 30.0


@dataclass
class Injected:
    fault: str
    target: str
    heal: Callable[[], None]


def _primary(cluster: LocalCluster, collection: str, rng: random.Random):
    with QuartzClient(cluster.router_address, timeout=10) as c:
        shards = c.describe_collection(collection).shard_map
    name = rng.choice(shards)["primary"]
    return next(n for n in cluster.nodes if n.name == name)


def kill_primary(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    node = _primary(cluster, collection, rng)
    node.kill()
    return Injected("kill-primary", node.name, lambda: node.start())


def kill_random(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    node = rng.choice([n for n in cluster.nodes if n.alive()])
    node.kill()
    return Injected("kill-random", node.name, lambda: node.start())


def pause_primary(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """SIGSTOP past its lease (a failover happens meanwhile), then SIGCONT."""
    node = _primary(cluster, collection, rng)
    node.pause()
    time.sleep(cluster.lease_ttl_s + PAUSE_BEYOND_LEASE_S)
    return Injected("pause-primary", node.name, lambda: node.resume())


def etcd_member_loss(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """One of three etcd members killed: quorum holds, nothing should notice."""
    members = [m for m in cluster.etcd_processes() if m.alive()]
    if len(members) < 3:
        raise RuntimeError("etcd-member-loss needs a 3-member etcd")
    member = rng.choice(members)
    member.kill()
    return Injected("etcd-member-loss", member.name, lambda: member.restart_member())


def rolling_restart(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """Every node in turn: SIGTERM, start again, wait for it to serve."""
    for node in list(cluster.nodes):
        node.stop()
        node.start()
        time.sleep(1.0)  # let the others see it back before the next one goes
    return Injected("rolling-restart", "all nodes", lambda: None)


def full_restart(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """Every node killed at once, then all started again."""
    for node in cluster.nodes:
        node.kill()
    return Injected("full-restart", "all nodes", lambda: [n.start() for n in cluster.nodes])


def drain(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """`quartz drain` a random node (new replicas elsewhere, primacy handed over with a live old
    primary, old replicas removed) and wait until it holds nothing; the heal cancels the drain."""
    import asyncio

    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    node = rng.choice([n for n in cluster.nodes if n.alive()])

    async def put(value: bytes | None) -> None:
        store = EtcdStore(cluster.etcd.endpoint)
        try:
            if value is None:
                await store.delete(schema.drain_key(node.name))
            else:
                await store.put(schema.drain_key(node.name), value)
        finally:
            await store.close()

    asyncio.run(put(b"{}"))
    deadline = time.monotonic() + DRAIN_WAIT_S
    while time.monotonic() < deadline:
        with QuartzClient(cluster.router_address, timeout=10) as c:
            if all(node.name not in s["replicas"] for s in c.describe_collection(collection).shard_map):
                break
        time.sleep(0.2)
    return Injected("drain", node.name, lambda: asyncio.run(put(None)))


FAULTS = {
    "kill-primary": kill_primary,
    "kill-random": kill_random,
    "pause-primary": pause_primary,
    "etcd-member-loss": etcd_member_loss,
    "rolling-restart": rolling_restart,
    "full-restart": full_restart,
    "drain": drain,
}
SCENARIOS = {name: [name] for name in FAULTS} | {
    "mixed": ["kill-primary", "kill-random", "pause-primary", "etcd-member-loss", "rolling-restart", "drain"]
}
