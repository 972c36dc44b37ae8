"""The router's backup RPCs (DESIGN §13): thin handlers over quartz_cluster.backup. Backups are
run by the coordinator leader (coordinator/backups.py): a router records the job and answers
from etcd and the repository. Admin keys only."""

from __future__ import annotations

import asyncio
import time

import orjson

from quartz_cluster import capacity, limits, validation
from quartz_cluster.auth import access
from quartz_cluster.auth.access import Action
from quartz_cluster.backup import catalog, jobs, manifest
from quartz_cluster.backup.repository import open_repository
from quartz_cluster.coordinator.backups import delete_backup
from quartz_cluster.errors import FailedPrecondition, InvalidArgument, NotFound
from quartz_cluster.meta import schema
from quartz_cluster.proto.quartz.v1 import quartz_pb2
from quartz_cluster.router.guard import guarded
from quartz_cluster.rpc.status import rpc


def job_info(j: jobs.Job) -> quartz_pb2.BackupJob:
    return quartz_pb2.BackupJob(
        id=j.id,
        repository=j.repository,
        state=j.state,
        error=j.error,
        collections=list(j.collections),
        schedule=j.schedule,
        requested_at=j.requested_at,
        finished_at=j.finished_at,
        shards_total=j.shards_total,
        shards_done=j.shards_done,
        bytes_total=j.bytes_total,
        bytes_copied=j.bytes_copied,
        vectors=j.vectors,
        parent=j.parent,
    )


def schedule_info(s: jobs.Schedule, last: jobs.Job | None) -> quartz_pb2.BackupSchedule:
    now = time.time()
    return quartz_pb2.BackupSchedule(
        name=s.name,
        repository=s.repository,
        interval_s=s.interval_s,
        keep=s.keep,
        collections=list(s.collections),
        last_backup=last.id if last else "",
        last_state=last.state if last else "",
        next_at=(s.period(now) + 1) * s.interval_s,
    )


