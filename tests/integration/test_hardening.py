"""Defects of the data path found by review and probing (issue 11), against real processes:
an interrupted snapshot install releases everything and the next one succeeds; a big batch
does not push a healthy follower out of in_sync."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from quartz_cluster import QuartzClient
from quartz_cluster.proto.quartz.v1 import node_pb2

pytestmark = pytest.mark.integration
DIM = 8
ROW = b"\0" * 8 + np.ones(DIM, "<f4").tobytes()  # label 0 + a vector


def chunk(cid: str, keys=(), values=(), lsn: int = 7, epoch: int = 1) -> node_pb2.SnapshotChunk:
    return node_pb2.SnapshotChunk(
        ref=node_pb2.ShardRef(collection_id=cid, shard=0),
        epoch=epoch,
        lsn=lsn,
        lsn_epoch=1,
        next_label=1,
        keys=list(keys),
        values=list(values),
    )


class BrokenStream(Exception):
    pass


def test_interrupted_snapshot_installs_release_everything(node_factory):
    """Streams that raise or are cancelled midway, more of them than the node has worker
    threads: each is aborted and releases its staging database; then a complete install
    succeeds and the node still searches, reads and writes."""
    _, client = node_factory("n1")
    client.create_shard("c", 0, DIM, "l2")
    client.upsert("c", 0, ["before"], np.ones((1, DIM), np.float32))

    def raising():
        yield chunk("c", [b"v/x"], [ROW])
        yield chunk("c", [b"v/y"], [ROW])
        raise BrokenStream()

    for _ in range(8):
        with pytest.raises(grpc.RpcError):
            client.stub.InstallSnapshot(raising(), timeout=30)

    for _ in range(8):  # the client cancels while the node waits for the next chunk
        more = threading.Event()

        def waiting(more=more):
            yield chunk("c", [b"v/x"], [ROW])
            more.wait(30)

        call = client.stub.InstallSnapshot.future(waiting(), timeout=30)
        try:
            with pytest.raises(grpc.FutureTimeoutError):
                call.result(timeout=0.3)
        finally:
            call.cancel()
            more.set()
        assert call.cancelled() or call.exception() is not None

    resp = client.stub.InstallSnapshot(iter([chunk("c", [b"v/x", b"v/y"], [ROW, ROW])]), timeout=30)
    assert resp.status == node_pb2.REPLICATE_OK and resp.log_end == 7
    got = client.get("c", 0, ["x", "y", "before"], with_payload=False)
    assert sorted(got) == ["x", "y"]  # the snapshot replaced the whole state
    assert [h.id for h in client.search("c", 0, np.ones(DIM, np.float32), k=2)[0]] != []
    assert client.upsert("c", 0, ["after"], np.ones((1, DIM), np.float32)) == 8
    stats = client.stats("c", 0)
    assert stats.count == 3 and stats.health == "ok"


def test_a_big_batch_keeps_a_healthy_follower_in_sync(cluster_factory):
    """10,000 x 384-d points in one batch: the follower needs seconds to index them, which must
    not count as a failure (it did: a fixed 2 s deadline dropped it from in_sync)."""
    cluster = cluster_factory("c", nodes=2, coordinators=1)
    dim, n = 384, 10_000
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=120) as c:
        c.create_collection("big", dim=dim, shards=1, replication_factor=2)
        vectors = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
        c.upsert("big", [f"p{i}" for i in range(n)], vectors, write_consistency="all")
        shard = c.describe_collection("big").shard_map[0]
        assert len(shard["in_sync"]) == 2, shard
        assert c.count("big") == n
