"""What a router answers about backups: jobs (etcd) and complete backups (repositories), and
how a restore becomes collection records. Blocking repository calls: run in a thread."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

from quartz_cluster.backup import jobs, manifest
from quartz_cluster.backup.repository import Repository, object_key
from quartz_cluster.coordinator.backups import list_manifests
from quartz_cluster.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from quartz_cluster.meta import schema

LIST_MAX = 1000


def job_of_manifest(m: dict, repository: str) -> jobs.Job:
    """A complete backup as a job (what `backup list` shows after the cluster that made it is gone)."""
    t = m.get("totals", {})
    return jobs.Job(
        id=m["id"],
        repository=repository,
        collections=tuple(schema.qualified(c["tenant"], c["name"]) for c in m["collections"]),
        state="complete",
        schedule=m.get("schedule", ""),
        requested_at=m.get("requested_at", 0.0),
        finished_at=m.get("completed_at", 0.0),
        shards_total=t.get("shards", 0),
        shards_done=t.get("shards", 0),
        bytes_total=t.get("bytes", 0),
        bytes_copied=t.get("bytes_copied", 0),
        vectors=t.get("vectors", 0),
        parent=m.get("parent", ""),
    )


def merged(etcd_jobs: list[jobs.Job], repo: Repository | None) -> list[jobs.Job]:
    """Jobs known to the cluster, and the complete backups of `repo` (its manifests are the
    truth: a job recorded complete whose manifest is gone was deleted)."""
    out: dict[str, jobs.Job] = {}
    for j in etcd_jobs:
        if repo is None or j.repository == repo.url:
            out[j.id] = j
    if repo is not None:
        present = {m["id"] for m in list_manifests(repo)}
        for m in list_manifests(repo):
            out[m["id"]] = job_of_manifest(m, repo.url)
        for jid in [j for j, job in out.items() if job.state == "complete" and j not in present]:
            del out[jid]
    return sorted(out.values(), key=lambda j: (j.requested_at, j.id))[-LIST_MAX:]


def read_manifest(repo: Repository, backup_id: str) -> dict:
    manifest.check_id(backup_id, "backup_id")
    key = manifest.manifest_key(backup_id)
    try:
        raw = repo.get_bytes(key)
    except NotFound:
        raise NotFound(
            f"no complete backup {backup_id} in {repo.url} (a failed or running backup has no manifest)",
            "backup_id",
        ) from None
    return manifest.decode_manifest(raw, f"{repo.url}/{key}")


def check_objects(repo: Repository, m: dict, entries: list[dict]) -> None:
    """Every object the restore needs is present with its size (a cheap check before anything
    is created; contents are checked as they are downloaded)."""
    for coll in entries:
        for part in coll["parts"]:
            for f in manifest.part_files(part):
                size = repo.size(object_key(f["object"]))
                if size != f["size"]:
                    what = "missing" if size is None else f"{size} bytes, not {f['size']}"
                    raise FailedPrecondition(
                        f"backup {m['id']}: object {object_key(f['object'])} ({f['path']} of "
                        f"{coll['tenant']}/{coll['name']} shard {part['shard']}) is {what}",
                        "backup_id",
                    )


@dataclass(frozen=True, slots=True)
class RestorePlan:
    collections: list[schema.CollectionRecord]
    tenants: list[schema.TenantRecord]  # to create (absent from the cluster)


def plan_restore(
    m: dict,
    repository: str,
    view,
    names: list[str],
    as_name: str,
    tenant: str,
    replication_factor: int,
) -> RestorePlan:
    """Collection records (with their restore source) for the chosen collections of backup m."""
    entries = m["collections"]
    if names:
        by_name: dict[str, dict] = {}
        for c in entries:
            by_name[schema.qualified(c["tenant"], c["name"])] = c
            by_name.setdefault(c["name"], c)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise NotFound(f"backup {m['id']} has no collection {missing[0]!r}", "collections")
        entries = [by_name[n] for n in dict.fromkeys(names)]
    if not entries:
        raise FailedPrecondition(f"backup {m['id']} holds no collections", "backup_id")
    if as_name and len(entries) != 1:
        raise InvalidArgument("as_name restores exactly one collection: name it in collections", "as_name")
    known = {t["name"]: t for t in m.get("tenants", [])}
    records, tenants = [], {}
    for c in entries:
        owner = tenant or c["tenant"]
        name = as_name or c["name"]
        existing = view.collections.get(schema.qualified(owner, name))
        if existing is not None and existing.id not in view.tombstones:
            raise AlreadyExists(f"collection {owner}/{name} already exists (restore --as NAME)", "as_name")
        if owner not in view.tenants and owner not in tenants:
            src = dict(known.get(owner, {"name": owner}))
            src["name"] = owner
            tenants[owner] = schema.TenantRecord.from_json(orjson.dumps(src), f"backup tenant {owner}")
        restore = {
            "repository": repository,
            "backup": m["id"],
            "source": c["id"],
            "epochs": [p["epoch"] for p in sorted(c["parts"], key=lambda p: p["shard"])],
        }
        records.append(
            schema.CollectionRecord(
                name=name,
                id=uuid.uuid4().hex,
                dim=c["dim"],
                metric=c["metric"],
                shards=c["shards"],
                replication_factor=replication_factor,
                m=c["m"],
                ef_construction=c["ef_construction"],
                ef=c["ef"],
                tenant=owner,
                restore=orjson.dumps(restore).decode(),
            )
        )
    return RestorePlan(records, list(tenants.values()))


def restore_status(coll: schema.CollectionRecord, view, ready: bool) -> str:
    """ "ready", "creating", "restoring" or "restore failed: <reason>"."""
    if ready:
        return "ready"
    if coll.restore:
        for (cid, _, _), rep in view.replicas.items():
            if cid == coll.id and rep.state.startswith("failed"):
                return f"restore {rep.state}"
        return "restoring"
    return "creating"


def restore_source(coll: schema.CollectionRecord) -> str:
    if not coll.restore:
        return ""
    src = orjson.loads(coll.restore)
    return f"{src['backup']} in {src['repository']}"
