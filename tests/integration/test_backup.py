"""Backups and restores with real processes (issue 15; DESIGN §13, ADR 17).

An online backup is taken while 2 writers go on; then every data dir is deleted, a fresh
cluster with another node count restores it, and every point acknowledged before the backup
began is there bit for bit (ids, float32 vectors, payloads). A second backup after a few
changes copies only what changed and restores to exactly what the source held at its cut.
A corrupted object makes `verify` and `restore` refuse, naming it; an unwritable target is
refused before any job exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from quartz_cluster import errors
from quartz_cluster.backup import manifest
from quartz_cluster.backup.repository import object_key
from quartz_cluster.client import QuartzClient
from quartz_cluster.cluster import LocalCluster

pytestmark = pytest.mark.integration
DIM = 16
N = 4000
BACKUP_WAIT_S = 120.0


def points(prefix: str, n: int, seed: int):
    ids = [f"{prefix}{i}" for i in range(n)]
    vectors = np.random.default_rng(seed).normal(size=(n, DIM)).astype("<f4")
    payloads = [{"i": i, "tag": f"t{i % 7}", "prefix": prefix} for i in range(n)]
    return ids, vectors, payloads


def wait_backup(client, backup_id: str) -> dict:
    deadline = time.monotonic() + BACKUP_WAIT_S
    job = client.backup(backup_id)
    while job["state"] in ("pending", "running"):
        assert time.monotonic() < deadline, f"backup still {job['state']}: {job}"
        time.sleep(0.2)
        job = client.backup(backup_id)
    return job


def quartz(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quartz_cluster", *args], capture_output=True, text=True)


def snapshot(client, collection: str, ids: list[str]) -> dict[str, tuple[bytes, dict]]:
    out = {}
    for at in range(0, len(ids), 1000):
        for p in client.get(collection, ids[at : at + 1000], with_vectors=True, with_payload=True):
            out[p.id] = (np.asarray(p.vector, dtype="<f4").tobytes(), p.payload)
    return out


@pytest.fixture(scope="module")
def repo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("repo")


@pytest.fixture(scope="module")
def source(tmp_path_factory, repo_dir):
    """A 3-node cluster with `docs` (3 shards, RF 2), backed up once while 2 writers write, then
    again after a few changes. Its data dirs are deleted when the module's tests have it."""
    base_ids, base_vec, base_pay = points("p", N, 1)
    c = LocalCluster(tmp_path_factory.mktemp("source"), nodes=3).start()
    acked: list[tuple[float, list[str]]] = []  # (acknowledged at, ids) of the writers' batches
    stop = threading.Event()

    def writer(w: int) -> None:
        with c.client(timeout=60) as wc:
            b = 0
            while not stop.is_set():
                ids, vec, pay = points(f"w{w}-{b}-", 50, 100 + w * 1000 + b)
                wc.upsert("docs", ids, vec, pay)
                acked.append((time.time(), ids))
                b += 1

    with c.client(timeout=60) as admin:
        admin.create_collection("docs", dim=DIM, shards=3, metric="l2", replication_factor=2)
        for at in range(0, N, 1000):
            admin.upsert("docs", base_ids[at : at + 1000], base_vec[at : at + 1000], base_pay[at : at + 1000])
        threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        job = admin.create_backup(f"file://{repo_dir}")
        full = wait_backup(admin, job["id"])
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        before = [pid for at, ids in acked if at < full["requested_at"] for pid in ids]
        # a few changes, then the second (incremental) backup and the state it must restore to
        ch_ids, ch_vec, ch_pay = points("p", 100, 7)  # overwrite 100 base points
        admin.upsert("docs", ch_ids, ch_vec, ch_pay)
        admin.delete("docs", base_ids[200:250])
        writer_ids = [pid for _, ids in acked for pid in ids]
        all_ids = base_ids + writer_ids
        inc = wait_backup(admin, admin.create_backup(f"file://{repo_dir}")["id"])
        at_inc = snapshot(admin, "docs", all_ids)
        expected_full = {
            pid: base for pid, base in zip(base_ids, zip(base_vec, base_pay, strict=True), strict=True)
        }
    c.kill()
    yield {
        "full": full,
        "inc": inc,
        "before": before,
        "all_ids": all_ids,
        "at_inc": at_inc,
        "base": (base_ids, base_vec, base_pay),
        "expected_full": expected_full,
        "data_dir": c.data_dir,
    }


