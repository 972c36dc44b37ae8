"""Replication and failover with real processes (DESIGN §5): no acknowledged write lost,
nothing from a fenced epoch visible, replicas converge."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

from quartz_cluster.meta.schema import shard_of
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.integration.conftest import member_node_client

pytestmark = pytest.mark.integration
DIM = 8


class Writer(threading.Thread):
    """Majority writes of small batches; records what was acknowledged and what failed."""

    def __init__(self, cluster, collection: str, prefix: str, batch: int = 10) -> None:
        super().__init__(daemon=True)
        self.client = cluster.client(timeout=30)
        self.collection, self.prefix, self.batch = collection, prefix, batch
        self.acked: dict[str, np.ndarray] = {}
        self.failed: set[str] = set()
        self.acked_at: list[tuple[float, list[str]]] = []
        self.halt = threading.Event()
        self.rng = np.random.default_rng(abs(hash(prefix)) % 2**32)

    def run(self) -> None:
        i = 0
        while not self.halt.is_set():
            ids = [f"{self.prefix}-{i}-{j}" for j in range(self.batch)]
            vecs = self.rng.normal(size=(self.batch, DIM)).astype(np.float32)
            try:
                self.client.upsert(
                    self.collection, ids, vecs, [{"i": i} for _ in ids], write_consistency="majority"
                )
            except Exception:
                self.failed.update(ids)
            else:
                self.acked.update(zip(ids, vecs, strict=True))
                self.acked_at.append((time.monotonic(), ids))
            i += 1

    def stop(self) -> None:
        self.halt.set()
        self.join(120)
        self.client.close()


def shard_map(cluster, name):
    with cluster.client() as c:
        return c.describe_collection(name).shard_map


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def verify_acked(cluster, name, writer: Writer) -> None:
    """Every acknowledged write readable with a strong read, exactly; findable by search; the
    collection holds each present id once."""
    with cluster.client(timeout=60) as c:
        acked = list(writer.acked)
        for start in range(0, len(acked), 2000):
            chunk = acked[start : start + 2000]
            got = {p.id: p.vector for p in c.get(name, chunk, consistency="strong", with_payload=False)}
            missing = [pid for pid in chunk if pid not in got]
            assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"
            assert all(np.array_equal(got[pid], writer.acked[pid]) for pid in chunk)
        sample = acked[:: max(1, len(acked) // 200)]
        hits = c.search(name, np.stack([writer.acked[p] for p in sample]), k=1, ef=200, consistency="strong")
        assert [h[0].id for h in hits] == sample
        present = {
            p.id
            for p in c.get(
                name,
                list(writer.acked) + sorted(writer.failed),
                with_vectors=False,
                with_payload=False,
                consistency="strong",
            )
        }
        assert c.count(name) == len(present), "an id is stored twice, or a stray point exists"


def replica_state(cluster, name, shard, ids):
    """Per live replica of a shard: (log_end, count, {id: vector bytes} of the given ids it holds),
    read from each node directly."""
    info = shard_map(cluster, name)[shard]
    cid = _cid(cluster, name)
    mine = [i for i in ids if shard_of(i, len(shard_map(cluster, name))) == shard]
    out = {}
    for node in cluster.nodes:
        if node.name not in info["replicas"] or not node.alive():
            continue
        with member_node_client(cluster, node.address) as nc:
            stats = nc.stats(cid, shard)
            held = {}
            for start in range(0, len(mine), 5000):
                got = nc.get(cid, shard, mine[start : start + 5000], with_payload=False)
                held.update({pid: vec.tobytes() for pid, (vec, _) in got.items()})
            out[node.name] = (stats.log_end, stats.count, held)
    return out


def _cid(cluster, name):
    with cluster.client() as c:
        return c.describe_collection(name).id


def converged(cluster, name, shards, ids):
    """Every live replica of every shard holds the same log end, count, ids and vectors."""
    for s in range(shards):
        values = list(replica_state(cluster, name, s, ids).values())
        if len(values) < 2 or any(v != values[0] for v in values[1:]):
            return False
    return True


def test_sigkill_primary_during_majority_writes(cluster_factory):
    cluster = cluster_factory("c", nodes=3, coordinators=2)
    with cluster.client() as c:
        c.create_collection("kp", dim=DIM, shards=2, replication_factor=3)
    writer = Writer(cluster, "kp", "w")
    writer.start()
    wait_for(lambda: len(writer.acked) >= 300, what="writes before the kill")
    before = shard_map(cluster, "kp")[0]
    victim = next(n for n in cluster.nodes if n.name == before["primary"])
    victim.kill()
    killed_at = time.monotonic()
    after = wait_for(
        lambda: (m := shard_map(cluster, "kp")[0])["epoch"] > before["epoch"] and m, what="failover"
    )
    assert after["primary"] != before["primary"] and before["primary"] not in after["in_sync"]
    # writes to the failed shard resume on the new primary
    wait_for(
        lambda: any(t > killed_at and any(shard_of(i, 2) == 0 for i in ids) for t, ids in writer.acked_at),
        what="acknowledged writes to shard 0 after the kill",
    )
    victim.start()  # it rejoins as a follower and catches up
    time.sleep(1.0)
    writer.stop()
    verify_acked(cluster, "kp", writer)
    wait_for(lambda: all(len(m["in_sync"]) == 3 for m in shard_map(cluster, "kp")), what="all back in sync")
    ids = list(writer.acked) + sorted(writer.failed)
    wait_for(lambda: converged(cluster, "kp", 2, ids), what="replicas identical")


def test_paused_primary_is_fenced_and_rejoins(cluster_factory):
    cluster = cluster_factory("c", nodes=3, coordinators=1)
    with cluster.client() as c:
        c.create_collection("pp", dim=DIM, shards=1, replication_factor=3)
    writer = Writer(cluster, "pp", "w")
    writer.start()
    wait_for(lambda: len(writer.acked) >= 200, what="writes before the pause")
    before = shard_map(cluster, "pp")[0]
    victim = next(n for n in cluster.nodes if n.name == before["primary"])
    victim.pause()  # SIGSTOP past its lease
    try:
        after = wait_for(
            lambda: (m := shard_map(cluster, "pp")[0])["epoch"] > before["epoch"] and m,
            what="failover from the paused primary",
        )
    finally:
        victim.resume()  # SIGCONT: it wakes up believing it is the primary
    # Its old-epoch writes are refused: straight to it, with the epoch it knew.
    cid = _cid(cluster, "pp")
    stale = node_pb2.WriteRequest(
        ref=node_pb2.ShardRef(collection_id=cid, shard=0),
        epoch=before["epoch"],
        upserts=node_pb2.PointBatch(
            ids=["fenced-1"],
            vectors=node_pb2.Vectors(data=np.ones((1, DIM), np.float32).tobytes(), count=1, dim=DIM),
        ),
    )
    with member_node_client(cluster, victim.address) as nc:
        with pytest.raises(grpc.RpcError) as err:
            nc.stub.Write(stale, timeout=10)
        assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
        # Nor does it answer a strong read for the epoch it led (a router with an old map could send
        # one): its lease lapsed, a successor may have acknowledged writes it never saw. An
        # eventual read it still answers.
        ref = node_pb2.ShardRef(collection_id=cid, shard=0)
        some = sorted(writer.acked)[:5]
        with pytest.raises(grpc.RpcError) as err:
            nc.stub.Get(
                node_pb2.GetRequest(ref=ref, ids=some, strong=True, epoch=before["epoch"]), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "consistency" in err.value.details()
        assert len(nc.stub.Get(node_pb2.GetRequest(ref=ref, ids=some), timeout=10).points) == 5
    time.sleep(1.0)
    writer.stop()
    verify_acked(cluster, "pp", writer)
    with cluster.client() as c:
        assert c.get("pp", ["fenced-1"], consistency="strong") == []
    wait_for(lambda: len(shard_map(cluster, "pp")[0]["in_sync"]) == 3, what="the old primary back in sync")
    ids = list(writer.acked) + sorted(writer.failed) + ["fenced-1"]
    wait_for(lambda: converged(cluster, "pp", 1, ids), what="replicas identical")
    assert after["primary"] != before["primary"]


@pytest.mark.parametrize("downtime_writes, retention", [(200, 10_000), (3000, 50)])
def test_follower_catches_up_by_log_or_snapshot(cluster_factory, downtime_writes, retention):
    # Small checkpoints and retention make the log stop reaching back: the snapshot path.
    cluster = cluster_factory(
        "c", nodes=3, node_args=["--checkpoint-every", "500", "--log-retention", str(retention)]
    )
    with cluster.client(timeout=30) as c:
        c.create_collection("cu", dim=DIM, shards=1, replication_factor=3)
        info = c.describe_collection("cu").shard_map[0]
        follower = next(n for n in cluster.nodes if n.name == info["replicas"][1])
        rng = np.random.default_rng(0)
        c.upsert("cu", [f"a{i}" for i in range(100)], rng.normal(size=(100, DIM)))
        follower.kill()
        for b in range(downtime_writes // 10):
            c.upsert("cu", [f"b{b}-{j}" for j in range(10)], rng.normal(size=(10, DIM)))
        assert follower.name not in shard_map(cluster, "cu")[0]["in_sync"]
        follower.start()
        wait_for(
            lambda: follower.name in shard_map(cluster, "cu")[0]["in_sync"], what="follower back in sync"
        )
        c.upsert("cu", ["after"], rng.normal(size=(1, DIM)))
    ids = [f"a{i}" for i in range(100)] + [
        f"b{b}-{j}" for b in range(downtime_writes // 10) for j in range(10)
    ]
    wait_for(lambda: converged(cluster, "cu", 1, [*ids, "after"]), what="replicas identical")
    log = follower.log_tail(400)
    if retention < downtime_writes:
        assert "snapshot installed" in log
    else:
        assert "snapshot installed" not in log


def test_session_reads_see_own_writes_while_a_follower_lags(cluster_factory):
    cluster = cluster_factory("c", nodes=3)
    rng = np.random.default_rng(3)
    with cluster.client(timeout=30) as c:
        c.create_collection("se", dim=DIM, shards=2, replication_factor=3)
        follower = next(n for n in cluster.nodes if n.name == shard_map(cluster, "se")[0]["replicas"][2])
        for i in range(120):
            if i == 30:
                follower.kill()  # its shards' in_sync shrinks; a stale map may still route to it
            if i == 70:
                follower.start()  # back, lagging, catching up
            vecs = rng.normal(size=(3, DIM)).astype(np.float32)
            ids = [f"s{i}-{j}" for j in range(3)]
            c.upsert("se", ids, vecs)
            got = c.get("se", ids, consistency="session", with_payload=False)
            assert [p.id for p in got] == ids, f"write {i} not visible to its own session"
            hits = c.search("se", vecs[0], k=1, consistency="session", with_payload=False)
            assert hits[0].id == ids[0]
        assert c.session.positions["se"]  # the SDK carried tokens by itself


def test_sdk_rides_through_a_failover_without_partial_errors(cluster_factory):
    cluster = cluster_factory("c", nodes=3)
    rng = np.random.default_rng(9)
    with cluster.client(timeout=30) as c:
        c.create_collection("ri", dim=DIM, shards=3, replication_factor=3)
        c.upsert("ri", [f"a{i}" for i in range(60)], rng.normal(size=(60, DIM)))
        primary = shard_map(cluster, "ri")[0]["primary"]
        next(n for n in cluster.nodes if n.name == primary).kill()
        ids = [f"b{i}" for i in range(60)]  # spans every shard, including the one failing over
        c.upsert("ri", ids, rng.normal(size=(60, DIM)))  # raises PartialWriteError if not retried
        assert len(c.get("ri", ids, consistency="strong")) == 60


def test_entry_the_new_primary_never_had_is_removed_without_further_writes(cluster_factory):
    """A follower holds an entry its primary never committed (as when a primary replicated to
    one follower only, then died). After a failover to a replica without it, that follower is
    resynchronised at once; the entry never becomes visible through the cluster."""
    cluster = cluster_factory("c", nodes=3)
    with cluster.client(timeout=30) as c:
        c.create_collection("gh", dim=DIM, shards=1, replication_factor=3)
        c.upsert("gh", [f"p{i}" for i in range(50)], np.random.default_rng(0).normal(size=(50, DIM)))
    m = shard_map(cluster, "gh")[0]
    cid = _cid(cluster, "gh")
    primary = next(n for n in cluster.nodes if n.name == m["primary"])
    f1, f2 = (
        next(n for n in cluster.nodes if n.name == name) for name in m["replicas"] if name != m["primary"]
    )
    with member_node_client(cluster, f1.address) as nc:
        s = nc.stats(cid, 0)
        ghost = node_pb2.LogEntry(
            lsn=s.log_end + 1,
            epoch=s.epoch,
            ids=["ghost"],
            # the next free label, as its primary would have assigned it (50 points, none deleted):
            # a follower refuses an entry whose labels run beyond its index
            labels=np.array([s.count], dtype="<u8").tobytes(),
            vectors=node_pb2.Vectors(data=np.ones((1, DIM), np.float32).tobytes(), count=1, dim=DIM),
            payloads=[b"{}"],
        )
        resp = nc.stub.Replicate(
            node_pb2.ReplicateRequest(
                ref=node_pb2.ShardRef(collection_id=cid, shard=0),
                epoch=s.epoch,
                primary=m["primary"],
                prev_lsn=s.log_end,
                prev_epoch=s.last_epoch,
                entries=[ghost.SerializeToString()],
            ),
            timeout=10,
        )
        assert resp.status == node_pb2.REPLICATE_OK and "ghost" in nc.get(cid, 0, ["ghost"])
    f1.kill()
    primary.kill()  # f2, without the ghost, is the only live in-sync replica: it is promoted
    wait_for(
        lambda: shard_map(cluster, "gh")[0]["primary"] == f2.name, what="failover to the replica without it"
    )
    with cluster.client(timeout=30) as c:
        # the new primary writes past the ghost's LSN: on its return f1 looks merely behind, and the
        # disagreement shows only mid-catch-up (same LSN, another epoch)
        for q in ("q1", "q2", "q3"):  # one log entry each: the new primary ends 2 past the ghost
            c.upsert("gh", [q], np.ones((1, DIM), np.float32), write_consistency="one")
    f1.start()
    primary.start()

    def ghost_gone():
        with member_node_client(cluster, f1.address) as nc:
            return "ghost" not in nc.get(cid, 0, ["ghost"]) and nc.stats(cid, 0).count == 53

    wait_for(ghost_gone, what="the stray entry removed from the follower")
    with cluster.client(timeout=30) as c:
        assert c.get("gh", ["ghost"]) == [] and c.count("gh") == 53
