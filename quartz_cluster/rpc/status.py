"""The one table from domain errors to gRPC status codes and HTTP statuses, and the decorator
that applies it to servicer methods."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from quartz_cluster import errors
from quartz_cluster.rpc.decode import Undecodable

log = logging.getLogger("quartz.rpc")
# A status message travels in gRPC trailing metadata (8 KiB in all by default): a longer one would
# turn the answer into RESOURCE_EXHAUSTED. Messages are cut to this (and values echoed in them by
# `errors.echo`).
STATUS_MESSAGE_CHARS_MAX = 1024
RETRY_AFTER_MS = "retry-after-ms"  # trailing metadata of a rate-limited call

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
    errors.QuotaExceeded: (grpc.StatusCode.RESOURCE_EXHAUSTED, 403),  # a quota: waiting does not help
}


def status_message(text: str) -> str:
    if len(text) <= STATUS_MESSAGE_CHARS_MAX:
        return text
    return f"{text[: STATUS_MESSAGE_CHARS_MAX - 20]}… ({len(text)} chars)"


def status_of(exc: errors.QuartzError) -> tuple[grpc.StatusCode, int]:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL, 500


R = TypeVar("R")


def rpc(method: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
    """Turn domain errors into gRPC statuses; unexpected exceptions into INTERNAL, so no request
    can take the process down. An unexpected exception is logged with an error id, and the caller
    gets only that id: internal text (paths, keys, library messages) stays in the log."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext) -> R:
        if isinstance(request, Undecodable):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_message(request.message))
        try:
            return await method(self, request, context)
        except errors.QuartzError as exc:
            retry_after_s = getattr(exc, "retry_after_s", None)
            if retry_after_s is not None:  # a rate limit: when to try again (the SDK waits that long)
                ms = str(max(1, round(retry_after_s * 1000)))
                context.set_trailing_metadata(((RETRY_AFTER_MS, ms), ("grpc-retry-pushback-ms", ms)))
            await context.abort(status_of(exc)[0], status_message(str(exc)))
        except grpc.aio.AbortError:
            raise
        except Exception:
            error_id = uuid.uuid4().hex[:12]
            log.exception("unhandled error", extra={"method": method.__name__, "error_id": error_id})
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (error id {error_id}; see the server log)"
            )
        raise AssertionError("unreachable")

    return wrapper


_BY_CODE = {code: cls for cls, (code, _) in STATUS.items() if cls.__base__ is errors.QuartzError}


def error_from_rpc(exc: grpc.RpcError, context: str = "") -> errors.QuartzError:
    """A node's (or router's) gRPC status back into the domain error it stands for."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    cls = _BY_CODE.get(code)
    if cls is errors.ResourceExhausted and (details or "").startswith("quota "):
        cls = errors.QuotaExceeded  # a plan's quota (router/frontdoor.py, ratelimit.py): not a rate limit
    if cls is None:
        # a peer too slow, or shutting down mid-call (CANCELLED): transient, worth a retry elsewhere
        transient = code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        cls = errors.Unavailable if transient else errors.Internal
        details = f"{code.name}: {details}"
    return cls(f"{context}{details}")
