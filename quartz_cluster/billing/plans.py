"""Plans as data: quotas (hard limits), prices and default rate limits (DESIGN.md §12).

The free plan has quotas and no prices; the paid plan has prices from the first unit and no
quotas. Prices are `Decimal` US dollars so that an invoice adds up to the cent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from quartz_cluster.errors import InvalidArgument, echo

GB_BYTES = 10**9  # billing uses decimal gigabytes
DAY_S = 86_400

OP_CLASSES = ("read", "write", "manage")
# Quota names, as used by usage figures and alerts (webhooks.thresholds_crossed / period_of)
QUOTA_CALLS_PER_DAY = "calls_per_day"
QUOTA_STORED_VECTORS = "stored_vectors"
QUOTA_STORAGE_BYTES = "storage_bytes"
QUOTAS = (QUOTA_CALLS_PER_DAY, QUOTA_STORED_VECTORS, QUOTA_STORAGE_BYTES)

RATE_PER_S_MAX = 1e9  # far above any real limit; keeps token arithmetic in float's exact range
RATE_TEXT_CHARS_MAX = 100
_RATE_UNIT_S = {"s": 1, "sec": 1, "min": 60, "h": 3600}
_RATE_FORM = "CLASS=N/UNIT[:burst=N]"
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_RATE_RE = re.compile(
    rf"(?P<op>[a-z]+)=(?P<count>{_NUMBER})/(?P<unit>[a-z]+)(?::burst=(?P<burst>{_NUMBER}))?"
)


@dataclass(frozen=True)
class Rate:
    """A token bucket: `per_s` tokens refill per second, at most `burst` held. A call takes
    as many tokens as it costs (queries in a search, points in a write, 1 otherwise)."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_s) and 0 < self.per_s <= RATE_PER_S_MAX):
            raise InvalidArgument(
                f"rate must be > 0 and <= {RATE_PER_S_MAX:g}/s, got {self.per_s!r}", "rate_limit"
            )
        # a bucket that cannot hold one token would refuse every call
        if not (math.isfinite(self.burst) and 1 <= self.burst <= RATE_PER_S_MAX):
            raise InvalidArgument(
                f"burst must be >= 1 and <= {RATE_PER_S_MAX:g}, got {self.burst!r}", "rate_limit"
            )

    def describe(self) -> str:
        """For messages: `100/s (burst 200)`."""
        return f"{self.per_s:g}/s (burst {self.burst:g})"

    def to_text(self) -> str:
        """`100/s:burst=200`; `parse_rate(f"{op}={rate.to_text()}")` gives the rate back."""
        return f"{_number_text(self.per_s)}/s:burst={_number_text(self.burst)}"


@dataclass(frozen=True)
class Plan:
    """A plan. A quota of None is no quota; a price applies from the first unit."""

    name: str
    calls_per_day_max: int | None
    stored_vectors_max: int | None
    storage_bytes_max: int | None
    price_call_usd: Decimal
    price_batch_1000_vectors_usd: Decimal
    price_vector_month_usd: Decimal
    price_gb_month_usd: Decimal
    rate_read: Rate
    rate_write: Rate
    rate_manage: Rate

    def quotas(self) -> dict[str, int]:
        """The plan's hard limits by quota name (QUOTAS); a plan without quotas gives {}."""
        limits = {
            QUOTA_CALLS_PER_DAY: self.calls_per_day_max,
            QUOTA_STORED_VECTORS: self.stored_vectors_max,
            QUOTA_STORAGE_BYTES: self.storage_bytes_max,
        }
        return {name: limit for name, limit in limits.items() if limit is not None}

    def rates(self) -> dict[str, Rate]:
        """The default rate limit of each operation class (OP_CLASSES)."""
        return {"read": self.rate_read, "write": self.rate_write, "manage": self.rate_manage}

    def rate(self, op_class: str) -> Rate:
        """The default rate limit of one operation class."""
        rates = self.rates()
        if op_class not in rates:
            raise InvalidArgument(
                f"unknown operation class {echo(op_class)}; one of {', '.join(OP_CLASSES)}", "op_class"
            )
        return rates[op_class]


FREE = Plan(
    name="free",
    calls_per_day_max=100,
    stored_vectors_max=1_000,
    storage_bytes_max=1 * GB_BYTES,
    price_call_usd=Decimal(0),
    price_batch_1000_vectors_usd=Decimal(0),
    price_vector_month_usd=Decimal(0),
    price_gb_month_usd=Decimal(0),
    rate_read=Rate(20, 40),
    rate_write=Rate(500, 1_000),
    rate_manage=Rate(2, 10),
)

PAID = Plan(
    name="paid",
    calls_per_day_max=None,
    stored_vectors_max=None,
    storage_bytes_max=None,
    price_call_usd=Decimal("0.0001"),
    price_batch_1000_vectors_usd=Decimal("0.01"),
    price_vector_month_usd=Decimal("0.001"),
    price_gb_month_usd=Decimal("0.10"),
    rate_read=Rate(2_000, 4_000),
    rate_write=Rate(50_000, 100_000),
    rate_manage=Rate(20, 50),
)

PLANS: dict[str, Plan] = {p.name: p for p in (FREE, PAID)}
PLAN_NAMES = tuple(PLANS)


def plan(name: str) -> Plan:
    """The plan called `name`; InvalidArgument naming "plan" for any other name."""
    found = PLANS.get(name) if isinstance(name, str) else None
    if found is None:
        raise InvalidArgument(f"unknown plan {echo(name)}; one of {', '.join(PLAN_NAMES)}", "plan")
    return found


def parse_rate(text: str) -> tuple[str, Rate]:
    """Parse a CLI rate limit: `read=100/s`, `write=5000/s:burst=10000`, `read=60/min`.

    Units are s, sec, min and h. Without `:burst=`, the bucket holds one unit's worth
    (60 for `60/min`), and at least 1."""
    if not isinstance(text, str) or len(text) > RATE_TEXT_CHARS_MAX:
        raise InvalidArgument(f"expected {_RATE_FORM}, got {echo(text)}", "rate_limit")
    m = _RATE_RE.fullmatch(text.strip())
    if m is None:
        raise InvalidArgument(
            f"expected {_RATE_FORM} such as read=100/s or write=5000/s:burst=10000, got {echo(text)}",
            "rate_limit",
        )
    op = m["op"]
    if op not in OP_CLASSES:
        raise InvalidArgument(
            f"unknown operation class {echo(op)}; one of {', '.join(OP_CLASSES)}", "rate_limit"
        )
    unit_s = _RATE_UNIT_S.get(m["unit"])
    if unit_s is None:
        raise InvalidArgument(
            f"unknown unit {echo(m['unit'])}; one of {', '.join(_RATE_UNIT_S)}", "rate_limit"
        )
    count = float(m["count"])
    burst = float(m["burst"]) if m["burst"] is not None else max(count, 1.0)
    return op, Rate(per_s=count / unit_s, burst=burst)


def _number_text(x: float) -> str:
    """Shortest text that parses back to x, without an exponent (1e-05 -> 0.00001)."""
    return str(int(x)) if x == int(x) else format(Decimal(repr(x)), "f")
