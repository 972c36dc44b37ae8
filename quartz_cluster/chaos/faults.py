"""Faults a single machine can suffer, injected into a LocalCluster. Each returns a heal step
(run later by the schedule) and a description for the history."""

from __future__ import annotations

import random
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from quartz_cluster.chaos.netproxy import Network, partition_rules
from quartz_cluster.client import QuartzClient
from quartz_cluster.cluster import LocalCluster

PAUSE_BEYOND_LEASE_S = 2.0
# How long a partition lasts: shorter than the lease and the clients' deadline, longer than the
# replication timeout, and longer than the clients' deadline (calls fail: "maybe applied" writes).
PARTITION_HOLD_S = (3.0, 6.0, 14.0)
DRAIN_WAIT_S = 30.0


@dataclass
class Injected:
    fault: str
    target: str
    heal: Callable[[], None]
    heal_after_s: float | None = None  # None: the run's heal_after_s
    skipped: bool = False  # nothing was injected (not recorded)


def _primary(cluster: LocalCluster, collection: str, rng: random.Random):
    with cluster.client(timeout=10) as c:
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


def partition(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """Cut the primary of a random shard off from its peers, the router, or everyone (routers,
    peers, coordinators; etcd stays reachable), both ways or one way, through the fronts."""
    net: Network = cluster.network
    node = _primary(cluster, collection, rng)
    peers = [n.name for n in cluster.nodes if n.name != node.name]
    routers = [r.name for r in cluster.routers]
    side = rng.choice(["peers", "router", "all"])
    others = {
        "peers": peers,
        "router": routers,
        "all": [*peers, *routers, *(c.name for c in cluster.coordinators)],
    }
    direction = rng.choice(["both", "in", "out"])
    rules = partition_rules(node.name, others[side], direction)
    hold_s = rng.choice(PARTITION_HOLD_S)
    net.cut(rules)
    target = f"{node.name} from {side}, {direction}, {hold_s:g} s"
    return Injected("partition", target, lambda: net.heal(rules), heal_after_s=hold_s)


def etcd_member_loss(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """One of three etcd members killed: quorum holds, nothing should notice."""
    members = [m for m in cluster.etcd_processes() if m.alive()]
    if len(members) < 3:
        raise RuntimeError("etcd-member-loss needs a 3-member etcd")
    member = rng.choice(members)
    member.kill()
    return Injected("etcd-member-loss", member.name, lambda: member.restart_member())


def etcd_quorum_loss(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """Two of three etcd members killed: no quorum, so no lease renews and no shard map changes;
    the data path must keep serving eventual reads from the routers' last shard map."""
    members = [m for m in cluster.etcd_processes() if m.alive()]
    if len(members) < 3:
        raise RuntimeError("etcd-quorum-loss needs a 3-member etcd")
    lost = rng.sample(members, 2)
    for m in lost:
        m.kill()

    def heal() -> None:
        for m in lost:
            m.restart_member()

    return Injected("etcd-quorum-loss", ", ".join(m.name for m in lost), heal)


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

    from quartz_cluster.auth.cluster import ClusterCredentials
    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    node = rng.choice([n for n in cluster.nodes if n.alive()])
    # what `quartz drain` writes, with the cluster's etcd credentials (None: a --no-auth cluster)
    auth = ClusterCredentials.load(cluster.cluster_dir).etcd_auth if cluster.cluster_dir else None

    async def put(value: bytes | None) -> None:
        store = EtcdStore(cluster.etcd.endpoint, auth)
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
        with cluster.client(timeout=10) as c:
            if all(node.name not in s["replicas"] for s in c.describe_collection(collection).shard_map):
                break
        time.sleep(0.2)
    return Injected("drain", node.name, lambda: asyncio.run(put(None)))


HEAVY_COLLECTION = "heavy"
HEAVY_DIM = 384
HEAVY_PAYLOAD_BYTES = 1000
HEAVY_HOLD_S = 6.0


class HeavyLoad:
    """The heaviest requests the API accepts, from two threads until stopped: writes of
    BATCH_POINTS_MAX points with 1 KB payloads, and searches at the edge of every search budget
    (32 queries x k 512 = SEARCH_HITS_MAX hits, x ef 8,192 = SEARCH_WORK_MAX, with payloads).
    Into its own collection, so the workload's checker is not disturbed; counts what succeeded and
    what was refused (a refusal with RESOURCE_EXHAUSTED is the node protecting itself: fine)."""

    def __init__(self, router: str, api_key: str | None, seed: int, first_id: int = 0) -> None:
        from quartz_cluster import limits

        self.router, self.api_key, self.rng = router, api_key, np.random.default_rng(seed)
        self.stop = threading.Event()
        self.done = {"writes": 0, "searches": 0}
        self.refused: dict[str, int] = {}
        self.queries = limits.SEARCH_WORK_MAX // limits.EF_MAX  # 32
        self.k = limits.SEARCH_HITS_MAX // self.queries  # 512
        self.batch = limits.BATCH_POINTS_MAX
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._writes, self._searches)]
        # fresh ids across faults: replacing existing points is a different load (hnswlib updates a
        # point in place ~17x slower than it inserts one; docs/RELIABILITY.md)
        self.written = first_id

    def start(self) -> None:
        with QuartzClient(self.router, api_key=self.api_key, timeout=60) as c:
            if HEAVY_COLLECTION not in {i.name for i in c.list_collections()}:
                c.create_collection(HEAVY_COLLECTION, dim=HEAVY_DIM, shards=4)
        for t in self.threads:
            t.start()

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(120)

    def _count(self, exc: Exception) -> None:
        key = getattr(exc, "code", type(exc).__name__)
        self.refused[key] = self.refused.get(key, 0) + 1

    def _writes(self) -> None:
        payload = {"text": "x" * (HEAVY_PAYLOAD_BYTES - 12)}
        with QuartzClient(self.router, api_key=self.api_key, timeout=60) as c:
            while not self.stop.is_set():
                start = self.written
                ids = [f"h{start + i}" for i in range(self.batch)]
                rows = self.rng.normal(size=(self.batch, HEAVY_DIM)).astype(np.float32)
                try:
                    c.upsert(HEAVY_COLLECTION, ids, rows, [payload] * self.batch)
                    self.done["writes"] += 1
                except Exception as exc:
                    self._count(exc)
                self.written += self.batch

    def _searches(self) -> None:
        from quartz_cluster import limits

        with QuartzClient(self.router, api_key=self.api_key, timeout=60) as c:
            while not self.stop.is_set():
                q = self.rng.normal(size=(self.queries, HEAVY_DIM)).astype(np.float32)
                try:
                    c.search(HEAVY_COLLECTION, q, k=self.k, ef=limits.EF_MAX, with_payload=True)
                    self.done["searches"] += 1
                except Exception as exc:
                    self._count(exc)
                    time.sleep(0.2)


def heavy_load(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """The heaviest accepted writes and searches for HEAVY_HOLD_S, alongside the workload."""
    load = HeavyLoad(
        cluster.router_address, cluster.admin_key, rng.randrange(2**31), getattr(cluster, "heavy_next_id", 0)
    )
    load.start()

    def heal() -> None:
        load.halt()
        cluster.heavy_next_id = load.written
        cluster.heavy_stats = [*getattr(cluster, "heavy_stats", []), {**load.done, "refused": load.refused}]

    return Injected(
        "heavy-load",
        f"{load.queries} queries x k {load.k} x ef 8192 + {load.batch}-point writes",
        heal,
        HEAVY_HOLD_S,
    )


def lose_node(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """A node killed and never restarted, its data dir deleted: lost for good. The cluster must
    fail its primaries over and re-create its replicas on the spare node, without an operator.
    Once per run (a second loss would leave no spare node)."""
    if getattr(cluster, "lost_nodes", None):
        return Injected("lose-node", "skipped: a node is already lost", lambda: None, skipped=True)
    node = rng.choice([n for n in cluster.nodes if n.alive()])
    node.kill()
    shutil.rmtree(node.data_dir, ignore_errors=True)
    cluster.lost_nodes = [node.name]
    return Injected("lose-node", node.name, lambda: None)


def _leader_coordinator(cluster: LocalCluster):
    """The coordinator process holding the leader key (None if none does)."""
    import asyncio

    from quartz_cluster.auth.cluster import ClusterCredentials
    from quartz_cluster.cluster import read_cluster_file
    from quartz_cluster.meta import schema
    from quartz_cluster.meta.store import EtcdStore

    async def get() -> str:
        store = EtcdStore(
            read_cluster_file(str(cluster.data_dir))["etcd"],
            ClusterCredentials.load(cluster.data_dir).etcd_auth,
        )
        try:
            kv = await store.get(schema.LEADER)
            return schema.LeaderRecord.from_json(kv.value).id if kv else ""
        finally:
            await store.close()

    name = asyncio.run(get())
    return next((p for p in cluster.coordinators if p.name == name and p.alive()), None)


def backup_under_faults(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """A backup asked for while the workload writes; then a shard primary SIGKILLed, then the
    leader coordinator. The runner checks each such backup afterwards: complete and holding every
    write acknowledged before it was asked for (restored under another name), or failed and not
    listed (chaos/README.md)."""
    history = cluster.history
    with history.lock:
        before = set(history.acked)
    with cluster.client(timeout=60) as c:
        job = c.create_backup(f"file://{cluster.data_dir}/backups", [collection])
    node = _primary(cluster, collection, rng)
    node.kill()
    time.sleep(0.5)
    leader = _leader_coordinator(cluster)
    if leader is not None:
        leader.kill()
    cluster.backups = [*getattr(cluster, "backups", []), {"id": job["id"], "acked_before": before}]

    def heal() -> None:
        node.start()
        if leader is not None:
            leader.start()

    killed = f"{node.name}, then {leader.name}" if leader is not None else node.name
    return Injected("backup-under-faults", f"backup {job['id']}; killed {killed}", heal)


DISK_REMEDIATION_WAIT_S = 120.0
BALLAST_CHUNK_BYTES = 4 * 2**20


def fill_disk(path) -> int:
    """Write a ballast file at `path` until its filesystem is full (ENOSPC); returns its size."""
    chunk = b"\0" * BALLAST_CHUNK_BYTES
    size = 0
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                size += f.write(chunk)
            except OSError:
                break
        try:  # the last few bytes too
            size += f.write(b"\0" * 4096)
        except OSError:
            pass
    return size


def disk_full(cluster: LocalCluster, collection: str, rng: random.Random) -> Injected:
    """A shard primary's disk fills up: a ballast file takes every free byte of its data dir's
    filesystem (a tmpfs the runner mounted), as another process's runaway log would. Its writes
    fail; it reports itself unhealthy; the coordinator hands its primaries to healthy in-sync
    replicas and moves its replicas to the spare node, without an operator. The heal waits until
    the node holds no replica (or DISK_REMEDIATION_WAIT_S), then deletes the ballast. Once per run."""
    if getattr(cluster, "disk_filled", None):
        return Injected("disk-full", "skipped: a disk was filled already", lambda: None, skipped=True)
    node = _primary(cluster, collection, rng)
    ballast = node.data_dir / "ballast"
    t0 = time.monotonic()
    size = fill_disk(ballast)
    cluster.disk_filled = [node.name]

    def heal() -> None:
        deadline, moved_after_s = t0 + DISK_REMEDIATION_WAIT_S, None
        while time.monotonic() < deadline:
            try:
                with cluster.client(timeout=10) as c:
                    shard_map = c.describe_collection(collection).shard_map
                if all(node.name not in s["replicas"] for s in shard_map):
                    moved_after_s = round(time.monotonic() - t0, 2)
                    break
            except Exception:
                pass
            time.sleep(0.5)
        ballast.unlink(missing_ok=True)
        # for the report: how long until the full node held no replica (None: not within the wait)
        cluster.disk_full_stats = {"node": node.name, "replicas_moved_after_s": moved_after_s}

    return Injected("disk-full", f"{node.name} ({size / 2**20:.0f} MiB ballast)", heal)


FAULTS = {
    "kill-primary": kill_primary,
    "kill-random": kill_random,
    "pause-primary": pause_primary,
    "partition": partition,
    "etcd-member-loss": etcd_member_loss,
    "etcd-quorum-loss": etcd_quorum_loss,
    "rolling-restart": rolling_restart,
    "full-restart": full_restart,
    "drain": drain,
    "heavy-load": heavy_load,
    "lose-node": lose_node,
    "backup-under-faults": backup_under_faults,
    "disk-full": disk_full,
}
NEEDS_NETWORK = {"partition"}  # faults that need the fronts in place before the cluster starts
NEEDS_SPARE_NODE = {"lose-node", "disk-full"}  # the replication factor is restored on a spare node
NEEDS_TMPFS = {"disk-full"}  # each node's data dir on a small tmpfs (mounted as root)
SCENARIOS = {name: [name] for name in FAULTS} | {
    "mixed": ["kill-primary", "kill-random", "pause-primary", "etcd-member-loss", "rolling-restart", "drain"]
}
