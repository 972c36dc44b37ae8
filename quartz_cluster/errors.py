"""Domain errors. Domain code raises these; the RPC layer maps them to statuses in one table
(`quartz_cluster.rpc.status`). Messages name the offending field first: "ids[3]: ..."."""

from __future__ import annotations

ECHO_CHARS_MAX = 80


def echo(value: object) -> str:
    """repr(value) for an error message, cut to ECHO_CHARS_MAX characters: a 10 KB name echoed
    back would not fit in a gRPC status."""
    text = repr(value)
    if len(text) <= ECHO_CHARS_MAX:
        return text
    return f"{text[: ECHO_CHARS_MAX - 1]}… ({len(text)} chars)"


class QuartzError(Exception):
    """Base of every error a client may see. `code` is the canonical status name."""

    code = "INTERNAL"

    def __init__(self, message: str, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class InvalidArgument(QuartzError):
    code = "INVALID_ARGUMENT"


class NotFound(QuartzError):
    code = "NOT_FOUND"


class AlreadyExists(QuartzError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(QuartzError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(QuartzError):
    code = "RESOURCE_EXHAUSTED"


class QuotaExceeded(ResourceExhausted):
    """A plan's quota is used up (HTTP 403): retrying soon does not help. A rate limit
    (router/ratelimit.py RateLimited) stays a plain ResourceExhausted (HTTP 429)."""


class Unavailable(QuartzError):
    code = "UNAVAILABLE"


class Unauthenticated(QuartzError):
    code = "UNAUTHENTICATED"


class PermissionDenied(QuartzError):
    code = "PERMISSION_DENIED"


class Internal(QuartzError):
    code = "INTERNAL"
