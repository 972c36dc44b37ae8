"""What measuring and tracing one served call costs, in process (issue 16): a trivial async gRPC
handler called directly, bare and wrapped by rpc/observe.py (the histogram, plus a span when
tracing is on), and the HTTP observer around a trivial ASGI app. The difference per call, next to
the server CPU a search costs (`quartz bench` / ab_cluster.py report it), bounds the overhead
more tightly than an A/B of whole clusters on a shared 2-core machine can.

    .venv/bin/python loadtest/observe_overhead.py [--calls 200000]

Prints microseconds per call for: bare; metrics only (tracing off, as shipped without an OTLP
endpoint); metrics + tracing at the default sampling ratio with no incoming traceparent; and
metrics + a span on every call (a sampled traceparent on each request). Spans go to an exporter
that drops them (export cost is off the request path, in the batch processor's thread).
A benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from quartz_cluster.observability import tracing
from quartz_cluster.rpc.observe import observed

TRACEPARENT = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),)


class Drop(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


class Context:
    def __init__(self, metadata=()) -> None:
        self.metadata = metadata

    def invocation_metadata(self):
        return self.metadata

    def code(self):
        return None

    def cancelled(self) -> bool:
        return False


async def handler(request, context):
    return request


async def per_call_us(call, context, n: int) -> float:
    for _ in range(1000):
        await call("x", context)
    t0 = time.perf_counter()
    for _ in range(n):
        await call("x", context)
    return (time.perf_counter() - t0) / n * 1e6


async def main(n: int) -> dict:
    wrapped = observed("bench.v1.B", "Search", grpc.unary_unary_rpc_method_handler(handler)).unary_unary
    out = {"calls": n}
    out["bare_us"] = await per_call_us(handler, Context(), n)
    out["metrics_us"] = await per_call_us(wrapped, Context(), n)
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(tracing.DEFAULT_SAMPLE_RATIO)))
    provider.add_span_processor(BatchSpanProcessor(Drop(), max_queue_size=tracing.EXPORT_QUEUE_SPANS_MAX))
    trace.set_tracer_provider(provider)
    tracing._provider = provider
    out["metrics_tracing_default_sampling_us"] = await per_call_us(wrapped, Context(), n)
    out["metrics_tracing_every_call_us"] = await per_call_us(wrapped, Context(TRACEPARENT), n)
    provider.shutdown()
    for key in ("metrics_us", "metrics_tracing_default_sampling_us", "metrics_tracing_every_call_us"):
        out[key.replace("_us", "_overhead_us")] = out[key] - out["bare_us"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200_000)
    args = p.parse_args()
    print(json.dumps(asyncio.run(main(args.calls)), indent=1))
