from __future__ import annotations

import contextlib

import numpy as np
import pytest

from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess

LOAD_BATCH = 2000


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