class BackupRpcs:
    """Mixed into QuartzService (which provides store, shardmap, _caught_up)."""

    def _qualified_names(self, names, field: str) -> tuple[str, ...]:
        """ "tenant/name" or a name of the default tenant, each an existing collection."""
        if len(names) > limits.BACKUP_COLLECTIONS_MAX:
            raise InvalidArgument(f"at most {limits.BACKUP_COLLECTIONS_MAX}", field)
        view = self.shardmap.view
        out = []
        for n in names:
            q = n if "/" in n else schema.qualified(schema.DEFAULT_TENANT, n)
            coll = view.collections.get(q)
            if coll is None or coll.id in view.tombstones:
                raise NotFound(f"collection {n!r} does not exist", field)
            out.append(q)
        return tuple(dict.fromkeys(out))

    async def _jobs(self) -> list[jobs.Job]:
        _, kvs = await self.store.list(jobs.JOBS)
        return [jobs.Job.from_json(kv.value) for kv in kvs]

    @rpc
    @guarded
    async def CreateBackup(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        repo = open_repository(request.repository)
        names = self._qualified_names(request.collections, "collections")
        await asyncio.to_thread(repo.check_writable)  # unwritable or full: refused before any job
        job = jobs.Job(
            id=manifest.new_backup_id(), repository=repo.url, collections=names, requested_at=time.time()
        )
        t = self.store.txn
        key = jobs.job_key(job.id)
        await self.store.client()
        await self.store.transaction(compare=[t.create(key) == 0], success=[t.put(key, job.to_json())])
        return job_info(job)

    @rpc
    @guarded
    async def GetBackup(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        manifest.check_id(request.id)
        kv = await self.store.get(jobs.job_key(request.id))
        if kv is not None:
            return job_info(jobs.Job.from_json(kv.value))
        if not request.repository:
            raise NotFound(f"no backup {request.id} in this cluster (name its repository)", "id")
        repo = open_repository(request.repository)
        m = await asyncio.to_thread(catalog.read_manifest, repo, request.id)
        return job_info(catalog.job_of_manifest(m, repo.url))

    @rpc
    @guarded
    async def ListBackups(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        repo = open_repository(request.repository) if request.repository else None
        found = await asyncio.to_thread(catalog.merged, await self._jobs(), repo)
        return quartz_pb2.ListBackupsResponse(backups=[job_info(j) for j in found])

    async def _repository_of(self, backup_id: str, url: str):
        if url:
            return open_repository(url)
        kv = await self.store.get(jobs.job_key(backup_id))
        if kv is None:
            raise NotFound(f"no backup {backup_id} in this cluster (name its repository)", "id")
        return open_repository(jobs.Job.from_json(kv.value).repository)

    @rpc
    @guarded
    async def DescribeBackup(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        manifest.check_id(request.id)
        repo = await self._repository_of(request.id, request.repository)
        m = await asyncio.to_thread(catalog.read_manifest, repo, request.id)
        return quartz_pb2.DescribeBackupResponse(
            backup=job_info(catalog.job_of_manifest(m, repo.url)), manifest=manifest.encode(m)
        )

    @rpc
    @guarded
    async def DeleteBackup(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        manifest.check_id(request.id)
        kv = await self.store.get(jobs.job_key(request.id))
        if kv is not None and jobs.Job.from_json(kv.value).state in ("pending", "running"):
            raise FailedPrecondition(f"backup {request.id} is still running", "id")
        repo = await self._repository_of(request.id, request.repository)
        m = await asyncio.to_thread(catalog.read_manifest, repo, request.id)
        await asyncio.to_thread(delete_backup, repo, request.id)
        await self.store.delete(jobs.job_key(request.id))
        return quartz_pb2.DeleteBackupResponse(deleted=True, bytes_freed=m.get("totals", {}).get("bytes", 0))

    @rpc
    @guarded
    async def RestoreBackup(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        from quartz_cluster.router.service import collection_info  # (imports this module)

        repo = open_repository(request.repository)
        m = await asyncio.to_thread(catalog.read_manifest, repo, request.backup_id)
        if request.as_name:
            validation.name(request.as_name, "as_name")
        if request.tenant:
            validation.name(request.tenant, "tenant")
        view = self.shardmap.view
        live = len(view.nodes)
        rf = request.replication_factor or max(1, min(limits.DEFAULT_REPLICATION_FACTOR, live))
        if rf > live:
            raise FailedPrecondition(
                f"{rf} replicas need as many live nodes; {live} are live", "replication_factor"
            )
        plan = catalog.plan_restore(
            m, repo.url, view, list(request.collections), request.as_name, request.tenant, rf
        )
        sources = {orjson.loads(r.restore)["source"] for r in plan.collections}
        chosen = [c for c in m["collections"] if c["id"] in sources]
        await asyncio.to_thread(catalog.check_objects, repo, m, chosen)
        for rec in plan.collections:
            capacity.check_create(view, rec.tenant, rec.shards, rec.replication_factor, rec.dim, rec.m)
        await self.store.client()
        t = self.store.txn
        for tenant in plan.tenants:
            key = schema.tenant_key(tenant.name)
            await self.store.transaction(compare=[t.create(key) == 0], success=[t.put(key, tenant.to_json())])
        keys = [schema.collection_key(r.tenant, r.name) for r in plan.collections]
        ok, _ = await self.store.transaction(
            compare=[t.create(k) == 0 for k in keys],
            success=[t.put(k, r.to_json()) for k, r in zip(keys, plan.collections, strict=True)],
        )
        if not ok:
            raise FailedPrecondition(
                "a collection of that name was created meanwhile; nothing restored", "as_name"
            )
        await self._caught_up(context)
        return quartz_pb2.RestoreResponse(
            collections=[collection_info(r, self.shardmap) for r in plan.collections]
        )

    # ------------------------------------------------------------------ schedules

    @rpc
    @guarded
    async def SetBackupSchedule(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        s = request.schedule
        repo = open_repository(s.repository)
        sched = jobs.Schedule(
            name=s.name,
            repository=repo.url,
            interval_s=s.interval_s,
            keep=s.keep,
            collections=self._qualified_names(s.collections, "schedule.collections"),
            created_at=time.time(),
        ).check()
        await asyncio.to_thread(repo.check_writable)
        await self.store.put(jobs.schedule_key(sched.name), sched.to_json())
        return schedule_info(sched, None)

    @rpc
    @guarded
    async def ListBackupSchedules(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        _, kvs = await self.store.list(jobs.SCHEDULES)
        all_jobs = await self._jobs()
        out = []
        for kv in kvs:
            s = jobs.Schedule.from_json(kv.value)
            mine = sorted((j for j in all_jobs if j.schedule == s.name), key=lambda j: j.requested_at)
            out.append(schedule_info(s, mine[-1] if mine else None))
        return quartz_pb2.ListBackupSchedulesResponse(schedules=out)

    @rpc
    @guarded
    async def DeleteBackupSchedule(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        key = jobs.schedule_key(request.name)
        if await self.store.get(key) is None:
            raise NotFound(f"no backup schedule {request.name!r}", "name")
        await self.store.delete(key)
        return quartz_pb2.DeleteBackupScheduleResponse(deleted=True)
