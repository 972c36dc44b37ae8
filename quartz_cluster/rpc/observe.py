"""Every gRPC method a process serves, measured and traced: its duration into
`quartz_rpc_request_duration_seconds{service, method, code}` and, when tracing is on, a server span
whose parent is the caller's `traceparent`. Applied by `rpc.decode.register` to each handler, so a
servicer knows nothing of it (and refusals by the status table are counted under their code)."""

from __future__ import annotations

import time

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from quartz_cluster.observability import tracing
from quartz_cluster.observability.metrics import RPC_SECONDS

_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def _code(context) -> str:
    """The status a handler ended with: OK, or what it aborted with (CANCELLED when the client
    went away first)."""
    code = context.code()
    if code is None:
        return "CANCELLED" if context.cancelled() else "OK"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return _CODE_NAMES.get(code, "UNKNOWN")


class _Observation:
    __slots__ = ("children", "method", "name", "service", "span", "t0", "token")

    def __init__(self, service: str, method: str, children: dict) -> None:
        self.service, self.method, self.children = service, method, children
        self.name = f"{service}/{method}"

    def begin(self, context) -> None:
        self.t0 = time.perf_counter()
        self.span = self.token = None
        if tracing.enabled():
            parent = tracing.parent_from(context.invocation_metadata())
            if parent is None and not tracing.starts_traces():
                return  # an internal call outside any traced request
            span = tracing.TRACER.start_span(self.name, context=parent, kind=trace.SpanKind.SERVER)
            if span.is_recording():  # sampled; an unsampled request costs no context switch
                span.set_attributes(
                    {"rpc.system": "grpc", "rpc.service": self.service, "rpc.method": self.method}
                )
                self.span = span
                self.token = otel_context.attach(trace.set_span_in_context(span))

    def end(self, context, error: BaseException | None = None) -> None:
        if error is None or isinstance(error, grpc.aio.AbortError) or context.code() is not None:
            code = _code(context)
        else:
            code = "UNKNOWN"  # an exception that escaped the status table: gRPC answers UNKNOWN
        child = self.children.get(code)
        if child is None:
            child = self.children[code] = RPC_SECONDS.labels(self.service, self.method, code)
        child.observe(time.perf_counter() - self.t0)
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code", code)
            if code != "OK":
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, code))
            self.span.end()
            otel_context.detach(self.token)


def observed(service: str, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The handler with its behaviour measured (and traced)."""
    children: dict[str, object] = {}  # code -> histogram child: one lookup per call

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request, context):
            o = _Observation(service, method, children)
            o.begin(context)
            try:
                response = await inner_uu(request, context)
            except BaseException as exc:
                o.end(context, exc)
                raise
            o.end(context)
            return response

        return handler._replace(unary_unary=unary_unary)

    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request, context):
            o = _Observation(service, method, children)
            o.begin(context)
            try:
                async for response in inner_us(request, context):
                    yield response
            except BaseException as exc:
                o.end(context, exc)
                raise
            o.end(context)

        return handler._replace(unary_stream=unary_stream)

    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(request_iterator, context):
            o = _Observation(service, method, children)
            o.begin(context)
            try:
                response = await inner_su(request_iterator, context)
            except BaseException as exc:
                o.end(context, exc)
                raise
            o.end(context)
            return response

        return handler._replace(stream_unary=stream_unary)

    inner_ss = handler.stream_stream

    async def stream_stream(request_iterator, context):
        o = _Observation(service, method, children)
        o.begin(context)
        try:
            async for response in inner_ss(request_iterator, context):
                yield response
        except BaseException as exc:
            o.end(context, exc)
            raise
        o.end(context)

    return handler._replace(stream_stream=stream_stream)
