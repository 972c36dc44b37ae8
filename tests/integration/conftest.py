from __future__ import annotations

import contextlib
import time

import grpc
import numpy as np
import pytest

from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import EtcdProcess, NodeProcess

LOAD_BATCH = 2000
WAIT_S = 60.0  # how long a test waits for the cluster to get somewhere: a bound, not a speed claim


def wait_for(predicate, what: str, wait_s: float = WAIT_S, poll_s: float = 0.2):
    """predicate()'s first truthy value; an AssertionError naming `what` if none comes within
    `wait_s`."""
    deadline = time.monotonic() + wait_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {wait_s} s: {what}"
        time.sleep(poll_s)


@pytest.fixture
def etcd(tmp_path):
    """A real single-member etcd of the test's own (no auth), killed after it."""
    proc = EtcdProcess("etcd", tmp_path / "etcd", tmp_path / "etcd.log").start()
    yield proc
    with contextlib.suppress(Exception):
        proc.kill()


@pytest.fixture(scope="module")
def module_node(tmp_path_factory):
    """One real node shared by a module's tests (loading data is the slow part)."""
    base = tmp_path_factory.mktemp("node")
    proc = NodeProcess("n1", base / "n1", base / "n1.log")
    proc.start()
    client = NodeClient(proc.address, timeout_s=120)
    yield proc, client
    client.close()
    with contextlib.suppress(Exception):
        proc.kill()


def load(client: NodeClient, coll: str, ids, vectors: np.ndarray, payloads=None, shard: int = 0) -> None:
    for start in range(0, len(ids), LOAD_BATCH):
        end = start + LOAD_BATCH
        client.upsert(
            coll, shard, ids[start:end], vectors[start:end], payloads[start:end] if payloads else None
        )


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory):
    """One real cluster (etcd, 2 coordinators, 3 nodes, 2 routers) shared by a module's tests."""
    from quartz_cluster.cluster import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), nodes=3, coordinators=2, routers=2)
    cluster.start()
    yield cluster
    cluster.kill()


# --------------------------------------------------------------------------- credentials
# A cluster started by LocalCluster has auth on: tests reach it the way a user or a member
# process would, with the admin key (clients), the etcd credentials (etcd) or a member token
# signed with the cluster secret (node RPCs). No back door.


def bearer(api_key: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying an API key, for raw stubs to a router."""
    return (("authorization", f"Bearer {api_key}"),)


def etcd_auth(cluster):
    """The etcd credentials of a LocalCluster (None for an auth=False one)."""
    from quartz_cluster.auth.cluster import ClusterCredentials

    return ClusterCredentials.load(cluster.data_dir).etcd_auth if cluster.auth else None


def etcd_store(cluster):
    """An EtcdStore on the cluster's etcd, logged in with the cluster's credentials."""
    from quartz_cluster.meta.store import EtcdStore

    return EtcdStore(cluster.etcd.endpoint, etcd_auth(cluster))


def member_metadata(cluster, member: str = "test") -> tuple[tuple[str, str], ...]:
    """gRPC metadata with a member token of the cluster, for raw stubs to its nodes."""
    from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity

    return MemberIdentity(ClusterCredentials.load(cluster.data_dir), member).metadata()


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds fixed metadata (an API key, a member token) to every call of a channel."""

    def __init__(self, metadata) -> None:
        self.metadata = tuple(metadata)

    def _details(self, details):
        return details._replace(metadata=(*(details.metadata or ()), *self.metadata))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)


def with_metadata(channel: grpc.Channel, metadata) -> grpc.Channel:
    """`channel` sending `metadata` (e.g. bearer(key)) on every call, as a client would."""
    return grpc.intercept_channel(channel, _Metadata(metadata))


def member_node_client(cluster, address: str, **kwargs) -> NodeClient:
    """A NodeClient to a node of the cluster that calls as a cluster member."""
    return NodeClient(address, identity=cluster.member_identity("test"), **kwargs)
