"""OpenTelemetry traces (DESIGN §14): a span per request served, router -> node, one trace id
across processes through the W3C `traceparent` gRPC metadata (and HTTP header).

Off unless an OTLP endpoint is configured (`--otlp-endpoint`, or the standard
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`): then every process exports
its spans over OTLP/gRPC, in batches, off the request path. Sampling is parent-based: a request
that arrives with a sampled `traceparent` is traced through every process it reaches; a request
without one starts a trace with probability `--trace-sample-ratio` (DEFAULT_SAMPLE_RATIO, or
`OTEL_TRACES_SAMPLER_ARG`). Logs written inside a traced request carry its `trace_id`.
"""

from __future__ import annotations

import logging
import os
import uuid

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from quartz_cluster import logs

log = logging.getLogger("quartz.tracing")

DEFAULT_SAMPLE_RATIO = 0.01  # 1 request in 100 starts a trace; callers may ask for more
EXPORT_BATCH_SPANS_MAX = 512
EXPORT_QUEUE_SPANS_MAX = 8192  # spans beyond this are dropped, never queued without bound
EXPORT_TIMEOUT_S = 10
TRACEPARENT = "traceparent"

TRACER = trace.get_tracer("quartz")
_provider = None
_starts_traces = True  # False on nodes and coordinators: they trace only as part of a request


def enabled() -> bool:
    return _provider is not None


def starts_traces() -> bool:
    """Whether a request without a traceparent may start a trace here (the router: the entry)."""
    return _starts_traces


def configure(
    service_name: str,
    instance: str,
    otlp_endpoint: str | None = None,
    sample_ratio: float | None = None,
    starts_traces: bool = True,
) -> bool:
    """Export this process's spans to `otlp_endpoint` (host:port, or http(s)://host:port); without
    one, from the environment; without either, tracing stays off. Returns whether it is on.
    starts_traces: False for internal processes (nodes, coordinators): a call that carries no
    traceparent is never traced there, so the router's sampling decides for the whole request
    and no orphan node-only traces appear."""
    global _provider, _starts_traces
    endpoint = (
        otlp_endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    if not endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    if sample_ratio is None:
        sample_ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", DEFAULT_SAMPLE_RATIO))
    if not 0.0 <= sample_ratio <= 1.0:
        raise ValueError(f"trace sample ratio must be within [0, 1], got {sample_ratio}")
    resource = Resource.create(
        {"service.name": service_name, "service.instance.id": instance or uuid.uuid4().hex}
    )
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    secure = endpoint.startswith("https://")
    exporter = OTLPSpanExporter(
        endpoint=endpoint.removeprefix("http://").removeprefix("https://"),
        insecure=not secure,
        timeout=EXPORT_TIMEOUT_S,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, max_queue_size=EXPORT_QUEUE_SPANS_MAX, max_export_batch_size=EXPORT_BATCH_SPANS_MAX
        )
    )
    trace.set_tracer_provider(provider)
    _provider, _starts_traces = provider, starts_traces
    logs.trace_id = current_trace_id
    log.info("tracing on", extra={"otlp_endpoint": endpoint, "sample_ratio": sample_ratio})
    return True


def shutdown() -> None:
    """Export what is still queued (at process stop)."""
    if _provider is not None:
        _provider.shutdown()


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid and ctx.trace_flags.sampled else None


def parent_from(headers) -> otel_context.Context | None:
    """The remote parent in gRPC metadata (pairs) or HTTP headers (a mapping), or None."""
    if hasattr(headers, "get"):
        carrier = {TRACEPARENT: headers.get(TRACEPARENT)} if headers.get(TRACEPARENT) else None
        if carrier and headers.get("tracestate"):
            carrier["tracestate"] = headers.get("tracestate")
    else:
        carrier = {k: v for k, v in headers or () if k in (TRACEPARENT, "tracestate")} or None
    return propagate.extract(carrier) if carrier else None


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """The current trace context as gRPC metadata for a call to another process (empty when no
    sampled span is current)."""
    if _provider is None or not trace.get_current_span().get_span_context().trace_flags.sampled:
        return ()
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return tuple(carrier.items())
