"""Backup jobs and schedules in etcd (outside /quartz/, so the cluster views never see them).

  /qz-backups/jobs/<id>          a backup asked for (by `quartz backup create` or a schedule):
                                 pending -> running -> complete | failed, with progress
  /qz-backups/schedules/<name>   interval, keep N, repository, collections

A scheduled job's id is `<schedule>-<period number>`, created with a create-if-absent
transaction: one job per period, whichever coordinator leader gets there (ADR 17).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields

import orjson

from quartz_cluster.errors import InvalidArgument

ROOT = b"/qz-backups/"
JOBS = ROOT + b"jobs/"
SCHEDULES = ROOT + b"schedules/"
STATES = ("pending", "running", "complete", "failed")
SCHEDULE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")
INTERVAL_S_MIN = 5
INTERVAL_S_MAX = 366 * 86400
KEEP_MAX = 1000


def job_key(backup_id: str) -> bytes:
    return JOBS + backup_id.encode()


def schedule_key(name: str) -> bytes:
    return SCHEDULES + name.encode()


def _load(cls, raw: bytes):
    obj = orjson.loads(raw)
    names = {f.name for f in fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in obj.items() if k in names})


@dataclass(slots=True)
class Job:
    id: str
    repository: str
    collections: tuple[str, ...] = ()  # qualified names; empty: every collection
    state: str = "pending"
    error: str = ""
    schedule: str = ""
    requested_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    shards_total: int = 0
    shards_done: int = 0
    bytes_total: int = 0
    bytes_copied: int = 0
    vectors: int = 0
    parent: str = ""
    coordinator: str = ""
    attempts: int = 0  # leaders that took it up (a job resumed after a failover has 2)

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Job:
        return _load(cls, raw)


@dataclass(slots=True)
class Schedule:
    name: str
    repository: str
    interval_s: int
    keep: int
    collections: tuple[str, ...] = field(default=())
    created_at: float = 0.0

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Schedule:
        return _load(cls, raw)

    def period(self, now: float) -> int:
        return int(now // self.interval_s)

    def job_id(self, period: int) -> str:
        return f"{self.name}-{period}"

    def check(self) -> Schedule:
        if not SCHEDULE_NAME_RE.fullmatch(self.name):
            raise InvalidArgument(f"{self.name!r}: 1..40 of a-z, 0-9, '-'", "name")
        if not INTERVAL_S_MIN <= self.interval_s <= INTERVAL_S_MAX:
            raise InvalidArgument(f"must be {INTERVAL_S_MIN}..{INTERVAL_S_MAX} seconds", "interval_s")
        if not 1 <= self.keep <= KEEP_MAX:
            raise InvalidArgument(f"must be 1..{KEEP_MAX}", "keep")
        return self
