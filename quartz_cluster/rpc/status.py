"""The one table from domain errors to gRPC status codes and HTTP statuses, and the decorator
that applies it to servicer methods."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from quartz_cluster import errors

log = logging.getLogger("quartz.rpc")

STATUS: dict[type[errors.QuartzError], tuple[grpc.StatusCode, int]] = {
    errors.InvalidArgument: (grpc.StatusCode.INVALID_ARGUMENT, 400),
    errors.NotFound: (grpc.StatusCode.NOT_FOUND, 404),
    errors.AlreadyExists: (grpc.StatusCode.ALREADY_EXISTS, 409),
    errors.FailedPrecondition: (grpc.StatusCode.FAILED_PRECONDITION, 412),
    errors.ResourceExhausted: (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
    errors.Unavailable: (grpc.StatusCode.UNAVAILABLE, 503),
    errors.Unauthenticated: (grpc.StatusCode.UNAUTHENTICATED, 401),
    errors.PermissionDenied: (grpc.StatusCode.PERMISSION_DENIED, 403),
    errors.Internal: (grpc.StatusCode.INTERNAL, 500),
}


def status_of(exc: errors.QuartzError) -> tuple[grpc.StatusCode, int]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL, 500


R = TypeVar("R")


def rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn domain errors into gRPC statuses; unexpected exceptions into INTERNAL (logged),
    so no request can take the process down."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext) -> R:
        try:
            return await method(self, request, context)
        except errors.QuartzError as exc:
            await context.abort(status_of(exc)[0], str(exc))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("unhandled error", extra={"method": method.__name__})
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        raise AssertionError("unreachable")

    return wrapper


_BY_CODE = {code: cls for cls, (code, _) in STATUS.items()}


def error_from_rpc(exc: grpc.RpcError, context: str = "") -> errors.QuartzError:
    """A node's (or router's) gRPC status back into the domain error it stands for."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _BY_CODE.get(code)
    if cls is None:
        # a peer too slow, or shutting down mid-call (CANCELLED): transient, worth a retry elsewhere
        transient = code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        cls = errors.Unavailable if transient else errors.Internal
        details = f"{code.name}: {details}"
    return cls(f"{context}{details}")
