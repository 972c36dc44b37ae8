from __future__ import annotations

import contextlib

import pytest

from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess


@pytest.fixture
def node_factory(tmp_path):
    """Start real node processes in this test's temp dir; every one is killed at teardown."""
    started: list[NodeProcess] = []
    clients: list[NodeClient] = []

    def start(node_id: str = "n1", extra_args: list[str] | None = None) -> tuple[NodeProcess, NodeClient]:
        proc = NodeProcess(node_id, tmp_path / node_id, tmp_path / f"{node_id}.log", extra_args)
        started.append(proc)
        proc.start()
        client = NodeClient(proc.address)
        clients.append(client)
        return proc, client

    yield start
    for client in clients:
        client.close()
    for proc in started:
        with contextlib.suppress(Exception):
            proc.kill()


@pytest.fixture
def cluster_factory(tmp_path):
    """Start real clusters (etcd + coordinators + nodes + routers) in this test's temp dir;
    every process is killed at teardown, whatever the test did."""
    from quartz_cluster.cluster import LocalCluster

    started: list[LocalCluster] = []

    def start(name: str = "cluster", **kwargs) -> LocalCluster:
        c = LocalCluster(tmp_path / name, **kwargs)
        started.append(c)
        return c.start()

    yield start
    for c in started:
        c.kill()
