"""Backups through S3 (issue 15): moto's S3 server (the real S3 protocol, on loopback) runs the
same code as file:// repositories. A shard big enough for multipart uploads is backed up,
verified, and restored bit for bit into a fresh cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from quartz_cluster.cluster import LocalCluster
from quartz_cluster.procs import free_port

pytestmark = pytest.mark.integration
DIM = 384
N = 12_000  # one shard: its index checkpoint (~20 MB) goes up in parts
BUCKET = "quartz-backups"
WAIT_S = 180.0


@pytest.fixture
def s3(monkeypatch, tmp_path):
    pytest.importorskip("moto")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115 (closed after the server stops)
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "moto server did not start"
            time.sleep(0.1)
    # the standard AWS settings: this process (the CLI) and the cluster's children read them
    for k, v in {
        "AWS_ENDPOINT_URL_S3": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(k, v)
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    yield endpoint
    proc.kill()
    proc.wait()
    log.close()


def test_backup_to_s3_and_restore(s3, tmp_path):
    import boto3

    ids = [f"s{i}" for i in range(N)]
    vectors = np.random.default_rng(3).normal(size=(N, DIM)).astype("<f4")
    payloads = [{"i": i} for i in range(N)]
    url = f"s3://{BUCKET}/prod/nightly"
    with LocalCluster(tmp_path / "a", nodes=1) as a, a.client(timeout=120) as client:
        client.create_collection("big", dim=DIM, shards=1, replication_factor=1)
        for at in range(0, N, 2000):
            client.upsert("big", ids[at : at + 2000], vectors[at : at + 2000], payloads[at : at + 2000])
        job = client.create_backup(url)
        deadline = time.monotonic() + WAIT_S
        while job["state"] in ("pending", "running"):
            assert time.monotonic() < deadline
            time.sleep(0.3)
            job = client.backup(job["id"])
        assert job["state"] == "complete", job
    objects = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="prod/nightly/objects/")["Contents"]
    assert max(o["Size"] for o in objects) > 16 << 20  # went up as a multipart upload
    r = subprocess.run(
        [sys.executable, "-m", "quartz_cluster", "backup", "verify", job["id"], "--from", url],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert r.returncode == 0 and "all intact" in r.stdout, r.stderr
    with LocalCluster(tmp_path / "b", nodes=1) as b, b.client(timeout=120) as client:
        client.restore_backup(url, job["id"])
        deadline = time.monotonic() + WAIT_S
        while client.describe_collection("big").status != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.3)
        got = {}
        for at in range(0, N, 1000):
            for p in client.get("big", ids[at : at + 1000], with_vectors=True, with_payload=True):
                got[p.id] = (np.asarray(p.vector, dtype="<f4").tobytes(), p.payload)
        assert len(got) == N
        for i in range(N):
            assert got[ids[i]] == (vectors[i].tobytes(), payloads[i])
