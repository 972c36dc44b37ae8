"""Latency per operation over a recent window, from this router's own Prometheus histograms
(`quartz_rpc_request_duration_seconds` for gRPC, `quartz_http_request_duration_seconds` for the
HTTP gateway): no second measurement on the hot path.

A histogram holds cumulative bucket counts since the process started. The window is the
difference between the buckets now and a snapshot taken `window_s` ago; snapshots are kept in
memory (at most one every SNAPSHOT_EVERY_S, none older than needed for WINDOW_S_MAX), taken when
the report is read: nothing runs while no one looks. Quantiles are interpolated linearly within
the bucket that holds the rank, as Prometheus' histogram_quantile() does, so they agree with a
Grafana panel over the same buckets (and are as coarse as the buckets are).

Pure but for `read_registry`, which reads the live registry."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RPC_HISTOGRAM = "quartz_rpc_request_duration_seconds"
HTTP_HISTOGRAM = "quartz_http_request_duration_seconds"
PUBLIC_SERVICE = "quartz.v1.Quartz"  # the router's public gRPC service (not health, reflection)
HTTP_PREFIX = "/v1/"  # the API's routes (not probes, /metrics, docs or the dashboard's files)
QUANTILES = (0.5, 0.95, 0.99)
WINDOW_S_DEFAULT = 60.0
WINDOW_S_MIN = 1.0
WINDOW_S_MAX = 600.0
SNAPSHOT_EVERY_S = 2.0  # a snapshot is kept at most this often
SNAPSHOTS_MAX = int(WINDOW_S_MAX / SNAPSHOT_EVERY_S) + 2  # a bound on memory whatever the callers do

OpKey = tuple[str, str]  # (protocol "grpc" | "http", operation: "Search" | "POST /v1/...")


@dataclass(frozen=True, slots=True)
class Series:
    """One operation's histogram: cumulative counts per upper bound (ascending, the last +Inf)
    and how many of the requests failed."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    failed: float = 0.0

    @property
    def total(self) -> float:
        return self.counts[-1] if self.counts else 0.0


def quantile(q: float, bounds: tuple[float, ...], counts: tuple[float, ...]) -> float | None:
    """The q-quantile of a histogram's cumulative buckets, as Prometheus' histogram_quantile():
    the rank q * total falls in the first bucket whose cumulative count reaches it, and is placed
    linearly between that bucket's lower and upper bound (the lower bound of the first bucket is
    0, unless its upper bound is <= 0). A rank in the +Inf bucket answers the highest finite
    bound. None without observations (Prometheus: NaN)."""
    if len(bounds) != len(counts) or len(bounds) < 2 or not math.isinf(bounds[-1]):
        raise ValueError("a histogram needs >= 2 buckets, the last one +Inf")
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next((i for i in range(len(bounds) - 1) if counts[i] >= rank), len(bounds) - 1)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start = 0.0 if b == 0 else bounds[b - 1]
    below = 0.0 if b == 0 else counts[b - 1]
    in_bucket = counts[b] - below
    if in_bucket <= 0:  # only possible when rank is 0 and the bucket is empty
        return start
    return start + (bounds[b] - start) * ((rank - below) / in_bucket)


def since(now: Series, then: Series | None) -> Series:
    """The observations made between two readings of a histogram. Without an earlier reading, or
    when it does not fit (other buckets, or counts that went down: the series was reset), all of
    `now`."""
    if then is None or then.bounds != now.bounds:
        return now
    if any(a < b for a, b in zip(now.counts, then.counts, strict=True)):
        return now
    return Series(
        now.bounds,
        tuple(a - b for a, b in zip(now.counts, then.counts, strict=True)),
        max(0.0, now.failed - then.failed),
    )


def _operation(family: str, labels: Mapping[str, str]) -> tuple[OpKey, bool] | None:
    """An operation's key and whether the sample's status is a failure; None for a series the
    dashboard leaves out (other services, routes outside the API)."""
    if family == RPC_HISTOGRAM:
        if labels.get("service") != PUBLIC_SERVICE:
            return None
        return ("grpc", labels.get("method", "?")), labels.get("code") != "OK"
    route = labels.get("route", "")
    if not route.startswith(HTTP_PREFIX):
        return None
    code = labels.get("code", "")
    failed = not (code.isdigit() and int(code) < 400)
    return ("http", f"{labels.get('method', '?')} {route}"), failed


