"""The sealed internal plane (issue 13): a node's API admits cluster members only. With no
credentials, with a client API key (even the admin's), or with a member token not signed by
this cluster's secret, Write / Replicate / InstallSnapshot / DropShard / CreateShard and the
reads are refused UNAUTHENTICATED, and the data is unchanged. etcd refuses anyone without the
cluster's credentials. Reflection lists the public service only."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quartz_cluster.auth.cluster import MEMBER_METADATA, TOKEN_TTL_S, ClusterCredentials
from quartz_cluster.proto.quartz.v1 import node_pb2, node_pb2_grpc

DIM = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("plane"), nodes=2)
    c.start()
    admin = c.client(timeout=60)
    admin.create_collection("docs", dim=DIM, shards=1, replication_factor=2)
    admin.upsert("docs", ids=[f"p{i}" for i in range(10)], vectors=np.eye(10, DIM, dtype="f4") + 0.5)
    yield c
    c.kill()


def state(cluster) -> tuple:
    admin = cluster.client(timeout=60)
    info = admin.describe_collection("docs")
    hits = [h.id for h in admin.search("docs", np.ones(DIM, "f4"), k=10, consistency="strong")]
    return (
        admin.count("docs"),
        info.id,
        [(s["shard"], s["epoch"], s["primary"]) for s in info.shard_map],
        hits,
    )


def credentials(cluster) -> dict[str, tuple]:
    real = ClusterCredentials.load(cluster.data_dir)
    other = ClusterCredentials(bytes(32))  # another cluster's secret
    return {
        "no credentials": (),
        "the admin API key": (("authorization", f"Bearer {cluster.admin_key}"),),
        "the admin API key as api-key": (("api-key", cluster.admin_key),),
        "the admin API key as a member token": ((MEMBER_METADATA, cluster.admin_key),),
        "a token of another cluster": ((MEMBER_METADATA, other.member_token("n1")),),
        "an expired member token": ((MEMBER_METADATA, real.member_token("n1", now=1_000_000)),),
        "a forged member token": ((MEMBER_METADATA, real.member_token("n1")[:-4] + "0000"),),
    }


def forged_calls(cid: str):
    ref = node_pb2.ShardRef(collection_id=cid, shard=0)
    vec = node_pb2.Vectors(data=np.ones((1, DIM), "<f4").tobytes(), count=1, dim=DIM)
    entry = node_pb2.LogEntry(
        lsn=10_000, epoch=10_000, ids=["forged"], labels=np.zeros(1, "<u8").tobytes(), vectors=vec
    )
    return {
        "Write": lambda s, md: s.Write(
            node_pb2.WriteRequest(ref=ref, upserts=node_pb2.PointBatch(ids=["forged"], vectors=vec)),
            metadata=md,
        ),
        "Replicate": lambda s, md: s.Replicate(
            node_pb2.ReplicateRequest(
                ref=ref, epoch=1000, primary="x", prev_lsn=9_999, entries=[entry.SerializeToString()]
            ),
            metadata=md,
        ),
        "InstallSnapshot": lambda s, md: s.InstallSnapshot(
            iter([node_pb2.SnapshotChunk(ref=ref, epoch=1000, lsn=1, keys=[b"k"], values=[b"v"])]),
            metadata=md,
        ),
        "DropShard": lambda s, md: s.DropShard(node_pb2.DropShardRequest(ref=ref), metadata=md),
        "CreateShard": lambda s, md: s.CreateShard(
            node_pb2.CreateShardRequest(
                spec=node_pb2.ShardSpec(ref=node_pb2.ShardRef(collection_id="evil", shard=0), dim=DIM)
            ),
            metadata=md,
        ),
        "Get": lambda s, md: s.Get(node_pb2.GetRequest(ref=ref, ids=["p1"], with_vectors=True), metadata=md),
        "Search": lambda s, md: s.Search(node_pb2.SearchRequest(ref=ref, queries=vec, k=3), metadata=md),
        "Stats": lambda s, md: s.Stats(node_pb2.StatsRequest(ref=ref), metadata=md),
        "ListShards": lambda s, md: s.ListShards(node_pb2.ListShardsRequest(), metadata=md),
    }


def test_node_rpcs_refuse_everyone_but_cluster_members_and_change_nothing(cluster):
    before = state(cluster)
    calls = forged_calls(before[1])
    refused = []
    for node in cluster.nodes:
        with grpc.insecure_channel(node.address) as channel:
            stub = node_pb2_grpc.NodeStub(channel)
            for who, md in credentials(cluster).items():
                for name, call in calls.items():
                    with pytest.raises(grpc.RpcError) as err:
                        call(stub, md)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, (node.name, who, name)
                    assert "admits cluster members only" in err.value.details()
                    refused.append((node.name, who, name))
    assert len(refused) == len(cluster.nodes) * 7 * 9
    assert state(cluster) == before  # count, collection id, epochs and primaries, search results


def test_a_member_token_opens_the_node_api(cluster):
    """The control: the same reads with this cluster's member token are answered (so the
    refusals above are the guard's, not a broken call)."""
    token = ((MEMBER_METADATA, ClusterCredentials.load(cluster.data_dir).member_token("test")),)
    cid = state(cluster)[1]
    for node in cluster.nodes:
        with grpc.insecure_channel(node.address) as channel:
            stub = node_pb2_grpc.NodeStub(channel)
            assert forged_calls(cid)["Stats"](stub, token).count == 10
            assert cid in [
                s.spec.ref.collection_id
                for s in stub.ListShards(node_pb2.ListShardsRequest(), metadata=token).shards
            ]