def test_online_backup_restores_every_acknowledged_write_after_total_loss(source, repo_dir, tmp_path):
    full = source["full"]
    assert full["state"] == "complete" and full["shards_done"] == 3
    shutil.rmtree(source["data_dir"])  # every data dir of the source cluster (and its etcd)
    url = f"file://{repo_dir}"
    with LocalCluster(tmp_path / "fresh", nodes=2) as fresh:
        r = quartz(
            "backup", "restore", full["id"], "--from", url, "--data-dir", str(fresh.data_dir), "--json"
        )
        assert r.returncode == 0, r.stderr
        with fresh.client(timeout=60) as client:
            info = client.describe_collection("docs")
            assert info.status == "ready" and info.replication_factor == 2
            base_ids, base_vec, base_pay = source["base"]
            got = snapshot(client, "docs", base_ids)
            assert set(got) == set(base_ids)
            for i, pid in enumerate(base_ids):
                assert got[pid] == (base_vec[i].tobytes(), base_pay[i])
            writers = snapshot(client, "docs", source["before"])
            assert set(writers) == set(source["before"]), "a write acknowledged before the backup is missing"
            assert len(source["before"]) > 0
            # searchable: each point finds itself
            hits = client.search("docs", base_vec[:20], k=1)
            assert [h[0].id for h in hits] == base_ids[:20]


def test_incremental_backup_copies_only_what_changed_and_restores_the_same(source, repo_dir, tmp_path):
    full, inc = source["full"], source["inc"]
    assert inc["state"] == "complete" and inc["parent"] == full["id"]
    assert inc["bytes_copied"] < 0.5 * full["bytes_copied"], (inc, full)
    url = f"file://{repo_dir}"
    with LocalCluster(tmp_path / "fresh", nodes=1) as fresh, fresh.client(timeout=60) as client:
        client.restore_backup(url, inc["id"], ["docs"], as_name="docs_inc")
        deadline = time.monotonic() + BACKUP_WAIT_S
        while client.describe_collection("docs_inc").status != "ready":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert snapshot(client, "docs_inc", source["all_ids"]) == source["at_inc"]


def test_corrupt_object_is_named_by_verify_and_refused_by_restore(source, repo_dir, tmp_path):
    url = f"file://{repo_dir}"
    full = source["full"]
    r = quartz("backup", "verify", full["id"], "--from", url)
    assert r.returncode == 0, r.stderr
    m = manifest.decode_manifest((repo_dir / manifest.manifest_key(full["id"])).read_bytes(), "m")
    victim = max(m["collections"][0]["parts"][1]["files"], key=lambda f: f["size"])
    path = repo_dir / object_key(victim["object"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))
    try:
        r = quartz("backup", "verify", full["id"], "--from", url, "--json")
        assert r.returncode == 1
        assert object_key(victim["object"]) in r.stdout and "corrupt" in r.stdout
        with LocalCluster(tmp_path / "fresh", nodes=1) as fresh:
            r = quartz("backup", "restore", full["id"], "--from", url, "--data-dir", str(fresh.data_dir))
            assert r.returncode == 1
            assert object_key(victim["object"]) in r.stderr, r.stderr
            with fresh.client(timeout=30) as client:
                assert [c.name for c in client.list_collections()] == []  # nothing half-restored
    finally:
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


def test_unwritable_target_is_refused_before_any_job(tmp_path):
    target = tmp_path / "a-file"
    target.write_bytes(b"not a directory")  # unwritable as a repository, for root too
    with LocalCluster(tmp_path / "c", nodes=1) as c, c.client(timeout=30) as client:
        client.create_collection("docs", dim=DIM, shards=1)
        with pytest.raises(errors.FailedPrecondition, match="repository"):
            client.create_backup(f"file://{target}")
        with pytest.raises(errors.InvalidArgument, match="repository"):
            client.create_backup("ftp://example/x")
        with pytest.raises(errors.NotFound, match="collections"):
            client.create_backup(f"file://{tmp_path}/ok", ["nope"])
        assert client.list_backups() == []
        # backups are the cluster admin's: a tenant's own admin key may not take or restore one
        client.create_tenant("acme")
        key, _ = client.create_key(tenant="acme", role="tenant-admin")
        with QuartzClient(c.router_address, api_key=key, timeout=30) as tenant_client:
            with pytest.raises(errors.PermissionDenied):
                tenant_client.create_backup(f"file://{tmp_path}/ok")
            with pytest.raises(errors.PermissionDenied):
                tenant_client.list_backups()
            with pytest.raises(errors.PermissionDenied):
                tenant_client.restore_backup(f"file://{tmp_path}/ok", "b1")
