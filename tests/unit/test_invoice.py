from __future__ import annotations

import html.parser
from decimal import Decimal

import pytest

from quartz_cluster.billing.invoice import Usage, hour_charge_microusd, invoice, month_seconds
from quartz_cluster.billing.plans import FREE, GB_BYTES, PAID
from quartz_cluster.errors import InvalidArgument

MONTH = "2026-01"  # 31 days
HOUR_S = 3600


def business_plan_usage(month: str) -> Usage:
    """The business plan's check: 50M vectors and 2,000 GB stored all month, 1M calls."""
    s = month_seconds(month)
    return Usage(calls=1_000_000, batch_vectors=0, vector_seconds=50e6 * s, byte_seconds=2_000 * GB_BYTES * s)


@pytest.mark.parametrize(
    ("month", "days"),
    [("2026-01", 31), ("2026-02", 28), ("2028-02", 29), ("2100-02", 28), ("2000-02", 29), ("2026-04", 30)],
)
def test_month_seconds(month, days):
    assert month_seconds(month) == days * 86_400


@pytest.mark.parametrize(
    "month",
    [
        "",
        "2026",
        "2026-1",
        "2026-13",
        "2026-00",
        "1999-12",
        "2101-01",
        "26-01",
        "2026/01",
        "2026-01-01",
        " 2026-01",
        "\uff12\uff10\uff12\uff16-01",  # full-width digits
        None,
        202601,
    ],
)
def test_bad_month_names_the_field(month):
    with pytest.raises(InvalidArgument) as e:
        month_seconds(month)
    assert e.value.field == "month"
    with pytest.raises(InvalidArgument):
        invoice("t1", PAID, month, Usage())


def test_business_plan_example_bills_50300_exactly():
    inv = invoice("acme", PAID, MONTH, business_plan_usage(MONTH), customer="cus_123")
    assert inv.total == Decimal("50300.00")
    by_unit = {line.unit: line for line in inv.lines}
    assert by_unit["vector-month"].amount == Decimal("50000.00")
    assert by_unit["vector-month"].quantity == 50_000_000
    assert by_unit["call"].amount == Decimal("100.00")
    assert by_unit["GB-month"].amount == Decimal("200.00")
    assert by_unit["GB-month"].quantity == 2_000
    assert by_unit["1,000 vectors"].amount == Decimal("0.00")
    assert [line.unit for line in inv.lines] == ["call", "1,000 vectors", "vector-month", "GB-month"]
    assert all(line.allowance == 0 and line.billable == line.quantity for line in inv.lines)
    assert sum(line.amount for line in inv.lines) == inv.total


@pytest.mark.parametrize("month", ["2026-02", "2028-02", "2026-04"])
def test_business_plan_example_any_month_length(month):
    assert invoice("acme", PAID, month, business_plan_usage(month)).total == Decimal("50300.00")


def test_batch_vectors_are_billed_per_thousand():
    inv = invoice("t", PAID, MONTH, Usage(batch_vectors=2_500_000))
    line = inv.lines[1]
    assert line.quantity == 2_500 and line.amount == Decimal("25.00")
    assert inv.total == Decimal("25.00")


def test_stored_vectors_part_of_a_month():
    # 3,000 vectors for 10 days of a 31-day month: 3000 x 10/31 vector-months at $0.001
    inv = invoice("t", PAID, MONTH, Usage(vector_seconds=3_000 * 10 * 86_400))
    assert inv.lines[2].amount == Decimal("0.97")  # 0.9677... rounded half-up


def test_amounts_round_half_up_to_the_cent():
    # 5 calls x $0.0001 = $0.0005 -> $0.00; 50 calls = $0.005 -> $0.01 (half-up, not half-even)
    assert invoice("t", PAID, MONTH, Usage(calls=5)).total == Decimal("0.00")
    assert invoice("t", PAID, MONTH, Usage(calls=50)).total == Decimal("0.01")
    assert invoice("t", PAID, MONTH, Usage(calls=250)).total == Decimal("0.03")


def test_free_plan_allowances_and_nothing_billed():
    s = month_seconds("2026-02")
    usage = Usage(
        calls=5_000, batch_vectors=10_000, vector_seconds=2_000 * s, byte_seconds=0.5 * GB_BYTES * s
    )
    inv = invoice("t", FREE, "2026-02", usage)
    calls, batch, vectors, storage = inv.lines
    assert calls.allowance == 100 * 28 and calls.billable == 5_000 - 2_800
    assert batch.allowance == 0
    assert vectors.allowance == 1_000 and vectors.billable == 1_000
    assert storage.allowance == 1 and storage.quantity == Decimal("0.5") and storage.billable == 0
    assert inv.total == Decimal("0.00")
    assert all(line.amount == 0 for line in inv.lines)


