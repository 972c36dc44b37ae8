"""Health, reflection, graceful shutdown with checkpoint, restart, drop, metrics."""

from __future__ import annotations

import glob
import os

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

pytestmark = pytest.mark.integration


def test_health_is_served_and_the_internal_api_is_not_advertised(node_factory):
    _proc, client = node_factory()
    health = health_pb2_grpc.HealthStub(client.channel)
    for service in ("", "quartz.v1.Node"):
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    # nodes serve no reflection (docs/security.md, ADR 13): only the router lists its public service
    stub = reflection_pb2_grpc.ServerReflectionStub(client.channel)
    with pytest.raises(grpc.RpcError) as err:
        list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_sigterm_checkpoints_and_restart_restores(node_factory, tmp_path):
    proc, client = node_factory()
    client.create_shard("life", 0, 16, "l2")
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 16)).astype(np.float32)
    for start in range(0, 3000, 500):
        client.upsert(
            "life",
            0,
            [f"p{i}" for i in range(start, start + 500)],
            vecs[start : start + 500],
            [{"i": i} for i in range(start, start + 500)],
        )
    client.delete("life", 0, [f"p{i}" for i in range(100)])
    lsn = client.stats("life", 0).applied_lsn
    before = client.search("life", 0, vecs[:20], k=5)
    assert proc.stop() == 0
    ckpts = glob.glob(str(tmp_path / "n1" / "shards" / "life" / "0" / "ckpt" / "*.state"))
    assert [os.path.basename(c) for c in ckpts] == [f"ckpt-{lsn:020d}.state"]
    proc.start()
    client.reconnect(proc.address)
    assert f"checkpoint@{lsn}+replay0" in proc.log_tail(200)
    stats = client.stats("life", 0)
    assert (stats.count, stats.applied_lsn) == (2900, lsn)
    after = client.search("life", 0, vecs[:20], k=5)
    assert [[h.id for h in hs] for hs in after] == [[h.id for h in hs] for hs in before]
    # l2 scores are euclidean distances, best (smallest) first
    hit = client.search("life", 0, vecs[120], k=1)[0][0]
    assert hit.id == "p120" and abs(hit.score) < 1e-3
    far = client.search("life", 0, vecs[120] + 3.0, k=1)[0][0]
    exact = np.sqrt(((vecs[100:] - (vecs[120] + 3.0)) ** 2).sum(1)).min()
    assert abs(far.score - exact) < 1e-3


def test_create_is_idempotent_and_drop_is_durable(node_factory, tmp_path):
    proc, client = node_factory()
    assert client.create_shard("d", 0, 4, "ip") is True
    assert client.create_shard("d", 0, 4, "ip") is False
    client.upsert("d", 0, ["a"], np.ones((1, 4), np.float32))
    assert client.drop_shard("d", 0) is True
    assert client.drop_shard("d", 0) is False
    with pytest.raises(grpc.RpcError) as err:
        client.stats("d", 0)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (tmp_path / "n1" / "shards" / "d" / "0").exists()
    proc.kill()
    proc.start()
    client.reconnect(proc.address)
    with pytest.raises(grpc.RpcError):
        client.stats("d", 0)


def test_session_read_waits_for_its_lsn_then_refuses(node_factory):
    from quartz_cluster.proto.quartz.v1 import node_pb2

    _, client = node_factory()
    client.create_shard("sess", 0, 4, "l2")
    lsn = client.upsert("sess", 0, ["a"], np.ones((1, 4), np.float32))
    q = node_pb2.Vectors(data=np.ones((1, 4), np.float32).tobytes(), count=1, dim=4)
    ok = client.stub.Search(
        node_pb2.SearchRequest(ref=client.ref("sess"), queries=q, k=1, min_lsn=lsn), timeout=5
    )
    assert ok.results[0].ids == ["a"]
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Get(node_pb2.GetRequest(ref=client.ref("sess"), ids=["a"], min_lsn=lsn + 1), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE and err.value.details().startswith("session:")
