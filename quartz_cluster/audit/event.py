"""An audit event, shaped like a Kubernetes audit event (audit.k8s.io/v1 `Event`, level Metadata,
stage ResponseComplete). Pure: no I/O (the clock is read only when no timestamp is given).

What an event holds, and what it never holds:

- who: `user.username` is the API key id (public: it is in the key itself, DESIGN §11; "" when
  the caller could not be identified, e.g. a malformed key), `user.extra.tenant` and
  `user.extra.role` the key's tenant and role;
- from where: `sourceIPs` (see `parse_peer`) and `userAgent`;
- on what: `objectRef` = resource ("collections", "points", "keys", "tenants"), namespace (the
  tenant the object belongs to) and name (a collection name, a key id, a tenant id);
- the outcome: `responseStatus` = HTTP status code, "Success"/"Failure", the gRPC status name as
  `reason`, and a short `message`;
- how much: `annotations`, strings only (e.g. {"quartz/points": "100"}).

Metadata level means no request or response bodies: `make_event` has no parameter that could
carry vectors, payloads, filters or secrets, and the free-text fields (message, user agent,
annotation values) are cut to MESSAGE_CHARS_MAX characters with anything shaped like an API key
(`qz_<key id>_<secret>`) reduced to its key id.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from urllib.parse import unquote

API_VERSION = "audit.k8s.io/v1"
KIND = "Event"
STAGE = "ResponseComplete"
LEVEL = "Metadata"
MESSAGE_CHARS_MAX = 256

# The operations the router records (the verb is our operation name). Others are accepted if they
# are shaped like one (lower-case words joined by "_"): a new operation needs no change here.
VERBS = (
    "upsert",
    "delete",
    "create_collection",
    "drop_collection",
    "create_key",
    "revoke_key",
    "create_tenant",
    "update_tenant",
    "delete_tenant",
    "authenticate",
)
RESOURCES = ("collections", "points", "keys", "tenants")

_WORD_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_RESOURCE_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_SECRET_RE = re.compile(r"qz_([0-9a-f]{12})_[0-9a-f]{8,}")  # auth/keys.py: qz_<12 hex>_<40 hex>


def clean_text(text: str, limit: int = MESSAGE_CHARS_MAX) -> str:
    """`text` with API key secrets removed, cut to `limit` characters (the cut ends in "…")."""
    text = _SECRET_RE.sub(r"qz_\1_<redacted>", str(text))
    if len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def timestamp(value: datetime | float | None = None) -> str:
    """RFC 3339 in UTC with microseconds and "Z": 2025-01-02T03:04:05.000006Z. `value` is an
    aware datetime or seconds since the epoch; None is now."""
    if value is None:
        moment = datetime.now(UTC)
    elif isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp: a naive datetime has no time zone; pass an aware one")
        moment = value.astimezone(UTC)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        raise TypeError(f"timestamp: expected a datetime or seconds since the epoch, got {type(value)}")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> datetime:
    """The aware datetime of an RFC 3339 timestamp (ValueError if it is not one, or has no zone)."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return moment.astimezone(UTC)


def parse_peer(grpc_peer: str) -> str:
    """The IP address in a gRPC peer string: "ipv4:127.0.0.1:5555" -> "127.0.0.1",
    "ipv6:[::1]:5555" (or its percent-encoded form "ipv6:%5B::1%5D:5555") -> "::1". A bare
    address ("10.0.0.7", e.g. an HTTP client's host) is returned as is. "" when there is no IP
    address: "unix:/path", "unix-abstract:...", anything unparseable."""
    text = unquote(str(grpc_peer or "")).strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme in ("ipv4", "ipv6"):
        host = rest
        if host.startswith("["):  # [addr]:port or [addr]
            host = host[1:].partition("]")[0]
        elif scheme == "ipv4" or host.count(":") == 1:
            host = host.partition(":")[0]  # addr:port
        # else: ipv6 without brackets and without a port ("ipv6:::1")
    else:
        host = text
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return ""


def _word(value: str, pattern: re.Pattern[str], field: str) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"{field}: expected a name matching {pattern.pattern}, got {value!r}")
    return value


def make_event(
    *,
    verb: str,
    code: int,
    reason: str = "OK",
    message: str = "",
    key_id: str = "",
    tenant: str = "",
    role: str = "",
    resource: str | None = None,
    namespace: str | None = None,
    name: str = "",
    source_ips: Iterable[str] = (),
    user_agent: str = "",
    annotations: Mapping[str, str | int] | None = None,
    received: datetime | float | None = None,
    completed: datetime | float | None = None,
    audit_id: str | None = None,
) -> dict:
    """One audit event as a JSON-ready dict.

    verb: the operation (VERBS); code: the HTTP status of the outcome (gRPC callers map their
    status through rpc/status.py's table), reason: the gRPC status name ("OK", "NOT_FOUND", ...),
    message: a short description (the error message of a failure).
    key_id, tenant, role: the caller (empty when unknown: user.extra then omits it).
    resource, namespace, name: the object (no objectRef when resource is None, e.g. a failed
    authentication); namespace defaults to the caller's tenant, except for "tenants", which
    are cluster-scoped (no namespace unless given).
    source_ips: client addresses (empty strings are dropped; see parse_peer).
    annotations: string values (ints are converted), e.g. {"quartz/points": "100"}.
    received, completed: when the request arrived and when it was answered (default: now).
    """
    _word(verb, _WORD_RE, "verb")
    if not isinstance(code, int) or isinstance(code, bool) or not 100 <= code <= 599:
        raise ValueError(f"code: expected an HTTP status (100..599), got {code!r}")
    extra: dict[str, list[str]] = {}
    if tenant:
        extra["tenant"] = [str(tenant)]
    if role:
        extra["role"] = [str(role)]
    completed_at = timestamp(completed)
    event: dict = {
        "kind": KIND,
        "apiVersion": API_VERSION,
        "level": LEVEL,
        "auditID": audit_id or uuid.uuid4().hex,
        "stage": STAGE,
        "verb": verb,
        "user": {"username": str(key_id or ""), "extra": extra},
        "sourceIPs": [str(ip) for ip in source_ips if ip],
        "userAgent": clean_text(user_agent or ""),
    }
    if resource is not None:
        _word(resource, _RESOURCE_RE, "resource")
        if namespace is None:
            namespace = "" if resource == "tenants" else tenant
        ref = {"resource": resource}
        if namespace:
            ref["namespace"] = str(namespace)
        if name:
            ref["name"] = str(name)
        event["objectRef"] = ref
    event["responseStatus"] = {
        "code": code,
        "status": "Success" if code < 400 else "Failure",
        "reason": str(reason),
        "message": clean_text(message or ""),
    }
    event["requestReceivedTimestamp"] = completed_at if received is None else timestamp(received)
    event["stageTimestamp"] = completed_at
    notes: dict[str, str] = {}
    for key, value in (annotations or {}).items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"annotations: keys must be non-empty strings, got {key!r}")
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise ValueError(f"annotations[{key!r}]: expected a string (or int), got {type(value).__name__}")
        notes[key] = clean_text(str(value))
    event["annotations"] = notes
    return event
