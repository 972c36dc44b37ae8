"""Usage leaves as Stripe billing meter events, one per tenant per hour, through the `stripe`
library (DESIGN.md §12, docs/billing.md).

An event's value is the hour's charge in micro-dollars (invoice.hour_charge_microusd); the meter
sums them and its price is $0.000001 a unit. The event `identifier` is derived from the tenant and
the hour, so a resend of an event Stripe already has is dropped by Stripe rather than counted
twice. This module keeps no state: the caller (the coordinator) keeps the cursor of what was sent.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from stripe.params.billing import MeterEventCreateParams

from quartz_cluster import limits
from quartz_cluster.errors import InvalidArgument, echo

log = logging.getLogger("quartz.billing.stripe")

EVENT_NAME = "quartz_usage_microusd"
IDENTIFIER_CHARS_MAX = 100  # Stripe's limit on a meter event identifier
# One try per send: the caller's next pass is the retry, and the library's own retries would
# sleep (0.5 s doubling up to 5 s) in the caller's loop.
NETWORK_RETRIES = 0
_HOUR_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2})")
_TENANT_RE = re.compile(limits.NAME_PATTERN)


class SendFailed(Exception):
    """A meter event did not reach Stripe (a Stripe error or a connection failure); `reason`
    says why. Sending it again later is safe."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Pending:
    """One hour of one tenant's usage to send: `value` micro-dollars, `hour` "YYYY-MM-DDTHH" (UTC)."""

    tenant: str
    customer_id: str
    hour: str
    value: int


def hour_start_s(hour: str) -> int:
    """The unix time of the start of a UTC hour "YYYY-MM-DDTHH"; InvalidArgument naming "hour"."""
    m = _HOUR_RE.fullmatch(hour) if isinstance(hour, str) else None
    try:
        if m is None:
            raise ValueError
        start = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), tzinfo=UTC)
    except ValueError:
        raise InvalidArgument(f"expected a UTC hour YYYY-MM-DDTHH, got {echo(hour)}", "hour") from None
    return int(start.timestamp())


class StripeMeter:
    """Sends meter events with its own `stripe.StripeClient` (no module globals are set)."""

    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        event_name: str = EVENT_NAME,
        timeout_s: float = 10.0,
    ) -> None:
        self.event_name = event_name
        self._http = stripe.RequestsClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=NETWORK_RETRIES,
            http_client=self._http,
        )

    @staticmethod
    def identifier(tenant: str, hour: str) -> str:
        """The event's identifier: `quartz-<tenant>-<YYYY-MM-DDTHH>`, the same on every resend."""
        if not isinstance(tenant, str) or _TENANT_RE.fullmatch(tenant) is None:
            raise InvalidArgument(
                f"expected a name matching {limits.NAME_PATTERN}, got {echo(tenant)}", "tenant"
            )
        hour_start_s(hour)
        ident = f"quartz-{tenant}-{hour}"
        assert len(ident) <= IDENTIFIER_CHARS_MAX, ident  # 64-char tenant: 85 chars
        return ident

    def send(self, tenant: str, customer_id: str, hour: str, value: int) -> None:
        """Create one meter event for the hour; SendFailed if Stripe refuses or cannot be reached."""
        ident = self.identifier(tenant, hour)
        if not isinstance(customer_id, str) or not customer_id:
            raise InvalidArgument(f"expected a Stripe customer id, got {echo(customer_id)}", "customer_id")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"expected an integer >= 0, got {echo(value)}", "value")
        params: MeterEventCreateParams = {
            "event_name": self.event_name,
            "payload": {"stripe_customer_id": customer_id, "value": str(value)},
            "identifier": ident,
            "timestamp": hour_start_s(hour),
        }
        try:
            self._client.v1.billing.meter_events.create(params=params)
        except stripe.StripeError as e:
            status = f"HTTP {e.http_status}" if e.http_status else "no response"
            code = f" {e.code}" if e.code else ""
            raise SendFailed(f"{ident}: {type(e).__name__} ({status}{code}): {e.user_message or e}") from e

    def send_pending(self, pending: list[Pending]) -> list[Pending]:
        """Send in order and return those sent; stop at the first failure (logged), so that the
        caller resends the rest, in order, on its next pass."""
        sent: list[Pending] = []
        for p in pending:
            try:
                self.send(p.tenant, p.customer_id, p.hour, p.value)
            except SendFailed as e:
                log.warning(
                    "stripe meter event not sent: %s", e.reason, extra={"tenant": p.tenant, "hour": p.hour}
                )
                break
            sent.append(p)
        return sent

    def close(self) -> None:
        """Close the calling thread's HTTP session."""
        self._http.close()
