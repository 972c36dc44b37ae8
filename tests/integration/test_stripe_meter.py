"""StripeMeter through the real `stripe` library against a local HTTP server standing in for
Stripe's `POST /v1/billing/meter_events`."""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
import stripe

from quartz_cluster.billing.stripe_meter import Pending, SendFailed, StripeMeter, hour_start_s
from quartz_cluster.errors import InvalidArgument

API_KEY = "sk_test_quartz"
HOUR = "2026-03-04T05"
HOUR_START_S = 1772600400  # 2026-03-04T05:00:00Z


@dataclass
class Recorded:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    answer: str  # "ok", "500", "400", "drop"


@dataclass
class FakeStripe:
    """Records every request; answers each with the next planned answer, then like Stripe."""

    requests: list[Recorded] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # planned: "ok", "500", "400" or "drop"
    lock: threading.Lock = field(default_factory=threading.Lock)
    base: str = ""

    def sent(self) -> list[Recorded]:
        return [r for r in self.requests if r.answer == "ok"]


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
            with fake.lock:
                answer = fake.answers.pop(0) if fake.answers else "ok"
                fake.requests.append(Recorded("POST", self.path, form, dict(self.headers.items()), answer))
            if answer == "drop":  # no status line at all: the client sees the connection close
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if answer == "500":
                self._reply(500, {"error": {"type": "api_error", "message": "stand-in failure"}})
            elif answer == "400":
                err = {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "message": "No such customer",
                }
                self._reply(400, {"error": err})
            elif self.path != "/v1/billing/meter_events":
                self._reply(404, {"error": {"type": "invalid_request_error", "message": "unknown path"}})
            else:
                payload = {k[len("payload[") : -1]: v for k, v in form.items() if k.startswith("payload[")}
                self._reply(
                    200,
                    {
                        "object": "billing.meter_event",
                        "created": int(form.get("timestamp", 0)),
                        "event_name": form.get("event_name"),
                        "identifier": form.get("identifier"),
                        "livemode": False,
                        "payload": payload,
                        "timestamp": int(form.get("timestamp", 0)),
                    },
                )

        def _reply(self, status: int, doc: dict) -> None:
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_stripe():
    fake = FakeStripe()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def meter(fake_stripe):
    m = StripeMeter(API_KEY, api_base=fake_stripe.base, timeout_s=5.0)
    yield m
    m.close()


def pending(n: int, tenant: str = "acme") -> list[Pending]:
    return [Pending(tenant, "cus_A1", f"2026-03-04T{h:02d}", 1_000 + h) for h in range(n)]


def test_send_creates_one_meter_event(fake_stripe, meter):
    meter.send("acme", "cus_A1", HOUR, 67_473_118)
    [r] = fake_stripe.requests
    assert r.method == "POST" and r.path == "/v1/billing/meter_events"
    assert r.form == {
        "event_name": "quartz_usage_microusd",
        "payload[stripe_customer_id]": "cus_A1",
        "payload[value]": "67473118",
        "identifier": "quartz-acme-2026-03-04T05",
        "timestamp": str(HOUR_START_S),
    }
    assert r.headers["Authorization"] == f"Bearer {API_KEY}"
    assert r.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert r.headers.get("Idempotency-Key")  # the library's own, one per call
    assert stripe.api_key is None  # per-instance client: no module global set


def test_send_pending_in_order(fake_stripe, meter):
    batch = pending(3)
    assert meter.send_pending(batch) == batch
    assert [r.form["identifier"] for r in fake_stripe.requests] == [
        "quartz-acme-2026-03-04T00",
        "quartz-acme-2026-03-04T01",
        "quartz-acme-2026-03-04T02",
    ]
    assert [r.form["payload[value]"] for r in fake_stripe.requests] == ["1000", "1001", "1002"]
    assert [int(r.form["timestamp"]) for r in fake_stripe.requests] == [hour_start_s(p.hour) for p in batch]


@pytest.mark.parametrize("failure", ["500", "drop"])
def test_failure_stops_the_pass_and_the_next_pass_resends(fake_stripe, meter, failure):
    batch = pending(4)
    fake_stripe.answers[:] = ["ok", failure]  # the second request fails, once
    assert meter.send_pending(batch) == batch[:1]  # nothing after the failure was tried
    assert [r.answer for r in fake_stripe.requests] == ["ok", failure]  # no retry by the library
    failed = fake_stripe.requests[1]

    assert meter.send_pending(batch[1:]) == batch[1:]
    assert [r.answer for r in fake_stripe.requests] == ["ok", failure, "ok", "ok", "ok"]
    resent = fake_stripe.requests[2]
    assert resent.form == failed.form
    assert resent.form["identifier"] == "quartz-acme-2026-03-04T01"
    assert [r.form["identifier"] for r in fake_stripe.sent()] == [
        StripeMeter.identifier(p.tenant, p.hour) for p in batch
    ]


@pytest.mark.parametrize(
    ("failure", "expected"),
    [("500", "HTTP 500"), ("400", "resource_missing"), ("drop", "APIConnectionError")],
)
def test_send_raises_send_failed_with_the_reason(fake_stripe, meter, failure, expected):
    fake_stripe.answers.append(failure)
    with pytest.raises(SendFailed) as e:
        meter.send("acme", "cus_A1", HOUR, 5)
    assert expected in e.value.reason
    assert "quartz-acme-2026-03-04T05" in e.value.reason
    assert len(fake_stripe.requests) == 1


def test_unreachable_stripe_is_send_failed():
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}"
        meter = StripeMeter(API_KEY, api_base=base, timeout_s=5.0)
        with pytest.raises(SendFailed, match="APIConnectionError"):
            meter.send("acme", "cus_A1", HOUR, 5)
        assert meter.send_pending(pending(2)) == []


def test_identifier_is_deterministic():
    assert StripeMeter.identifier("acme", HOUR) == "quartz-acme-2026-03-04T05"
    assert StripeMeter.identifier("acme", HOUR) == StripeMeter.identifier("acme", HOUR)
    assert StripeMeter.identifier("acme", HOUR) != StripeMeter.identifier("acme", "2026-03-04T06")
    assert StripeMeter.identifier("acme-2", HOUR) != StripeMeter.identifier("acme", HOUR)
    assert len(StripeMeter.identifier("t" * 64, HOUR)) <= 100


@pytest.mark.parametrize(
    "hour", ["2026-03-04", "2026-03-04T5", "2026-02-30T00", "2026-03-04T24", "2026-03-04 05", None]
)
def test_bad_hour(hour):
    with pytest.raises(InvalidArgument) as e:
        StripeMeter.identifier("acme", hour)
    assert e.value.field == "hour"


@pytest.mark.parametrize("tenant", ["", "a/b", "t" * 65, "acme\n", None])
def test_bad_tenant(tenant):
    with pytest.raises(InvalidArgument) as e:
        StripeMeter.identifier(tenant, HOUR)
    assert e.value.field == "tenant"


@pytest.mark.parametrize(
    ("customer", "value", "name"),
    [("", 1, "customer_id"), ("cus_A1", -1, "value"), ("cus_A1", 1.5, "value"), ("cus_A1", True, "value")],
)
def test_bad_send_arguments_are_refused_before_any_request(fake_stripe, meter, customer, value, name):
    with pytest.raises(InvalidArgument) as e:
        meter.send("acme", customer, HOUR, value)
    assert e.value.field == name
    assert fake_stripe.requests == []


def test_hour_start_s():
    assert hour_start_s(HOUR) == HOUR_START_S
    assert hour_start_s("1970-01-01T01") == 3600
