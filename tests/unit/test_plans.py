from __future__ import annotations

from decimal import Decimal

import pytest

from quartz_cluster.billing.plans import (
    FREE,
    GB_BYTES,
    OP_CLASSES,
    PAID,
    PLAN_NAMES,
    PLANS,
    QUOTAS,
    Rate,
    parse_rate,
    plan,
)
from quartz_cluster.errors import InvalidArgument


def test_two_plans_by_name():
    assert PLAN_NAMES == ("free", "paid")
    assert plan("free") is FREE and plan("paid") is PAID
    assert set(PLANS) == set(PLAN_NAMES)


@pytest.mark.parametrize("name", ["", "Free", "enterprise", None, 3])
def test_unknown_plan_names_the_field_and_the_choices(name):
    with pytest.raises(InvalidArgument) as e:
        plan(name)
    assert e.value.field == "plan"
    assert "free" in str(e.value) and "paid" in str(e.value)


def test_free_plan_quotas_and_no_prices():
    assert FREE.quotas() == {"calls_per_day": 100, "stored_vectors": 1_000, "storage_bytes": GB_BYTES}
    assert set(FREE.quotas()) == set(QUOTAS)
    assert GB_BYTES == 10**9
    prices = [
        FREE.price_call_usd,
        FREE.price_batch_1000_vectors_usd,
        FREE.price_vector_month_usd,
        FREE.price_gb_month_usd,
    ]
    assert all(p == 0 for p in prices)


def test_paid_plan_prices_and_no_quotas():
    assert PAID.quotas() == {}
    assert PAID.price_vector_month_usd == Decimal("0.001")
    assert PAID.price_call_usd == Decimal("0.0001")
    assert PAID.price_gb_month_usd == Decimal("0.10")
    assert PAID.price_batch_1000_vectors_usd == Decimal("0.01")
    # the business plan's check: 50M vectors, 1M calls, 2,000 GB for a month
    total = 50_000_000 * PAID.price_vector_month_usd + 1_000_000 * PAID.price_call_usd
    total += 2_000 * PAID.price_gb_month_usd
    assert total == Decimal("50300")


def test_default_rates():
    assert FREE.rates() == {"read": Rate(20, 40), "write": Rate(500, 1000), "manage": Rate(2, 10)}
    assert PAID.rates() == {
        "read": Rate(2000, 4000),
        "write": Rate(50_000, 100_000),
        "manage": Rate(20, 50),
    }
    assert tuple(PAID.rates()) == OP_CLASSES
    assert PAID.rate("write") == Rate(50_000, 100_000)
    with pytest.raises(InvalidArgument) as e:
        PAID.rate("delete")
    assert e.value.field == "op_class"


def test_plans_are_frozen():
    with pytest.raises(AttributeError):
        FREE.calls_per_day_max = 10**6  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("read=100/s", ("read", Rate(100, 100))),
        ("write=5000/s:burst=10000", ("write", Rate(5000, 10000))),
        ("read=60/min", ("read", Rate(1, 60))),
        ("manage=7200/h", ("manage", Rate(2, 7200))),
        ("manage=1/min", ("manage", Rate(1 / 60, 1))),
        ("read=0.5/s", ("read", Rate(0.5, 1))),
        ("read=2.5/sec:burst=10.5", ("read", Rate(2.5, 10.5))),
        ("  write=10/s  ", ("write", Rate(10, 10))),
    ],
)
def test_parse_rate(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "read",
        "read=",
        "read=100",
        "read=100/day",
        "read=100/S",
        "search=100/s",
        "read=-1/s",
        "read=0/s",
        "read=1e3/s",
        "read=100/s:burst=0",
        "read=100/s:burst=",
        "read=100/s:bust=5",
        "read=100/s burst=5",
        "read=100/s:burst=5:burst=6",
        "read=nan/s",
        "read=" + "9" * 200 + "/s",
        None,
    ],
)
def test_parse_rate_refuses(text):
    with pytest.raises(InvalidArgument) as e:
        parse_rate(text)
    assert e.value.field == "rate_limit"
    assert str(e.value).startswith("rate_limit: ")


def test_parse_rate_message_shows_the_form():
    with pytest.raises(InvalidArgument, match=r"CLASS=N/UNIT\[:burst=N\].*'read=fast'"):
        parse_rate("read=fast")


@pytest.mark.parametrize(
    "rate",
    [Rate(100, 200), Rate(1 / 60, 1), Rate(0.00001, 3), Rate(2.5, 10.25), Rate(1e9, 1e9)],
)
def test_to_text_round_trips(rate):
    text = rate.to_text()
    assert "e" not in text.split("burst")[0]
    for op in OP_CLASSES:
        assert parse_rate(f"{op}={text}") == (op, rate)


def test_to_text_form():
    assert Rate(100, 200).to_text() == "100/s:burst=200"
    assert Rate(0.5, 1).to_text() == "0.5/s:burst=1"


@pytest.mark.parametrize(
    ("per_s", "burst"), [(0, 1), (-1, 1), (float("inf"), 1), (1, 0.5), (1, float("nan"))]
)
def test_rate_refuses_nonsense(per_s, burst):
    with pytest.raises(InvalidArgument) as e:
        Rate(per_s, burst)
    assert e.value.field == "rate_limit"