def test_to_json():
    doc = invoice("acme", PAID, MONTH, business_plan_usage(MONTH), customer="cus_123").to_json()
    assert doc["total"] == "50300.00"
    assert doc["tenant"] == "acme" and doc["customer"] == "cus_123" and doc["plan"] == "paid"
    assert doc["month"] == MONTH and doc["currency"] == "usd"
    assert [line["amount"] for line in doc["lines"]] == ["100.00", "0.00", "50000.00", "200.00"]
    vectors = doc["lines"][2]
    assert vectors["quantity"] == 50_000_000 and isinstance(vectors["quantity"], int)
    assert vectors["unit_price"] == "0.001"
    assert vectors["billable"] == 50_000_000 and vectors["allowance"] == 0


def test_to_json_fractional_quantities_are_numbers():
    doc = invoice("t", PAID, MONTH, Usage(vector_seconds=86_400)).to_json()
    q = doc["lines"][2]["quantity"]
    assert isinstance(q, float) and q == pytest.approx(1 / 31, abs=1e-6)


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)

    def handle_data(self, data):
        self.text.append(data)


def test_to_html_is_escaped_and_self_contained():
    tenant = '<script>alert("x")</script>&'
    page = invoice(tenant, PAID, MONTH, business_plan_usage(MONTH), customer="c'<b>").to_html()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page
    parser = _Collect()
    parser.feed(page)
    text = "".join(parser.text)
    assert tenant in text and "c'<b>" in text  # unescaped by the parser: nothing was lost
    assert "50,300.00" in text and "50,000.00" in text and "200.00" in text
    assert parser.tags.isdisjoint({"script", "link", "img", "iframe"})
    assert "http" not in page and "src=" not in page
    assert {"table", "thead", "tbody", "tfoot", "tr", "td"} <= parser.tags


def test_usage_add_and_refusals():
    a = Usage(calls=1, batch_vectors=2, vector_seconds=3.0, byte_seconds=4.0)
    b = Usage(calls=10, batch_vectors=20, vector_seconds=30.0, byte_seconds=40.0)
    assert a + b == Usage(11, 22, 33.0, 44.0)
    assert sum([a, b], Usage()) == a + b
    with pytest.raises(InvalidArgument) as e:
        Usage(calls=-1)
    assert e.value.field == "usage.calls"
    with pytest.raises(InvalidArgument):
        Usage(byte_seconds=float("nan"))
    with pytest.raises(InvalidArgument) as e:
        Usage(batch_vectors=1.5)
    assert e.value.field == "usage.batch_vectors"
    with pytest.raises(InvalidArgument):
        Usage(vector_seconds="1")


def test_hour_charge_of_the_example_sums_to_the_invoice():
    """The example spread evenly over the month's hours: each hour rounds once (half-even),
    so the sum is the invoice's total within half a micro-dollar per hour."""
    s = month_seconds(MONTH)
    hours = s // HOUR_S
    calls_each, calls_extra = divmod(1_000_000, hours)
    total = 0
    for h in range(hours):
        usage = Usage(
            calls=calls_each + (h < calls_extra),
            vector_seconds=50e6 * HOUR_S,
            byte_seconds=2_000 * GB_BYTES * HOUR_S,
        )
        total += hour_charge_microusd(PAID, usage, MONTH)
    assert abs(total - 50_300_000_000) <= hours // 2


def test_hour_charge_units():
    assert hour_charge_microusd(PAID, Usage(calls=1), MONTH) == 100
    assert hour_charge_microusd(PAID, Usage(batch_vectors=1_000), MONTH) == 10_000
    assert hour_charge_microusd(PAID, Usage(batch_vectors=1), MONTH) == 10
    s = month_seconds(MONTH)
    assert hour_charge_microusd(PAID, Usage(vector_seconds=s), MONTH) == 1_000
    assert hour_charge_microusd(PAID, Usage(byte_seconds=GB_BYTES * s), MONTH) == 100_000
    # a GB-month costs 100,000 micro-dollars, so 5,000 byte-months cost exactly half a unit:
    # halves round to even
    assert hour_charge_microusd(PAID, Usage(byte_seconds=5_000 * s), MONTH) == 0
    assert hour_charge_microusd(PAID, Usage(byte_seconds=15_000 * s), MONTH) == 2
    assert hour_charge_microusd(PAID, Usage(byte_seconds=25_000 * s), MONTH) == 2
    assert hour_charge_microusd(FREE, Usage(calls=100, vector_seconds=s), MONTH) == 0
    assert hour_charge_microusd(PAID, Usage(), MONTH) == 0
