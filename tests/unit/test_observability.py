"""Metrics and tracing logic without a network (issue 16): the coordinator's cluster figures,
the gRPC and HTTP observers (status codes, route templates as labels, spans parented on the
caller's traceparent), trace context on outgoing calls, and the trace id in log lines."""

from __future__ import annotations

import asyncio
import io
import logging

import grpc
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from quartz_cluster import logs
from quartz_cluster.coordinator.metrics import cluster_figures
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.gateway.observe import UNMATCHED, ObservedApp
from quartz_cluster.meta.schema import CollectionRecord, InSync, NodeRecord, ShardRecord
from quartz_cluster.observability import tracing
from quartz_cluster.rpc.observe import observed

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
PARENT_TRACE_ID = int("0af7651916cd43dd8448eb211c80319c", 16)


# --------------------------------------------------------------------------- cluster figures


def shard(n: int, primary: str, replicas: tuple[str, ...], in_sync: tuple[str, ...]) -> ShardRecord:
    return ShardRecord(
        "docs",
        "cid",
        n,
        8,
        "cosine",
        16,
        200,
        64,
        epoch=1,
        primary=primary,
        replicas=replicas,
        in_sync=tuple(InSync(x, f"r-{x}") for x in in_sync),
    )


def test_cluster_figures_count_down_nodes_under_replicated_and_primaryless_shards():
    v = ClusterView(revision=1)
    for n in ("n1", "n2"):
        v.nodes[n] = NodeRecord(n, f"addr-{n}", f"p-{n}")
    v.collections["docs"] = CollectionRecord(
        id="cid",
        name="docs",
        dim=8,
        metric="cosine",
        shards=3,
        replication_factor=2,
        m=16,
        ef_construction=200,
        ef=64,
    )
    v.shards["cid"] = {
        0: (shard(0, "n1", ("n1", "n2"), ("n1", "n2")), 1),  # healthy
        1: (shard(1, "n2", ("n2", "n3"), ("n2",)), 2),  # n3 lost: under-replicated
        2: (shard(2, "n3", ("n3", "n1"), ("n3", "n1")), 3),  # its primary n3 is gone
    }
    assert cluster_figures(v) == {"live": 2, "down": 1, "under_replicated": 1, "without_primary": 1}


# --------------------------------------------------------------------------- tracing set-up


