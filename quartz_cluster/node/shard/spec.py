"""What a shard replica is (its spec, persisted as spec.json) and how its node runs it (options)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import orjson

from quartz_cluster import limits


@dataclass(frozen=True, slots=True)
class ShardSpec:
    collection_id: str
    shard: int
    dim: int
    metric: str
    m: int = limits.DEFAULT_HNSW_M
    ef_construction: int = limits.DEFAULT_EF_CONSTRUCTION
    ef: int = limits.DEFAULT_EF

    @property
    def name(self) -> str:
        return f"{self.collection_id}/{self.shard}"

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> ShardSpec:
        return cls(**orjson.loads(raw))


@dataclass(slots=True)
class ShardOptions:
    commit_mode: str = "group"  # "group" or "batch" (an fsync per batch)
    checkpoint_every_points: int = 50_000
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    log_retention_entries: int = limits.LOG_RETENTION_ENTRIES
    checkpoint_retry_s_min: float = limits.CHECKPOINT_RETRY_S_MIN
    checkpoint_retry_s_max: float = limits.CHECKPOINT_RETRY_S_MAX
    follower_checkpoint_jitter: float = 0.25  # a follower checkpoints every (1 + U(0, this)) x the interval
