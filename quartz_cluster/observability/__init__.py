"""Metrics and traces of every process (DESIGN §14): observability/metrics.py,
observability/tracing.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObservabilitySettings:
    metrics_listen: str | None = None  # host:port of a /metrics server (nodes, coordinators)
    otlp_endpoint: str | None = None  # None: $OTEL_EXPORTER_OTLP_ENDPOINT, else tracing off
    trace_sample_ratio: float | None = None  # None: tracing.DEFAULT_SAMPLE_RATIO


def start(
    role: str, instance: str, settings: ObservabilitySettings | None, collect: Callable | None = None
) -> str | None:
    """Tracing (when an endpoint is configured) and metrics for this process; returns the address
    of its /metrics server, if it serves one."""
    from quartz_cluster.observability import metrics, tracing

    settings = settings or ObservabilitySettings()
    tracing.configure(
        f"quartz-{role}",
        instance,
        settings.otlp_endpoint,
        settings.trace_sample_ratio,
        starts_traces=role == "router",  # the entry point; the others join its traces
    )
    return metrics.start(role, settings.metrics_listen, collect)
