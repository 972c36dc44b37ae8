"""The sealed internal plane, on the gRPC side: nodes admit only callers that present a member
token signed with the cluster secret (auth/cluster.py). Health checks stay open (load
balancers and `quartz up` probe them); everything else, reflection included, needs the token.
A refused call is answered UNAUTHENTICATED before its request is even parsed."""

from __future__ import annotations

import logging

import grpc

from quartz_cluster.auth.cluster import MEMBER_METADATA, ClusterCredentials, MemberIdentity
from quartz_cluster.errors import Unauthenticated
from quartz_cluster.observability import tracing

log = logging.getLogger("quartz.rpc")
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)


def _refusal(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    async def deny(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    # raw bytes in and out: a refused request is never parsed
    if handler is None or handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream)
    return grpc.stream_stream_rpc_method_handler(deny_stream)


class MemberGuard(grpc.aio.ServerInterceptor):
    def __init__(self, credentials: ClusterCredentials) -> None:
        self.credentials = credentials

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        if details.method.startswith(OPEN_METHOD_PREFIXES):
            return await continuation(details)
        token = None
        for name, value in details.invocation_metadata or ():
            if name == MEMBER_METADATA:
                token = value
                break
        try:
            self.credentials.verify_member(token)
        except Unauthenticated as exc:
            log.warning("internal call refused", extra={"method": details.method, "reason": str(exc)})
            return _refusal(await continuation(details), str(exc))
        return await continuation(details)


class MemberStub:
    """A generated stub whose every call carries this member's token (None: a cluster run with
    --no-auth) and the current trace context (observability/tracing.py)."""

    def __init__(self, stub, identity: MemberIdentity | None) -> None:
        self._stub, self._identity = stub, identity
        self._methods: dict[str, object] = {}

    def __getattr__(self, name: str):
        method = getattr(self._stub, name)
        identity = self._identity

        def call(*args, **kwargs):
            metadata = identity.metadata() if identity is not None else ()
            traced = tracing.outgoing_metadata()
            if traced:
                metadata = (*metadata, *traced)
            return method(*args, metadata=metadata or None, **kwargs)

        setattr(self, name, call)
        return call
