"""`quartz bootstrap` against an etcd the operator runs (as Kubernetes' bootstrap Job and the
systemd guide do): it turns etcd's auth on, creates the `default` tenant and prints a new admin
key; a cluster started with the same cluster secret then serves that key. Real etcd, real node,
coordinator and router processes."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import subprocess
import sys

import aetcd.exceptions
import numpy as np
import orjson
import pytest

from quartz_cluster import errors
from quartz_cluster.auth.cluster import SECRET_FILE
from quartz_cluster.client import QuartzClient
from quartz_cluster.meta import schema
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.procs import CoordinatorProcess, NodeProcess, RouterProcess

pytestmark = pytest.mark.integration

DIM = 8


def quartz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quartz_cluster", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def secret_dir(tmp_path):
    """A cluster secret as the operator makes it (`openssl rand -hex 32`), in a read-only
    directory, as a mounted Kubernetes Secret is."""
    d = tmp_path / "secret"
    d.mkdir()
    (d / SECRET_FILE).write_text(secrets.token_hex(32) + "\n")
    (d / SECRET_FILE).chmod(0o400)
    d.chmod(0o500)
    yield d
    d.chmod(0o700)


async def _unauthenticated_get(endpoint: str) -> None:
    store = EtcdStore(endpoint)
    try:
        await store.get(schema.tenant_key(schema.DEFAULT_TENANT))
    finally:
        await store.close()


def test_bootstrap_secures_an_operators_etcd_and_its_key_works_on_a_cluster(tmp_path, etcd, secret_dir):
    done = quartz("bootstrap", "--etcd", etcd.endpoint, "--cluster-dir", str(secret_dir), "--json")
    assert done.returncode == 0, done.stderr
    out = orjson.loads(done.stdout)
    assert out["admin_key"].startswith("qz_") and out["tenant"] == "default"
    assert list(secret_dir.iterdir()) == [secret_dir / SECRET_FILE]  # nothing written beside it

    # etcd now refuses a client without the root password derived from the secret
    with pytest.raises(aetcd.exceptions.InvalidArgumentError, match="user name is empty"):
        asyncio.run(_unauthenticated_get(etcd.endpoint))

    # a second run (a retried Job): auth stays on, another key is printed; text output
    again = quartz("bootstrap", "--etcd", etcd.endpoint, "--cluster-dir", str(secret_dir))
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("admin key: qz_")
    second = again.stdout.split("admin key: ", 1)[1].strip()
    assert second != out["admin_key"]

    procs = []
    try:
        procs.append(
            CoordinatorProcess("c1", etcd.endpoint, tmp_path / "c1.log", cluster_dir=secret_dir).start()
        )
        procs.append(NodeProcess("n1", tmp_path / "n1", etcd=etcd.endpoint, cluster_dir=secret_dir).start())
        router = RouterProcess(
            "r1", etcd.endpoint, tmp_path / "r1.json", tmp_path / "r1.log", cluster_dir=secret_dir
        ).start()
        procs.append(router)
        for key in (out["admin_key"], second):
            with QuartzClient(router.address, api_key=key, timeout=30) as client:
                name = f"c{key[3:9]}"
                client.create_collection(name, dim=DIM, shards=1, replication_factor=1)
                vectors = np.eye(DIM, dtype=np.float32)
                client.upsert(name, [str(i) for i in range(DIM)], vectors)
                assert client.search(name, vectors[3], k=1)[0].id == "3"
        unknown = "qz_" + "0" * 12 + "_" + "0" * 40
        with (
            QuartzClient(router.address, api_key=unknown, timeout=30) as c,
            pytest.raises(errors.Unauthenticated),
        ):
            c.list_collections()
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()


def test_bootstrap_refuses_without_etcd_or_a_secret_and_says_which(tmp_path, etcd, monkeypatch):
    monkeypatch.delenv("QUARTZ_ETCD", raising=False)
    done = quartz("bootstrap", "--cluster-dir", str(tmp_path))
    assert done.returncode == 1
    assert "--etcd" in done.stderr and "Traceback" not in done.stderr
    done = quartz("bootstrap", "--etcd", etcd.endpoint, "--cluster-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"{tmp_path / SECRET_FILE} does not exist" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / SECRET_FILE).write_text(secrets.token_hex(32) + "\n")
    done = quartz("bootstrap", "--etcd", "etcd.internal:port", "--cluster-dir", str(tmp_path))
    assert done.returncode == 1
    assert "'etcd.internal:port' is not host:port" in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    done = quartz("bootstrap", "--etcd", closed, "--cluster-dir", str(tmp_path))
    assert done.returncode == 1
    assert done.stderr.startswith("error: UNAVAILABLE:") and "Traceback" not in done.stderr
    # nothing was changed: etcd's auth is still off
    asyncio.run(_unauthenticated_get(etcd.endpoint))
