"""Reading metered usage back: a tenant's month by day, its invoice figures, its billing
history and its latest storage sample."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import orjson

from quartz_cluster.billing import invoice as inv
from quartz_cluster.billing.plans import GB_BYTES
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.metering import keys
from quartz_cluster.metering.ledger import CallsHour


@dataclass(slots=True)
class Day:
    day: str
    calls: CallsHour = field(default_factory=CallsHour)
    vector_seconds: float = 0.0
    byte_seconds: float = 0.0


@dataclass(slots=True)
class MonthUsage:
    tenant: str
    month: str
    days: dict[str, Day] = field(default_factory=dict)
    stored_vectors: int = 0
    stored_bytes: int = 0
    stored_at: float = 0.0

    @property
    def calls(self) -> CallsHour:
        total = CallsHour()
        for d in self.days.values():
            total.add(d.calls)
        return total

    def usage(self) -> inv.Usage:
        c = self.calls
        return inv.Usage(
            calls=c.total_calls,
            batch_vectors=c.total_vectors,
            vector_seconds=sum(d.vector_seconds for d in self.days.values()),
            byte_seconds=sum(d.byte_seconds for d in self.days.values()),
        )

    def months(self, seconds: float, per_bytes: float = 1.0) -> float:
        return seconds / per_bytes / inv.month_seconds(self.month)

    def calls_by_key(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for d in self.days.values():
            for key, ops in d.calls.calls.items():
                out[key] += sum(ops.values())
        return dict(out)


def _prefix(root_key: bytes) -> tuple[bytes, bytes]:
    return root_key, keys.prefix_end(root_key)


async def month_usage(store: EtcdStore, tenant: str, month: str) -> MonthUsage:
    out = MonthUsage(tenant, month)
    for kv in await store.range(*_prefix(keys.calls_key(tenant, month))):
        hour = kv.key.decode().rsplit("/", 1)[1]
        out.days.setdefault(hour[:10], Day(hour[:10])).calls.add(CallsHour.from_json(kv.value))
    for kv in await store.range(*_prefix(keys.storage_key(tenant, month))):
        hour = kv.key.decode().rsplit("/", 1)[1]
        doc = orjson.loads(kv.value)
        day = out.days.setdefault(hour[:10], Day(hour[:10]))
        day.vector_seconds += doc.get("vector_seconds", 0.0)
        day.byte_seconds += doc.get("byte_seconds", 0.0)
    out.days = dict(sorted(out.days.items()))
    kv = await store.get(keys.stored_key(tenant))
    if kv is not None:
        doc = orjson.loads(kv.value)
        out.stored_vectors, out.stored_bytes, out.stored_at = doc["vectors"], doc["bytes"], doc["at"]
    return out


def gb_months(byte_seconds: float, month: str) -> float:
    return byte_seconds / GB_BYTES / inv.month_seconds(month)


async def months_with_usage(store: EtcdStore, tenant: str) -> list[str]:
    """Every month for which the tenant has usage recorded, oldest first."""
    months: set[str] = set()
    for root in (keys.calls_key(tenant, ""), keys.storage_key(tenant, "")):
        for kv in await store.range(*_prefix(root)):
            months.add(kv.key.decode().rsplit("/", 1)[1][:7])
    return sorted(months)


async def query_history(store: EtcdStore, tenant: str, limit: int) -> list[dict]:
    """The tenant's latest searches, across every router's journal, newest first."""
    out: list[dict] = []
    for kv in await store.range(*_prefix(keys.QUERIES + f"{tenant}/".encode())):
        out.extend(orjson.loads(kv.value))
    out.sort(key=lambda r: r["t"], reverse=True)
    return out[:limit]
