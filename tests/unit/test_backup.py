"""Backups' pure parts (issue 15): the manifest checks, a file repository's atomic writes and
listing, verify naming a bad object, schedules' periods, restore plans and epochs."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from quartz_cluster.backup import catalog, jobs, manifest, verify
from quartz_cluster.backup.repository import FileRepository, open_repository
from quartz_cluster.coordinator.backups import delete_backup, gc, list_manifests
from quartz_cluster.coordinator.reconcile import ClusterView, restored_epoch, shard_restore
from quartz_cluster.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from quartz_cluster.meta import schema


def put_object(repo, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    repo.put_bytes(f"objects/{digest}", data)
    return {"object": digest, "size": len(data)}


def make_part(repo, cid: str, shard: int, epoch: int = 3) -> dict:
    sst = put_object(repo, f"sst {cid} {shard}".encode())
    idx = put_object(repo, f"index {cid} {shard}".encode())
    return {
        "collection_id": cid,
        "shard": shard,
        "lsn": 10,
        "epoch": epoch,
        "count": 5,
        "history": "ab",
        "node": "n1",
        "files": [{"path": "db/000007.sst", **sst}],
        "index": {"lsn": 9, "files": [{"path": "ckpt/ckpt-00000000000000000009.hnsw", **idx}]},
        "bytes_copied": 0,
        "seconds": 0.1,
    }


def write_backup(
    repo, backup_id: str, cid: str = "c1", shards: int = 2, schedule: str = "", done: float = 1.0
):
    parts = [make_part(repo, cid, s) for s in range(shards)]
    coll = {
        "name": "docs",
        "tenant": "default",
        "id": cid,
        "dim": 4,
        "metric": "cosine",
        "shards": shards,
        "replication_factor": 2,
        "m": 16,
        "ef_construction": 200,
        "ef": 64,
        "parts": parts,
    }
    body = {
        "format": 1,
        "id": backup_id,
        "schedule": schedule,
        "parent": "",
        "requested_at": done - 1,
        "completed_at": done,
        "collections": [coll],
        "tenants": [{"name": "default", "plan": "paid"}],
        "totals": manifest.totals([coll]),
    }
    repo.put_bytes(manifest.manifest_key(backup_id), manifest.encode(body))
    return body


@pytest.fixture
def repo(tmp_path):
    return open_repository(f"file://{tmp_path}/repo")


def test_repository_urls_are_checked():
    for bad in ("", "ftp://x/y", "file://host/dir", "file:relative", "s3://"):
        with pytest.raises(InvalidArgument, match="repository"):
            open_repository(bad)
    assert isinstance(open_repository("file:///tmp/x"), FileRepository)


def test_file_repository_writes_atomically_and_lists_only_complete_objects(repo, tmp_path):
    repo.put_bytes("a/b/c", b"xyz")
    (tmp_path / "repo" / "a" / "b" / "half.tmp-1234").write_bytes(b"partial")  # a crashed write
    assert repo.list("a/") == ["a/b/c"]
    assert repo.get_bytes("a/b/c") == b"xyz" and repo.size("a/b/c") == 3 and repo.size("nope") is None
    with pytest.raises(NotFound):
        repo.get_bytes("nope")
    repo.check_writable()
    assert repo.list("tmp/") == []


def test_a_file_where_the_repository_should_be_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_bytes(b"")
    repo = open_repository(f"file://{tmp_path}/f")
    with pytest.raises(FailedPrecondition, match="f"):
        repo.check_writable()


def test_manifest_parts_are_checked(repo):
    part = make_part(repo, "c1", 0)
    assert manifest.check_part(part, "p") is part
    for breakage in (
        lambda p: p["files"][0].update(path="../../etc/passwd"),
        lambda p: p["files"][0].update(object="not-a-hash"),
        lambda p: p.update(lsn=-1),
        lambda p: p["files"].append(dict(p["files"][0])),
        lambda p: p.pop("history"),
    ):
        bad = orjson.loads(orjson.dumps(part))
        breakage(bad)
        with pytest.raises(FailedPrecondition, match="not a valid backup part"):
            manifest.check_part(bad, "p")
    with pytest.raises(InvalidArgument):
        manifest.check_id("../x")


def test_only_backups_with_a_manifest_are_listed_and_gc_keeps_what_they_use(repo):
    write_backup(repo, "b1", done=1)
    write_backup(repo, "b2", cid="c2", done=2)
    repo.put_bytes(manifest.part_key("b3", "c3", 0), b"{}")  # a backup that never completed
    assert [m["id"] for m in list_manifests(repo)] == ["b1", "b2"]
    orphan = put_object(repo, b"left by a failed backup")
    delete_backup(repo, "b1")
    removed, _ = gc(repo)
    assert [m["id"] for m in list_manifests(repo)] == ["b2"]
    assert repo.size(f"objects/{orphan['object']}") is None
    assert removed == 5  # b1's 4 objects and the orphan
    assert verify.verify(repo, "b2")["ok"]


def test_verify_names_a_corrupt_and_a_missing_object(repo, tmp_path):
    m = write_backup(repo, "b1")
    victim = m["collections"][0]["parts"][0]["files"][0]["object"]
    gone = m["collections"][0]["parts"][1]["index"]["files"][0]["object"]
    path = tmp_path / "repo" / "objects" / victim
    path.write_bytes(b"X" * path.stat().st_size)
    repo.delete(f"objects/{gone}")
    report = verify.verify(repo, "b1")
    assert not report["ok"]
    problems = {p["object"]: p["problem"] for p in report["problems"]}
    assert problems[f"objects/{victim}"].startswith("corrupt")
    assert problems[f"objects/{gone}"] == "missing"
    with pytest.raises(FailedPrecondition, match="missing"):
        catalog.check_objects(repo, m, m["collections"])


def test_schedule_periods_and_checks():
    s = jobs.Schedule("nightly", "file:///b", interval_s=3600, keep=7).check()
    assert s.period(7199.9) == 1 and s.period(7200) == 2
    assert s.job_id(2) == "nightly-2"
    for bad in (
        jobs.Schedule("Bad Name", "file:///b", 3600, 7),
        jobs.Schedule("ok", "file:///b", 1, 7),
        jobs.Schedule("ok", "file:///b", 3600, 0),
    ):
        with pytest.raises(InvalidArgument):
            bad.check()


def test_restored_shards_start_above_the_backed_up_epoch():
    src = orjson.dumps({"repository": "file:///b", "backup": "b1", "source": "c1", "epochs": [4, 9]}).decode()
    assert restored_epoch(shard_restore(src, 1)) == 9
    assert orjson.loads(shard_restore(src, 0))["shard"] == 0
    assert shard_restore("", 0) == "" and restored_epoch("") == 0


def test_restore_plan(repo):
    m = write_backup(repo, "b1")
    view = ClusterView()
    plan = catalog.plan_restore(m, repo.url, view, [], "", "", 1)
    (rec,) = plan.collections
    assert rec.name == "docs" and rec.tenant == "default" and rec.replication_factor == 1
    assert orjson.loads(rec.restore)["epochs"] == [3, 3]
    assert [t.name for t in plan.tenants] == ["default"] and plan.tenants[0].plan == "paid"
    other = catalog.plan_restore(m, repo.url, view, ["docs"], "docs2", "acme", 3)
    assert other.collections[0].qualified == "acme/docs2" and [t.name for t in other.tenants] == ["acme"]
    view.collections["default/docs"] = rec
    view.tenants["default"] = schema.TenantRecord("default")
    with pytest.raises(AlreadyExists, match="as NAME"):
        catalog.plan_restore(m, repo.url, view, [], "", "", 1)
    with pytest.raises(NotFound, match="collections"):
        catalog.plan_restore(m, repo.url, view, ["nope"], "", "", 1)
