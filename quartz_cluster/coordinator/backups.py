"""What the coordinator leader does for backups (DESIGN §13, ADR 17), on its own loop beside
the shard map: run backup jobs one at a time, start scheduled ones, apply retention.

A job asks each shard's primary (of the epoch in the shard map) to cut and copy its shard
(node RPC BackupShard), retrying through failovers; each part is stored in the repository as
it arrives, so a leader that takes over a running job resumes it and copies only the shards
still missing. The manifest is written last. A job that cannot finish is marked failed and
its parts are removed: it is never listed as complete.

Every etcd write compares the leader key's create revision: a deposed leader writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import orjson

from quartz_cluster.backup import jobs, manifest
from quartz_cluster.backup.repository import Repository, open_repository
from quartz_cluster.errors import QuartzError
from quartz_cluster.meta import schema
from quartz_cluster.observability.metrics import BACKUP_JOBS
from quartz_cluster.proto.quartz.v1 import node_pb2

log = logging.getLogger("quartz.backups")
POLL_S = 0.25  # how soon a new job or a due schedule starts
SHARDS_IN_FLIGHT = 2  # shard copies at once (each one streams a shard's files to the repository)
SHARD_TIMEOUT_S = 3600.0  # one BackupShard call
SHARD_RETRY_S = 300.0  # how long a shard may stay without a primary that can serve it
RETRY_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,  # not (or no longer) the primary, lease lapsed
    grpc.StatusCode.NOT_FOUND,  # the replica moved
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
}


class Deposed(Exception):
    pass


class JobFailed(Exception):
    pass


def list_manifests(repo: Repository, strict: bool = False) -> list[dict]:
    """Complete backups in a repository (those whose manifest exists and parses), oldest first.
    strict: raise on a manifest that cannot be read (GC must never take one for absent)."""
    out = []
    for key in repo.list("backups/"):
        if key.endswith("/manifest.json"):
            try:
                out.append(manifest.decode_manifest(repo.get_bytes(key), key))
            except QuartzError as exc:
                if strict:
                    raise
                log.warning("unreadable manifest skipped", extra={"key": key, "error": str(exc)})
    return sorted(out, key=lambda m: (m.get("completed_at", 0), m["id"]))


def collection_entry(coll: schema.CollectionRecord, parts: list[dict]) -> dict:
    return {
        "name": coll.name,
        "tenant": coll.tenant,
        "id": coll.id,
        "dim": coll.dim,
        "metric": coll.metric,
        "shards": coll.shards,
        "replication_factor": coll.replication_factor,
        "m": coll.m,
        "ef_construction": coll.ef_construction,
        "ef": coll.ef,
        "parts": parts,
    }


def delete_backup(repo: Repository, backup_id: str) -> None:
    """Manifest first (it stops being complete), then its parts. Objects stay until `gc`."""
    repo.delete(manifest.manifest_key(backup_id))
    for key in repo.list(f"backups/{backup_id}/"):
        repo.delete(key)


def gc(repo: Repository) -> tuple[int, int]:
    """Delete objects no complete backup lists. Run only while no job copies into `repo`."""
    keep: set[str] = set()
    for m in list_manifests(repo, strict=True):
        keep |= manifest.referenced_objects(m)
    removed = freed = 0
    for key in repo.list("objects/"):
        if key[len("objects/") :] not in keep:
            freed += repo.size(key) or 0
            repo.delete(key)
            removed += 1
    for key in repo.list("tmp/"):
        repo.delete(key)
    return removed, freed


class BackupRunner:
    def __init__(self, store, channels, coordinator_id: str, leader_revision) -> None:
        self.store, self.channels, self.coordinator_id = store, channels, coordinator_id
        self.leader_revision = leader_revision  # () -> create revision of our leader key, or None
        self._period_done: dict[str, int] = {}  # schedule -> the last period whose job exists
        # for metrics (coordinator/metrics.py): the schedules, and when each last completed a job
        self.schedules: dict[str, jobs.Schedule] = {}
        self.last_success_at: dict[str, float] = {}

    def _fence(self) -> list:
        rev = self.leader_revision()
        if rev is None:
            raise Deposed()
        return [self.store.txn.create(schema.LEADER) == rev]

    async def _put(self, job: jobs.Job) -> None:
        t = self.store.txn
        ok, _ = await self.store.transaction(
            compare=self._fence(), success=[t.put(jobs.job_key(job.id), job.to_json())]
        )
        if not ok:
            raise Deposed()

    async def run(self, view_of, deposed: asyncio.Event) -> None:
        while not deposed.is_set():
            try:
                await self.tick(view_of, deposed)
            except Deposed:
                return
            except Exception as exc:
                log.warning("backup step failed", extra={"error": repr(exc)})
            try:
                await asyncio.wait_for(deposed.wait(), POLL_S)
            except TimeoutError:
                pass

    async def tick(self, view_of, deposed: asyncio.Event) -> None:
        await self._start_scheduled()
        _, kvs = await self.store.list(jobs.JOBS)
        every = [jobs.Job.from_json(kv.value) for kv in kvs]
        for j in every:
            if j.schedule and j.state == "complete":
                self.last_success_at[j.schedule] = max(
                    j.finished_at, self.last_success_at.get(j.schedule, 0.0)
                )
        active = [j for j in every if j.state in ("pending", "running")]
        for job in sorted(active, key=lambda j: (j.requested_at, j.id)):
            if deposed.is_set():
                return
            await self.run_job(job, view_of)
            if job.schedule and job.state == "complete":
                await self._retain(job)

    # ------------------------------------------------------------------ schedules

    async def _start_scheduled(self) -> None:
        _, kvs = await self.store.list(jobs.SCHEDULES)
        now = time.time()
        t = self.store.txn
        schedules = [jobs.Schedule.from_json(kv.value) for kv in kvs]
        self.schedules = {sched.name: sched for sched in schedules}
        for sched in schedules:
            if self._period_done.get(sched.name) == sched.period(now):
                continue
            job = jobs.Job(
                id=sched.job_id(sched.period(now)),
                repository=sched.repository,
                collections=sched.collections,
                schedule=sched.name,
                requested_at=now,
            )
            key = jobs.job_key(job.id)
            ok, _ = await self.store.transaction(
                compare=[*self._fence(), t.create(key) == 0], success=[t.put(key, job.to_json())]
            )
            self._period_done[sched.name] = sched.period(now)  # made now, or by an earlier leader
            if ok:
                log.info("scheduled backup", extra={"backup": job.id, "schedule": sched.name})

    async def _retain(self, job: jobs.Job) -> None:
        kv = await self.store.get(jobs.schedule_key(job.schedule))
        if kv is None:
            return
        sched = jobs.Schedule.from_json(kv.value)
        repo = open_repository(sched.repository)

        def retain() -> list[str]:
            mine = [m for m in list_manifests(repo) if m.get("schedule") == sched.name]
            doomed = [m["id"] for m in mine[: max(0, len(mine) - sched.keep)]]
            for backup_id in doomed:
                delete_backup(repo, backup_id)
            if doomed:
                gc(repo)
            return doomed

        doomed = await asyncio.to_thread(retain)
        for backup_id in doomed:
            await self.store.transaction(
                compare=self._fence(), success=[self.store.txn.delete(jobs.job_key(backup_id))]
            )
            log.info("backup deleted by retention", extra={"backup": backup_id, "schedule": sched.name})

    # ------------------------------------------------------------------ one job

    async def run_job(self, job: jobs.Job, view_of) -> None:
        job.state, job.coordinator, job.attempts = "running", self.coordinator_id, job.attempts + 1
        job.started_at = job.started_at or time.time()
        await self._put(job)
        log.info("backup running", extra={"backup": job.id, "attempt": job.attempts})
        repo: Repository | None = None
        try:
            repo = open_repository(job.repository)
            await asyncio.to_thread(repo.check_writable)
            await self._copy(job, repo, view_of)
        except Deposed:
            raise
        except (JobFailed, QuartzError) as exc:
            await self._fail(job, repo, str(exc))
        except Exception as exc:
            await self._fail(job, repo, f"{type(exc).__name__}: {exc}")

    async def _fail(self, job: jobs.Job, repo: Repository | None, error: str) -> None:
        """Record the failure (fenced) first; only a leader that did so removes the parts, so a
        deposed one never deletes what its successor is publishing."""
        job.state, job.error, job.finished_at = "failed", error, time.time()
        BACKUP_JOBS.labels("failed").inc()
        log.error("backup failed", extra={"backup": job.id, "error": error})
        await self._put(job)
        if repo is not None:
            try:
                await asyncio.to_thread(delete_backup, repo, job.id)
            except Exception as exc:
                log.warning(
                    "parts of a failed backup not removed", extra={"backup": job.id, "error": repr(exc)}
                )

    async def _copy(self, job: jobs.Job, repo: Repository, view_of) -> None:
        view = view_of()
        if view is None:
            raise JobFailed("no cluster view yet")
        if job.collections:
            missing = [q for q in job.collections if q not in view.collections]
            if missing:
                raise JobFailed(f"collection {missing[0]} does not exist")
            colls = [view.collections[q] for q in job.collections]
        else:
            colls = sorted(view.collections.values(), key=lambda c: c.qualified)
        colls = [c for c in colls if c.id not in view.tombstones]
        manifests = await asyncio.to_thread(list_manifests, repo)
        parent = manifests[-1] if manifests else None
        parent_parts = {}
        if parent is not None:
            job.parent = parent["id"]
            parent_parts = {
                (p["collection_id"], p["shard"]): p for c in parent["collections"] for p in c["parts"]
            }
        work = [(c, s) for c in colls for s in range(c.shards)]
        job.shards_total = len(work)
        done: dict[tuple[str, int], dict] = {}
        for coll, s in work:  # a resumed job keeps the parts already copied
            try:
                raw = await asyncio.to_thread(repo.get_bytes, manifest.part_key(job.id, coll.id, s))
            except QuartzError:
                continue
            done[(coll.id, s)] = manifest.check_part(orjson.loads(raw), f"part {coll.id}/{s}")
        self._progress(job, done)
        await self._put(job)
        gate = asyncio.Semaphore(SHARDS_IN_FLIGHT)

        async def one(coll: schema.CollectionRecord, s: int) -> None:
            async with gate:
                part = await self._backup_shard(job, repo, coll, s, parent_parts.get((coll.id, s)), view_of)
                key = manifest.part_key(job.id, coll.id, s)
                await asyncio.to_thread(repo.put_bytes, key, orjson.dumps(part))
                done[(coll.id, s)] = part
                self._progress(job, done)
                await self._put(job)

        tasks = [asyncio.create_task(one(c, s)) for c, s in work if (c.id, s) not in done]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        entries = [collection_entry(c, [done[(c.id, s)] for s in range(c.shards)]) for c in colls]
        tenant_names = sorted({c.tenant for c in colls})
        now = time.time()
        body = {
            "format": manifest.FORMAT,
            "id": job.id,
            "schedule": job.schedule,
            "parent": job.parent,
            "requested_at": job.requested_at,
            "completed_at": now,
            "collections": entries,
            "tenants": [orjson.loads(view.tenants[t].to_json()) for t in tenant_names if t in view.tenants],
            "totals": manifest.totals(entries),
        }
        self._fence()  # a deposed leader does not publish: the new one finishes the job
        await asyncio.to_thread(repo.put_bytes, manifest.manifest_key(job.id), manifest.encode(body))
        job.state, job.finished_at = "complete", now
        await self._put(job)
        BACKUP_JOBS.labels("completed").inc()
        log.info(
            "backup complete",
            extra={
                "backup": job.id,
                "shards": len(work),
                "bytes_copied": job.bytes_copied,
                "bytes": job.bytes_total,
            },
        )

    @staticmethod
    def _progress(job: jobs.Job, done: dict) -> None:
        parts = list(done.values())
        job.shards_done = len(parts)
        job.bytes_total = sum(manifest.part_bytes(p) for p in parts)
        job.bytes_copied = sum(p["bytes_copied"] for p in parts)
        job.vectors = sum(p["count"] for p in parts)

    async def _backup_shard(self, job, repo, coll, s: int, parent: dict | None, view_of) -> dict:
        """Ask the shard's current primary; through a failover, ask the next one."""
        give_up = time.monotonic() + SHARD_RETRY_S
        last = "no primary"
        while True:
            self._fence()
            view = view_of()
            entry = view.shards.get(coll.id, {}).get(s) if view is not None else None
            rec = entry[0] if entry else None
            node = view.nodes.get(rec.primary) if rec is not None and rec.in_sync else None
            if rec is not None and node is not None:
                req = node_pb2.BackupShardRequest(
                    ref=node_pb2.ShardRef(collection_id=coll.id, shard=s),
                    epoch=rec.epoch,
                    repository=job.repository,
                    backup_id=job.id,
                    parent=orjson.dumps(parent) if parent else b"",
                )
                try:
                    reply = await self.channels.stub(node.address).BackupShard(req, timeout=SHARD_TIMEOUT_S)
                    return manifest.check_part(orjson.loads(reply.part), f"shard {coll.id}/{s}")
                except grpc.RpcError as exc:
                    code = exc.code() if hasattr(exc, "code") else None
                    details = exc.details() if hasattr(exc, "details") else str(exc)
                    last = f"{rec.primary}: {code.name if code else '?'}: {details}"
                    if code not in RETRY_CODES:
                        raise JobFailed(f"shard {coll.qualified}/{s}: {last}") from None
                    log.info(
                        "backup of a shard retried",
                        extra={"backup": job.id, "shard": f"{coll.id}/{s}", "error": last},
                    )
            if time.monotonic() > give_up:
                raise JobFailed(
                    f"shard {coll.qualified}/{s}: no primary could copy it in {SHARD_RETRY_S:.0f} s ({last})"
                )
            await asyncio.sleep(1.0)
