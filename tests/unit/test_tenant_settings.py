"""A tenant's billing settings and rate-limit overrides as the admin RPCs check them (no etcd)."""

from __future__ import annotations

import pytest

from quartz_cluster.auth import admin
from quartz_cluster.errors import InvalidArgument


def test_rate_limits_are_normalised_one_per_class_and_sorted():
    assert admin.rate_limits(["write=5000/s:burst=10000", "read=60/min"]) == (
        "read=1/s:burst=60",
        "write=5000/s:burst=10000",
    )
    assert admin.rate_limits([]) == ()


@pytest.mark.parametrize(
    ("texts", "field"),
    [
        (["read=100/s", "read=5/s"], "rate_limits[1]"),  # one class twice
        (["query=100/s"], "rate_limits[0]"),  # no such class
        (["read=0/s"], "rate_limits[0]"),
        (["read=fast"], "rate_limits[0]"),
        ([f"read={i + 1}/s" for i in range(admin.RATE_LIMITS_MAX + 1)], "rate_limits"),
    ],
)
def test_bad_rate_limits_are_refused_naming_the_entry(texts, field):
    with pytest.raises(InvalidArgument) as err:
        admin.rate_limits(texts)
    assert str(err.value).startswith(f"{field}:")


def test_tenant_settings_check_each_field_and_leave_out_what_is_not_given():
    assert admin.tenant_settings() == {}
    assert admin.tenant_settings(plan="paid", webhook_url="https://x.example/h") == {
        "plan": "paid",
        "webhook_url": "https://x.example/h",
    }
    assert admin.tenant_settings(webhook_url="") == {"webhook_url": ""}  # clears it
    for kwargs, field in [
        ({"plan": "gold"}, "plan"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"webhook_url": "https://x.example/a b"}, "webhook_url"),
        ({"webhook_url": "https://" + "x" * admin.WEBHOOK_URL_CHARS_MAX}, "webhook_url"),
        ({"stripe_customer": "cus_\n1"}, "stripe_customer"),
        ({"webhook_secret": "s" * (admin.WEBHOOK_SECRET_CHARS_MAX + 1)}, "webhook_secret"),
    ]:
        with pytest.raises(InvalidArgument) as err:
            admin.tenant_settings(**kwargs)
        assert str(err.value).startswith(f"{field}:"), (kwargs, str(err.value))