def operations(families: Iterable) -> dict[OpKey, Series]:
    """Per operation, its histogram summed over status codes, from prometheus_client metric
    families (anything with `.name` and `.samples` of (name, labels, value)). Failed: requests
    answered with a gRPC code other than OK, or an HTTP status >= 400."""
    buckets: dict[OpKey, dict[float, float]] = {}
    failed: dict[OpKey, float] = {}
    for family in families:
        if family.name not in (RPC_HISTOGRAM, HTTP_HISTOGRAM):
            continue
        for sample in family.samples:
            name, labels, value = sample[0], sample[1], sample[2]
            if not name.endswith("_bucket") or "le" not in labels:
                continue
            found = _operation(family.name, labels)
            if found is None:
                continue
            key, is_failure = found
            le = float(labels["le"])
            by_le = buckets.setdefault(key, {})
            by_le[le] = by_le.get(le, 0.0) + value
            if math.isinf(le) and is_failure:
                failed[key] = failed.get(key, 0.0) + value
    out = {}
    for key, by_le in buckets.items():
        bounds = tuple(sorted(by_le))
        if len(bounds) < 2 or not math.isinf(bounds[-1]):
            continue
        out[key] = Series(bounds, tuple(by_le[b] for b in bounds), failed.get(key, 0.0))
    return out


def read_registry(registry=None) -> dict[OpKey, Series]:
    """The operations of the live Prometheus registry of this process (empty if its histograms
    are not registered)."""
    if registry is None:
        from prometheus_client import REGISTRY as registry
    return operations(registry.collect())


def row(protocol: str, operation: str, s: Series, window_s: float) -> dict:
    """One line of the report: count, failures, rate and p50/p95/p99 in milliseconds."""
    ms = {f"p{round(q * 100)}_ms": quantile(q, s.bounds, s.counts) for q in QUANTILES}
    return {
        "protocol": protocol,
        "operation": operation,
        "count": int(s.total),
        "failed": int(s.failed),
        "per_s": s.total / window_s if window_s > 0 else 0.0,
        **{k: None if v is None else v * 1000.0 for k, v in ms.items()},
    }


class LatencyWindow:
    """Timestamped snapshots of the operations' histograms, and reports over a window of them."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at  # counts before the first snapshot reach back to here
        self._snapshots: deque[tuple[float, dict[OpKey, Series]]] = deque(maxlen=SNAPSHOTS_MAX)

    def __len__(self) -> int:
        return len(self._snapshots)

    def baseline(self, now: float, window_s: float) -> tuple[float, dict[OpKey, Series]]:
        """The reading to subtract and when it was taken: the newest snapshot at least
        `window_s` old; else, when the process is younger than the window (or nothing was kept
        yet), zero at its start; else the oldest snapshot (a window shorter than asked)."""
        target = now - window_s
        older = [s for s in self._snapshots if s[0] <= target]
        if older:
            return older[-1]
        if self.started_at >= target or not self._snapshots:
            return self.started_at, {}
        return self._snapshots[0]

    def keep(self, now: float, sample: dict[OpKey, Series]) -> None:
        """Remember this reading (unless the last one kept is younger than SNAPSHOT_EVERY_S),
        forgetting those no window can need: all but the newest one older than WINDOW_S_MAX."""
        if self._snapshots and now - self._snapshots[-1][0] < SNAPSHOT_EVERY_S:
            return
        self._snapshots.append((now, sample))
        while len(self._snapshots) >= 2 and self._snapshots[1][0] <= now - WINDOW_S_MAX:
            self._snapshots.popleft()

    def report(self, now: float, sample: dict[OpKey, Series], window_s: float) -> dict:
        """Each operation with requests in the window (the busiest first): count, failed,
        per second, p50/p95/p99 in ms; and the window actually covered."""
        window_s = min(max(window_s, WINDOW_S_MIN), WINDOW_S_MAX)
        then, base = self.baseline(now, window_s)
        self.keep(now, sample)
        covered = max(0.0, now - then)
        rows = []
        for (protocol, operation), s in sample.items():
            d = since(s, base.get((protocol, operation)))
            if d.total > 0:
                rows.append(row(protocol, operation, d, covered))
        rows.sort(key=lambda r: (-r["count"], r["protocol"], r["operation"]))
        return {
            "window_s": covered,
            "requested_window_s": window_s,
            "start": then,
            "end": now,
            "operations": rows,
        }