def services(address: str, metadata=()) -> list[str]:
    with grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata
        )
        return sorted(s.name for r in replies for s in r.list_services_response.service)


def test_reflection_lists_the_public_service_only(cluster):
    public = services(cluster.router_address)
    assert "quartz.v1.Quartz" in public and "quartz.v1.Node" not in public
    for node in cluster.nodes:
        with pytest.raises(grpc.RpcError) as err:
            services(node.address)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        token = ((MEMBER_METADATA, ClusterCredentials.load(cluster.data_dir).member_token("test")),)
        with pytest.raises(grpc.RpcError) as err:  # not served at all: a member has no use for it
            services(node.address, token)
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_etcd_refuses_anyone_without_the_clusters_credentials(cluster):
    import aetcd

    host, port = cluster.etcd.endpoint.split(":")

    async def attempt(username, password, writes: bool = True) -> list[str]:
        outcomes = []
        try:
            c = aetcd.Client(host, int(port), username=username, password=password, timeout=5)
            await c.connect()
        except Exception as exc:
            return [f"connect: {type(exc).__name__}"]
        try:
            ops = [("read", lambda: c.get_prefix(b"/quartz/"))]
            if writes:
                ops += [
                    ("write", lambda: c.put(b"/quartz/collections/default/docs", b"{}")),
                    ("delete", lambda: c.delete_prefix(b"/quartz/")),
                ]
            for name, op in ops:
                try:
                    await op()
                    outcomes.append(f"{name}: ACCEPTED")
                except aetcd.exceptions.ClientError as exc:
                    outcomes.append(f"{name}: {type(exc).__name__}")
        finally:
            await c.close()
        return outcomes

    before = state(cluster)
    for username, password in [(None, None), ("root", "wrong"), ("root", ""), ("quartz", "x")]:
        outcomes = asyncio.run(attempt(username, password))
        assert outcomes and not any("ACCEPTED" in o for o in outcomes), (username, outcomes)
    assert state(cluster) == before
    # the control: with the cluster's credentials etcd answers (a read: the cluster is live)
    auth = ClusterCredentials.load(cluster.data_dir).etcd_auth
    assert asyncio.run(attempt(auth.user, auth.password, writes=False)) == ["read: ACCEPTED"]


assert TOKEN_TTL_S < 1_000_000  # the "expired member token" above is issued long before now
