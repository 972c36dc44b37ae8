"""One tenant's invoice for one calendar month (UTC), from its metered usage and its plan.

Units: an API call; 1,000 batch vectors; a vector-month (vector_seconds / seconds in the month);
a GB-month (byte_seconds / 10**9 / seconds in the month). Quantities are exact `Decimal`s; each
line's amount is rounded half-up to the cent and the total is the sum of the lines.
"""

from __future__ import annotations

import calendar
import html
import math
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

from quartz_cluster.billing.plans import (
    DAY_S,
    GB_BYTES,
    QUOTA_CALLS_PER_DAY,
    QUOTA_STORAGE_BYTES,
    QUOTA_STORED_VECTORS,
    Plan,
)
from quartz_cluster.errors import InvalidArgument, echo

YEAR_MIN, YEAR_MAX = 2000, 2100
BATCH_VECTORS_PER_UNIT = 1_000
CURRENCY = "usd"
MICROUSD_PER_USD = 1_000_000
CENT = Decimal("0.01")
QUANTITY_PLACES = Decimal("0.000001")  # quantities shown (JSON, HTML); amounts use exact ones
_MONTH_RE = re.compile(r"([0-9]{4})-([0-9]{2})")


@dataclass(frozen=True)
class Usage:
    """One tenant's metered usage over a period: successful public calls, vectors written by
    upserts, and stored vectors and stored bytes integrated over time."""

    calls: int = 0
    batch_vectors: int = 0
    vector_seconds: float = 0.0
    byte_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("calls", "batch_vectors"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgument(f"must be an integer >= 0, got {echo(value)}", f"usage.{name}")
        for name in ("vector_seconds", "byte_seconds"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value >= 0)
            ):
                raise InvalidArgument(f"must be a finite number >= 0, got {echo(value)}", f"usage.{name}")

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            calls=self.calls + other.calls,
            batch_vectors=self.batch_vectors + other.batch_vectors,
            vector_seconds=self.vector_seconds + other.vector_seconds,
            byte_seconds=self.byte_seconds + other.byte_seconds,
        )


@dataclass(frozen=True)
class Line:
    """One invoice line: `billable` = max(0, quantity - allowance), `amount` = billable x
    `unit_price` rounded half-up to the cent. Prices and amounts are US dollars."""

    description: str
    unit: str
    quantity: Decimal
    allowance: Decimal
    billable: Decimal
    unit_price: Decimal
    amount: Decimal

    def to_json(self) -> dict[str, object]:
        return {
            "description": self.description,
            "unit": self.unit,
            "quantity": _json_number(self.quantity),
            "allowance": _json_number(self.allowance),
            "billable": _json_number(self.billable),
            "unit_price": str(self.unit_price),
            "amount": str(self.amount),
        }


