"""Usage alerts: which quota thresholds a tenant reached, the alert's id, its signature, and its
delivery to the tenant's webhook.

Signed like Stripe's webhooks: `Quartz-Signature: t=<unix>,v1=<hex hmac-sha256(secret,
"<t>.<body>")>`. Every delivery of one alert carries the same `Quartz-Webhook-Id`, so a receiver
drops the copies that retries and coordinator failovers send.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping

from quartz_cluster.billing.plans import QUOTA_CALLS_PER_DAY, QUOTA_STORAGE_BYTES, QUOTA_STORED_VECTORS
from quartz_cluster.errors import InvalidArgument, echo

THRESHOLDS_PERCENT = (80, 100)
SIGNATURE_HEADER = "Quartz-Signature"
WEBHOOK_ID_HEADER = "Quartz-Webhook-Id"
SIGNATURE_HEADER_CHARS_MAX = 1024  # a longer header is refused unparsed
SIGNATURE_TOLERANCE_S = 300
ATTEMPTS_MAX = 20
BACKOFF_S_MAX = 60.0  # one wait between attempts, Retry-After included
BACKOFF_JITTER = 0.25  # each wait is lengthened by up to this share, so receivers are not hit in step
_PERIOD_FORMAT = {
    QUOTA_CALLS_PER_DAY: "%Y-%m-%d",
    QUOTA_STORED_VECTORS: "%Y-%m",
    QUOTA_STORAGE_BYTES: "%Y-%m",
}


def thresholds_crossed(
    limits: Mapping[str, float], figures: Mapping[str, float], thresholds: Iterable[int] = THRESHOLDS_PERCENT
) -> list[tuple[str, int]]:
    """(quota, percent) for every threshold that a figure has reached (figure >= percent % of
    its limit), in the order of `limits`, then of ascending percent. A quota without a figure
    counts as 0; a limit <= 0 has no percentage and never alerts."""
    ordered = sorted(thresholds)
    crossed = []
    for quota, limit in limits.items():
        if limit <= 0:
            continue
        figure = figures.get(quota, 0)
        # figure * 100 >= percent * limit: exact for integer figures, no division
        crossed.extend((quota, percent) for percent in ordered if figure * 100 >= percent * limit)
    return crossed


def period_of(quota: str, now_s: float) -> str:
    """The period an alert of `quota` belongs to, in UTC: the day ("YYYY-MM-DD") for
    calls_per_day, the month ("YYYY-MM") for the stored quotas. One alert per period and
    threshold."""
    fmt = _PERIOD_FORMAT.get(quota)
    if fmt is None:
        raise InvalidArgument(f"unknown quota {echo(quota)}; one of {', '.join(_PERIOD_FORMAT)}", "quota")
    return time.strftime(fmt, time.gmtime(now_s))


def alert_id(tenant: str, quota: str, period: str, threshold: int) -> str:
    """The alert's id, the same wherever and however often it is computed: `alert_` + 32 hex."""
    key = json.dumps([tenant, quota, period, threshold], separators=(",", ":")).encode()
    return "alert_" + hashlib.sha256(key).hexdigest()[:32]


def alert_body(
    tenant: str, quota: str, period: str, threshold: int, limit: float, figure: float, now_s: float
) -> bytes:
    """The JSON body of a usage alert."""
    doc = {
        "id": alert_id(tenant, quota, period, threshold),
        "type": "usage.threshold_reached",
        "created": int(now_s),
        "tenant": tenant,
        "quota": quota,
        "period": period,
        "threshold_percent": threshold,
        "limit": limit,
        "value": figure,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The Quartz-Signature header value for `body` sent at unix time `t`."""
    return f"t={t},v1={_digest(secret, body, t)}"


def verify(
    secret: bytes, body: bytes, header: str, now_s: float, tolerance_s: float = SIGNATURE_TOLERANCE_S
) -> bool:
    """Whether `header` signs `body` with `secret` at a time within `tolerance_s` of `now_s`
    (replays of old deliveries fail). Constant-time comparison; any malformed header is False."""
    if not isinstance(header, str) or len(header) > SIGNATURE_HEADER_CHARS_MAX:
        return False
    t: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if t is not None or not value.isascii() or not value.isdigit():
                return False
            t = int(value)
        elif key == "v1":
            candidates.append(value)
    if t is None or not candidates or abs(now_s - t) > tolerance_s:
        return False
    expected = _digest(secret, body, t).encode()
    # every candidate is compared, so the time taken does not say which one matched
    matches = [hmac.compare_digest(expected, c.encode()) for c in candidates]
    return any(matches)


async def deliver(
    url: str,
    secret: bytes,
    body: bytes,
    alert_id: str,
    attempts: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 5.0,
) -> bool:
    """POST `body` (JSON) to `url`, signed, with `Quartz-Webhook-Id: alert_id`; whether a 2xx
    answered. Connection errors, 5xx and 429 are retried up to `attempts` in all, waiting
    backoff_s, 2 x backoff_s, ... (+ jitter, at least a Retry-After, at most BACKOFF_S_MAX);
    any other status (a redirect included: never followed) gives up at once."""
    if not (isinstance(url, str) and url.lower().startswith(("http://", "https://"))):
        raise InvalidArgument(f"expected an http:// or https:// URL, got {echo(url)}", "url")
    if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= ATTEMPTS_MAX:
        raise InvalidArgument(f"expected 1..{ATTEMPTS_MAX}, got {echo(attempts)}", "attempts")
    for attempt in range(attempts):
        status, retry_after_s = await asyncio.to_thread(_post, url, secret, body, alert_id, timeout_s)
        if status is not None and 200 <= status < 300:
            return True
        if status is not None and status != 429 and status < 500:
            return False
        if attempt + 1 < attempts:
            delay_s = min(BACKOFF_S_MAX, backoff_s * 2**attempt)
            delay_s += random.uniform(0, delay_s * BACKOFF_JITTER)
            await asyncio.sleep(min(BACKOFF_S_MAX, max(delay_s, retry_after_s)))
    return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError with the 3xx status


_opener = urllib.request.build_opener(_NoRedirect)


def _post(
    url: str, secret: bytes, body: bytes, webhook_id: str, timeout_s: float
) -> tuple[int | None, float]:
    """One attempt: (HTTP status, Retry-After seconds or 0), status None if no answer came."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
            WEBHOOK_ID_HEADER: webhook_id,
        },
    )
    try:
        with _opener.open(request, timeout=timeout_s) as response:
            return response.status, 0.0
    except urllib.error.HTTPError as e:
        with e:
            return e.code, _retry_after_s(e.headers.get("Retry-After"))
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, no status line
        return None, 0.0


def _retry_after_s(value: str | None) -> float:
    """Retry-After in seconds (the HTTP-date form is ignored)."""
    return float(value) if value and value.isascii() and value.isdigit() else 0.0


def _digest(secret: bytes, body: bytes, t: int) -> str:
    return hmac.new(secret, str(t).encode() + b"." + body, hashlib.sha256).hexdigest()
