"""Prometheus metrics of every QuartzDB process (DESIGN §14).

Names follow Prometheus conventions: the `quartz_` prefix, base units last (`_seconds`,
`_bytes`), counters end in `_total`. No label carries a tenant id or a key: a collection is named
by its uuid (`collection_id`), never by its (tenant-scoped) name. Request counts are the `_count`
of the duration histograms.

Values that already live in the process (points per shard, replication positions, disk space)
are read when Prometheus scrapes, by a collector per role (node/metrics.py,
coordinator/metrics.py): nothing updates them on the hot path. Only events are counted as they
happen, and those calls cost one dict lookup and an add.

Nodes and coordinators serve `/metrics` on their own port (`--metrics-listen`, written to their
info files and cluster.json); the router serves it on its HTTP gateway port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from quartz_cluster import __version__

# Latency buckets from 0.5 ms to 30 s: searches take milliseconds, big batch writes seconds.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
CHECKPOINT_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

BUILD_INFO = Gauge("quartz_build_info", "QuartzDB version and process role (always 1)", ["version", "role"])

RPC_SECONDS = Histogram(
    "quartz_rpc_request_duration_seconds",
    "gRPC requests served, by service, method and status code",
    ["service", "method", "code"],
    buckets=LATENCY_BUCKETS_S,
)
HTTP_SECONDS = Histogram(
    "quartz_http_request_duration_seconds",
    "HTTP gateway requests served, by route template, method and status code",
    ["route", "method", "code"],
    buckets=LATENCY_BUCKETS_S,
)
ETCD_SECONDS = Histogram(
    "quartz_etcd_request_duration_seconds",
    "etcd round trips, by operation",
    ["op"],
    buckets=LATENCY_BUCKETS_S,
)
RATE_LIMIT_REFUSALS = Counter(
    "quartz_rate_limit_refusals_total",
    "Requests refused by a rate limit or a plan quota, by reason",
    ["reason"],
)
CHECKPOINT_SECONDS = Histogram(
    "quartz_checkpoint_duration_seconds",
    "Shard checkpoints (index saved, log truncated), by how long they took",
    buckets=CHECKPOINT_BUCKETS_S,
)
CHECKPOINT_FAILURES = Counter("quartz_checkpoint_failures_total", "Shard checkpoints that failed")
FAILOVERS = Counter(
    "quartz_failovers_total", "Shard primaries moved by this coordinator because the primary was lost"
)
BACKUP_JOBS = Counter("quartz_backup_jobs_total", "Backup jobs finished, by outcome", ["state"])

_served: dict[str, str] = {}
_lock = threading.Lock()


class Collector:
    """A prometheus_client collector from a function that yields metric families at scrape time.
    An exception in it costs the scrape those metrics, not the process."""

    def __init__(self, collect: Callable[[], list[GaugeMetricFamily]]) -> None:
        self._collect = collect

    def collect(self):
        try:
            yield from self._collect()
        except Exception:  # a scrape must not take the process down
            return

    def describe(self):
        return []  # collected at scrape time only (no registration-time call)


def start(role: str, listen: str | None = None, collect: Callable[[], list] | None = None) -> str | None:
    """Set up this process's metrics: the build info, a role collector, and with `listen`
    (host:port; port 0 picks a free one) a /metrics server on a thread. Returns its address."""
    BUILD_INFO.labels(__version__, role).set(1)
    if collect is not None:
        REGISTRY.register(Collector(collect))
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    with _lock:
        if listen in _served:
            return _served[listen]
        server, _ = start_http_server(int(port), addr=host or "127.0.0.1")
        address = f"{host or '127.0.0.1'}:{server.server_port}"
        _served[listen] = address
    return address


def gauge(name: str, documentation: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)