@dataclass(frozen=True)
class Invoice:
    """One tenant's invoice for one month; `total` (US dollars) is the sum of the lines' amounts."""

    tenant: str
    customer: str
    plan: str
    month: str
    lines: tuple[Line, ...]
    total: Decimal

    def to_json(self) -> dict[str, object]:
        """Amounts and prices as strings ("50300.00"), quantities as numbers."""
        return {
            "tenant": self.tenant,
            "customer": self.customer,
            "plan": self.plan,
            "month": self.month,
            "currency": CURRENCY,
            "lines": [line.to_json() for line in self.lines],
            "total": str(self.total),
        }

    def to_html(self) -> str:
        """A self-contained HTML page (no external assets); every text is escaped."""
        e = html.escape
        rows = "\n".join(
            "<tr>"
            f"<td>{e(line.description)}</td><td>{e(line.unit)}</td>"
            f'<td class="n">{e(_text_number(line.quantity))}</td>'
            f'<td class="n">{e(_text_number(line.allowance))}</td>'
            f'<td class="n">{e(_text_number(line.billable))}</td>'
            f'<td class="n">{e(str(line.unit_price))}</td>'
            f'<td class="n">{e(f"{line.amount:,}")}</td>'
            "</tr>"
            for line in self.lines
        )
        title = f"Invoice {self.tenant} {self.month}"
        customer = f"<dt>Customer</dt><dd>{e(self.customer)}</dd>" if self.customer else ""
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
th, td {{ border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
dt {{ font-weight: bold; }}
</style>
</head>
<body>
<h1>{e(title)}</h1>
<dl>
<dt>Tenant</dt><dd>{e(self.tenant)}</dd>
{customer}
<dt>Plan</dt><dd>{e(self.plan)}</dd>
<dt>Period</dt><dd>{e(self.month)} (UTC)</dd>
</dl>
<table>
<thead><tr><th>Item</th><th>Unit</th><th class="n">Quantity</th><th class="n">Allowance</th>
<th class="n">Billable</th><th class="n">Unit price (USD)</th><th class="n">Amount (USD)</th></tr></thead>
<tbody>
{rows}
</tbody>
<tfoot><tr><th colspan="6">Total (USD)</th><th class="n">{e(f"{self.total:,}")}</th></tr></tfoot>
</table>
</body>
</html>
"""


def month_seconds(month: str) -> int:
    """Seconds in a UTC calendar month "YYYY-MM" (exact days: 2028-02 has 29)."""
    year, mo = _parse_month(month)
    return calendar.monthrange(year, mo)[1] * DAY_S


def invoice(tenant: str, plan: Plan, month: str, usage: Usage, customer: str = "") -> Invoice:
    """The invoice of `usage` (one tenant, the whole month) under `plan`.

    A line's allowance is the plan's quota for its unit held all month (the free plan's
    100 calls/day x days, 1,000 vector-months, 1 GB-month); a plan without quotas has none."""
    seconds = Decimal(month_seconds(month))
    quotas = plan.quotas()
    days = seconds / DAY_S
    calls_allowance = Decimal(quotas.get(QUOTA_CALLS_PER_DAY, 0)) * days
    vectors_allowance = Decimal(quotas.get(QUOTA_STORED_VECTORS, 0))
    gb_allowance = Decimal(quotas.get(QUOTA_STORAGE_BYTES, 0)) / GB_BYTES
    lines = (
        _line("API calls", "call", Decimal(usage.calls), calls_allowance, plan.price_call_usd),
        _line(
            "Vectors written in batch operations",
            "1,000 vectors",
            Decimal(usage.batch_vectors) / BATCH_VECTORS_PER_UNIT,
            Decimal(0),
            plan.price_batch_1000_vectors_usd,
        ),
        _line(
            "Stored vectors",
            "vector-month",
            Decimal(usage.vector_seconds) / seconds,
            vectors_allowance,
            plan.price_vector_month_usd,
        ),
        _line(
            "Storage",
            "GB-month",
            Decimal(usage.byte_seconds) / GB_BYTES / seconds,
            gb_allowance,
            plan.price_gb_month_usd,
        ),
    )
    total = sum((line.amount for line in lines), Decimal("0.00"))
    return Invoice(tenant=tenant, customer=customer, plan=plan.name, month=month, lines=lines, total=total)


def hour_charge_microusd(plan: Plan, usage_hour: Usage, month: str) -> int:
    """The price of one hour's usage in micro-dollars, rounded half-even: what the hour adds
    to the month's Stripe meter. Allowances are not applied (a plan has quotas or prices, not
    both), so a month's hours sum to its invoice total within one rounding per hour."""
    seconds = Decimal(month_seconds(month))
    usd = (
        Decimal(usage_hour.calls) * plan.price_call_usd
        + Decimal(usage_hour.batch_vectors) / BATCH_VECTORS_PER_UNIT * plan.price_batch_1000_vectors_usd
        + Decimal(usage_hour.vector_seconds) / seconds * plan.price_vector_month_usd
        + Decimal(usage_hour.byte_seconds) / GB_BYTES / seconds * plan.price_gb_month_usd
    )
    return int((usd * MICROUSD_PER_USD).to_integral_value(rounding=ROUND_HALF_EVEN))


def _parse_month(month: str) -> tuple[int, int]:
    m = _MONTH_RE.fullmatch(month) if isinstance(month, str) else None
    if m is None or not (YEAR_MIN <= int(m[1]) <= YEAR_MAX and 1 <= int(m[2]) <= 12):
        raise InvalidArgument(f"expected YYYY-MM in {YEAR_MIN}..{YEAR_MAX}, got {echo(month)}", "month")
    return int(m[1]), int(m[2])


def _line(description: str, unit: str, quantity: Decimal, allowance: Decimal, price: Decimal) -> Line:
    billable = max(Decimal(0), quantity - allowance)
    return Line(
        description=description,
        unit=unit,
        quantity=quantity,
        allowance=allowance,
        billable=billable,
        unit_price=price,
        amount=(billable * price).quantize(CENT, rounding=ROUND_HALF_UP),
    )


def _json_number(q: Decimal) -> int | float:
    if q == q.to_integral_value():
        return int(q)
    return float(q.quantize(QUANTITY_PLACES, rounding=ROUND_HALF_UP))


def _text_number(q: Decimal) -> str:
    n = _json_number(q)
    return f"{n:,}" if isinstance(n, int) else f"{n:,.6f}".rstrip("0")
