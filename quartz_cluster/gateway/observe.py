"""Every HTTP request the gateway serves, measured and traced: its duration into
`quartz_http_request_duration_seconds{route, method, code}` (route is the path template, such as
/v1/collections/{name}/search, never the raw path: no collection or tenant name in a label), and
when tracing is on a server span whose parent is the request's `traceparent` header. A plain
ASGI middleware: it adds no task and no copy of the body."""

from __future__ import annotations

import time

from opentelemetry import context as otel_context
from opentelemetry import trace

from quartz_cluster.observability import tracing
from quartz_cluster.observability.metrics import HTTP_SECONDS

UNMATCHED = "unmatched"  # a path that matched no route (a 404): one label value for all of them


def _route(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class _Headers:
    """The two trace headers of an ASGI scope, looked up like a mapping."""

    def __init__(self, raw) -> None:
        self.raw = raw

    def get(self, name: str):
        key = name.encode()
        for k, v in self.raw:
            if k == key:
                return v.decode("latin-1")
        return None


class ObservedApp:
    def __init__(self, app) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], object] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500
        span = token = None
        if tracing.enabled():
            parent = tracing.parent_from(_Headers(scope.get("headers") or ()))
            span = tracing.TRACER.start_span(
                f"HTTP {scope['method']}", context=parent, kind=trace.SpanKind.SERVER
            )
            if span.is_recording():
                token = otel_context.attach(trace.set_span_in_context(span))
            else:
                span = None  # not sampled: nothing to record or pass on

        async def send_observed(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            route, method = _route(scope), scope["method"]
            key = (route, method, status)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = HTTP_SECONDS.labels(route, method, str(status))
            child.observe(time.perf_counter() - t0)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
                span.end()
                otel_context.detach(token)