@pytest.fixture(scope="module")
def spans():
    """An SDK provider with an in-memory exporter, as tracing.configure would set up."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    tracing._provider = provider
    logs.trace_id = tracing.current_trace_id
    yield exporter
    tracing._provider = None
    logs.trace_id = None


# --------------------------------------------------------------------------- gRPC observer


class Context:
    """What observe.py reads of a grpc.aio ServicerContext."""

    def __init__(self, metadata=()) -> None:
        self.metadata, self._code = metadata, None

    def invocation_metadata(self):
        return self.metadata

    def code(self):
        return self._code

    def cancelled(self) -> bool:
        return False

    async def abort(self, code, details):
        self._code = code
        raise grpc.aio.AbortError()


def count(service: str, method: str, code: str) -> float:
    labels = {"service": service, "method": method, "code": code}
    return REGISTRY.get_sample_value("quartz_rpc_request_duration_seconds_count", labels) or 0.0


def test_a_served_method_is_counted_by_code_and_traced_under_the_callers_trace(spans):
    async def ok(request, context):
        assert tracing.current_trace_id() == format(PARENT_TRACE_ID, "032x")
        assert dict(tracing.outgoing_metadata())["traceparent"].split("-")[1] == format(
            PARENT_TRACE_ID, "032x"
        )
        return "reply"

    async def refused(request, context):
        await context.abort(grpc.StatusCode.NOT_FOUND, "no such collection")

    async def crashed(request, context):
        raise RuntimeError("bug")

    svc = "test.v1.Unit"
    before = [count(svc, "Ok", "OK"), count(svc, "Refused", "NOT_FOUND"), count(svc, "Crashed", "UNKNOWN")]
    spans.clear()

    async def go():
        h = observed(svc, "Ok", grpc.unary_unary_rpc_method_handler(ok))
        assert await h.unary_unary("req", Context((("traceparent", TRACEPARENT),))) == "reply"
        h = observed(svc, "Refused", grpc.unary_unary_rpc_method_handler(refused))
        with pytest.raises(grpc.aio.AbortError):
            await h.unary_unary("req", Context())
        h = observed(svc, "Crashed", grpc.unary_unary_rpc_method_handler(crashed))
        with pytest.raises(RuntimeError):
            await h.unary_unary("req", Context())

    asyncio.run(go())
    after = [count(svc, "Ok", "OK"), count(svc, "Refused", "NOT_FOUND"), count(svc, "Crashed", "UNKNOWN")]
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    finished = {s.name: s for s in spans.get_finished_spans()}
    ok_span = finished[f"{svc}/Ok"]
    assert ok_span.context.trace_id == PARENT_TRACE_ID and ok_span.parent.span_id == int(
        "b7ad6b7169203331", 16
    )
    assert ok_span.kind == trace.SpanKind.SERVER
    assert finished[f"{svc}/Refused"].attributes["rpc.grpc.status_code"] == "NOT_FOUND"
    assert finished[f"{svc}/Refused"].parent is None  # no traceparent: a new trace
    assert tracing.current_trace_id() is None  # every span was detached


def test_no_trace_context_goes_out_without_a_sampled_span(spans):
    assert tracing.outgoing_metadata() == ()


def test_a_log_line_inside_a_span_carries_its_trace_id(spans):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.observability")
    logger.addHandler(handler)
    try:
        with tracing.TRACER.start_as_current_span("work") as span:
            logger.warning("inside")
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = out.getvalue().splitlines()
    assert f'"trace_id":"{format(span.get_span_context().trace_id, "032x")}"' in inside
    assert "trace_id" not in outside


# --------------------------------------------------------------------------- HTTP observer


def http_count(route: str, method: str, code: str) -> float:
    labels = {"route": route, "method": method, "code": code}
    return REGISTRY.get_sample_value("quartz_http_request_duration_seconds_count", labels) or 0.0


def test_http_requests_are_labelled_by_route_template_never_by_raw_path(spans):
    app = FastAPI()

    @app.get("/v1/collections/{name}")
    async def describe(name: str):
        return {"name": name}

    observed_app = ObservedApp(app)

    async def call(path: str) -> int:
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"traceparent", TRACEPARENT.encode())],
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 5000),
        }
        await observed_app(scope, receive, send)
        return sent[0]["status"]

    template = "/v1/collections/{name}"
    before = http_count(template, "GET", "200"), http_count(UNMATCHED, "GET", "404")
    spans.clear()
    assert asyncio.run(call("/v1/collections/tenant-secret-name")) == 200
    assert asyncio.run(call("/nowhere/else")) == 404
    assert http_count(template, "GET", "200") - before[0] == 1
    assert http_count(UNMATCHED, "GET", "404") - before[1] == 1
    assert (
        REGISTRY.get_sample_value(
            "quartz_http_request_duration_seconds_count",
            {"route": "/v1/collections/tenant-secret-name", "method": "GET", "code": "200"},
        )
        is None
    )
    names = {s.name: s for s in spans.get_finished_spans()}
    assert names[f"GET {template}"].context.trace_id == PARENT_TRACE_ID


# --------------------------------------------------------------------------- node health


def test_a_node_reports_it_cannot_write_when_its_disk_is_nearly_full_or_a_replica_fails(tmp_path):
    from types import SimpleNamespace

    from quartz_cluster.node.health import disk_problem, node_health

    assert disk_problem(100 * 2**20, 64 * 2**20) == ""
    assert disk_problem(3 * 2**20, 64 * 2**20) == "disk nearly full: under 64 MiB free"
    assert disk_problem(0, 64 * 2**20) == disk_problem(3 * 2**20, 64 * 2**20)  # stable: no record churn

    class Replica:
        def __init__(self, health: str) -> None:
            self.spec = SimpleNamespace(name="cid/0")
            self._health = health

        def health(self) -> str:
            return self._health

    fine = SimpleNamespace(shards={("cid", 0): Replica("ok")})
    failing = SimpleNamespace(shards={("cid", 0): Replica("checkpoint failing (3 in a row): OSError")})
    assert node_health(fine, str(tmp_path)) == ""  # (this machine's temp dir has room)
    assert node_health(failing, str(tmp_path)) == "shard cid/0: checkpoint failing (3 in a row): OSError"
