"""Backups over the HTTP gateway (DESIGN §2: JSON over the same operations as gRPC), against a
live cluster: take a backup, follow its job, read its manifest, restore it under another name
(bit-exact, searchable), schedules set, listed and deleted, a backup deleted; bad input is a
problem+json 4xx naming the field and changes nothing; a key that is not a cluster admin's is
refused."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from quartz_cluster.cluster import LocalCluster
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration
DIM = 8
N = 300
WAIT_S = 120.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = LocalCluster(tmp_path_factory.mktemp("backup-http"), nodes=2)
    c.start()
    yield c
    c.kill()


def http(cluster, method: str, path: str, body=None, key: str | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {key or cluster.admin_key}"}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://{cluster.http_address}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_a_backup_taken_and_restored_over_http_is_bit_exact(cluster, tmp_path):
    admin = cluster.client(timeout=60)
    ids = [f"p{i}" for i in range(N)]
    vectors = np.random.default_rng(1).normal(size=(N, DIM)).astype("<f4")
    admin.create_collection("src", dim=DIM, shards=2, replication_factor=2)
    admin.upsert("src", ids, vectors, payloads=[{"i": i} for i in range(N)])
    repo = f"file://{tmp_path / 'repo'}"

    status, job = http(cluster, "POST", "/v1/admin/backups", {"repository": repo, "collections": ["src"]})
    assert status == 202 and job["state"] in ("pending", "running") and job["collections"] == ["default/src"]

    def done():
        s, j = http(cluster, "GET", f"/v1/admin/backups/{job['id']}")
        assert s == 200, j
        return j if j["state"] not in ("pending", "running") else None

    finished = wait_for(done, "the backup finishes", WAIT_S)
    assert finished["state"] == "complete", finished
    assert finished["vectors"] == N and finished["shards_done"] == finished["shards_total"] == 2

    status, listing = http(cluster, "GET", f"/v1/admin/backups?repository={repo}")
    assert status == 200 and job["id"] in [b["id"] for b in listing["backups"]]
    status, described = http(cluster, "GET", f"/v1/admin/backups/{job['id']}/manifest")
    assert status == 200 and described["backup"]["id"] == job["id"]
    assert [c["name"] for c in described["manifest"]["collections"]] == ["src"]

    status, restored = http(
        cluster,
        "POST",
        f"/v1/admin/backups/{job['id']}/restore",
        {"repository": repo, "collections": ["src"], "as_name": "copy", "replication_factor": 2},
    )
    assert status == 201, restored
    assert [c["name"] for c in restored["collections"]] == ["copy"]
    wait_for(lambda: admin.describe_collection("copy").status == "ready", "the restore is ready", WAIT_S)
    got = {p.id: p for p in admin.get("copy", ids, with_vectors=True, with_payload=True)}
    assert len(got) == N
    for i in (0, 1, N // 2, N - 1):
        assert np.asarray(got[ids[i]].vector, dtype="<f4").tobytes() == vectors[i].tobytes()
        assert got[ids[i]].payload == {"i": i}
    assert admin.search("copy", vectors[7], k=1)[0].id == "p7"

    status, deleted = http(cluster, "DELETE", f"/v1/admin/backups/{job['id']}?repository={repo}")
    assert status == 200 and deleted["deleted"] is True
    status, problem = http(cluster, "GET", f"/v1/admin/backups/{job['id']}")
    assert status == 404, problem


def test_schedules_over_http(cluster, tmp_path):
    repo = f"file://{tmp_path / 'sched'}"
    body = {"repository": repo, "interval_s": 86400, "keep": 3}
    status, sched = http(cluster, "PUT", "/v1/admin/backup-schedules/nightly", body)
    assert status == 200, sched
    assert sched["name"] == "nightly" and sched["interval_s"] == 86400 and sched["keep"] == 3
    assert sched["next_at"] > time.time()
    status, listing = http(cluster, "GET", "/v1/admin/backup-schedules")
    assert status == 200 and [s["name"] for s in listing["schedules"]] == ["nightly"]
    status, deleted = http(cluster, "DELETE", "/v1/admin/backup-schedules/nightly")
    assert status == 200 and deleted == {"deleted": True}
    status, listing = http(cluster, "GET", "/v1/admin/backup-schedules")
    assert listing["schedules"] == []


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "field"),
    [
        ("POST", "/v1/admin/backups", {"repository": "ftp://x/y"}, 400, "repository"),
        (
            "POST",
            "/v1/admin/backups",
            {"repository": "file:///tmp/q", "collections": ["nope"]},
            404,
            "collections",
        ),
        ("POST", "/v1/admin/backups", {"repository": "file:///tmp/q", "extra": 1}, 400, "extra"),
        ("GET", "/v1/admin/backups/-not-an-id", None, 400, "id"),
        ("GET", "/v1/admin/backups/20260101T000000Z-abcdef", None, 404, "id"),
        (
            "PUT",
            "/v1/admin/backup-schedules/s1",
            {"repository": "file:///tmp/q", "interval_s": 0, "keep": 1},
            400,
            "interval_s",
        ),
        (
            "PUT",
            "/v1/admin/backup-schedules/s1",
            {"repository": "file:///tmp/q", "interval_s": 60, "keep": 1, "collections": ["nope"]},
            404,
            "collections",
        ),
        (
            "POST",
            "/v1/admin/backups/20260101T000000Z-abcdef/restore",
            {"repository": "s4://x"},
            400,
            "repository",
        ),
    ],
)
def test_bad_backup_requests_are_refused_naming_the_field_and_change_nothing(
    cluster, method, path, body, code, field
):
    before = http(cluster, "GET", "/v1/admin/backups")[1]["backups"]
    status, problem = http(cluster, method, path, body)
    assert status == code, problem
    assert field in json.dumps(problem), problem
    assert http(cluster, "GET", "/v1/admin/backups")[1]["backups"] == before
    assert http(cluster, "GET", "/v1/admin/backup-schedules")[1]["schedules"] == []


def test_backups_need_a_cluster_admin_key(cluster, tmp_path):
    admin = cluster.client(timeout=60)
    key, _ = admin.create_key(role="tenant-admin")
    status, problem = http(
        cluster, "POST", "/v1/admin/backups", {"repository": f"file://{tmp_path}/r"}, key=key
    )
    assert status == 403, problem
    status, problem = http(cluster, "GET", "/v1/admin/backup-schedules", key=key)
    assert status == 403, problem
