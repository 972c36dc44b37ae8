from __future__ import annotations

import asyncio
import calendar
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from quartz_cluster.billing.plans import FREE
from quartz_cluster.billing.webhooks import (
    alert_body,
    alert_id,
    deliver,
    period_of,
    sign,
    thresholds_crossed,
    verify,
)
from quartz_cluster.errors import InvalidArgument

SECRET = b"whsec_test_secret"
T = 1_767_225_600  # 2026-01-01T00:00:00Z
HANG_GUARD_S = 60  # a broken retry loop fails the test instead of hanging it (not a timing check)


# -- which thresholds -------------------------------------------------------------------------


def test_thresholds_crossed():
    limits = {"calls_per_day": 100, "stored_vectors": 1_000, "storage_bytes": 10**9}
    figures = {"calls_per_day": 80, "stored_vectors": 1_000, "storage_bytes": 799_999_999}
    assert thresholds_crossed(limits, figures) == [
        ("calls_per_day", 80),
        ("stored_vectors", 80),
        ("stored_vectors", 100),
    ]


def test_thresholds_edges():
    assert thresholds_crossed({"q": 100}, {"q": 79}) == []
    assert thresholds_crossed({"q": 100}, {"q": 79.99}) == []
    assert thresholds_crossed({"q": 100}, {"q": 80}) == [("q", 80)]
    assert thresholds_crossed({"q": 100}, {"q": 99}) == [("q", 80)]
    assert thresholds_crossed({"q": 100}, {"q": 100}) == [("q", 80), ("q", 100)]
    assert thresholds_crossed({"q": 100}, {"q": 250}) == [("q", 80), ("q", 100)]
    assert thresholds_crossed({"q": 100}, {}) == []  # no figure: nothing used
    assert thresholds_crossed({"q": 0}, {"q": 5}) == []  # no percentage of 0
    assert thresholds_crossed({"q": 10}, {"q": 5}, thresholds=(100, 50)) == [("q", 50)]
    assert thresholds_crossed({"q": 3}, {"q": 2.4}) == [("q", 80)]  # 2.4 is 80 % of 3


def test_thresholds_of_the_free_plan():
    assert thresholds_crossed(FREE.quotas(), {"calls_per_day": 100, "stored_vectors": 850}) == [
        ("calls_per_day", 80),
        ("calls_per_day", 100),
        ("stored_vectors", 80),
    ]


# -- periods and ids --------------------------------------------------------------------------


def test_period_of():
    now_s = calendar.timegm((2028, 2, 29, 23, 59, 59))
    assert period_of("calls_per_day", now_s) == "2028-02-29"
    assert period_of("calls_per_day", now_s + 1) == "2028-03-01"
    assert period_of("stored_vectors", now_s) == "2028-02"
    assert period_of("storage_bytes", now_s + 1) == "2028-03"
    with pytest.raises(InvalidArgument) as e:
        period_of("bananas", now_s)
    assert e.value.field == "quota"


def test_alert_id_is_deterministic_and_distinct():
    a = alert_id("acme", "calls_per_day", "2026-01-01", 80)
    assert a == alert_id("acme", "calls_per_day", "2026-01-01", 80)
    assert a.startswith("alert_") and len(a) == len("alert_") + 32
    others = {
        alert_id("acme", "calls_per_day", "2026-01-01", 100),
        alert_id("acme", "calls_per_day", "2026-01-02", 80),
        alert_id("acme", "stored_vectors", "2026-01-01", 80),
        alert_id("acme2", "calls_per_day", "2026-01-01", 80),
        alert_id("acme", "calls_per_day", "2026-01-018", 0),  # no ambiguity from joining
    }
    assert a not in others and len(others) == 5


def test_alert_body():
    doc = json.loads(alert_body("acme", "stored_vectors", "2026-01", 80, 1000, 812, T))
    assert doc == {
        "id": alert_id("acme", "stored_vectors", "2026-01", 80),
        "type": "usage.threshold_reached",
        "created": T,
        "tenant": "acme",
        "quota": "stored_vectors",
        "period": "2026-01",
        "threshold_percent": 80,
        "limit": 1000,
        "value": 812,
    }


# -- signatures -------------------------------------------------------------------------------


def test_sign_and_verify():
    body = b'{"id":"alert_1"}'
    header = sign(SECRET, body, T)
    assert header.startswith(f"t={T},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(SECRET, body, header, now_s=T)
    assert verify(SECRET, body, header, now_s=T + 300)
    assert verify(SECRET, body, header, now_s=T - 300)
    assert not verify(SECRET, body, header, now_s=T + 301)  # an old delivery replayed
    assert not verify(b"another secret", body, header, now_s=T)
    assert not verify(SECRET, body + b" ", header, now_s=T)
    assert not verify(SECRET, body, sign(SECRET, body, T + 1).replace(f"t={T + 1}", f"t={T}"), now_s=T)
    assert verify(SECRET, body, header, now_s=T + 1000, tolerance_s=1000)


def test_verify_accepts_any_of_several_v1():
    body = b"{}"
    good = sign(SECRET, body, T).split("v1=")[1]
    assert verify(SECRET, body, f"t={T},v1={'0' * 64},v1={good}", now_s=T)
    assert verify(SECRET, body, f"t={T}, v0=abc, v1={good}", now_s=T)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "t=1",
        f"v1={'0' * 64}",
        f"t=abc,v1={'0' * 64}",
        f"t=-{T},v1=x",
        f"t={T},t={T},v1=x",
        f"t={T};v1=x",
        "t=\u0661,v1=x",  # a non-ASCII digit
        f"t={T},v1=\u00e9",
        "t=" + "1" * 2000,
        None,
    ],
)
def test_verify_refuses_malformed_headers(header):
    assert verify(SECRET, b"{}", header, now_s=T) is False


# -- delivery ---------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A webhook receiver answering the planned statuses in order ("drop": close without an
    answer), then 200; it records every request."""

    plan: list[int | str] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def receiver():
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with rec.lock:
                rec.requests.append((dict(self.headers.items()), body))
                answer = rec.plan.pop(0) if rec.plan else 200
            if answer == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(int(answer))
            if int(answer) in (301, 302, 307, 308):
                self.send_header("Location", rec.url + "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)  # port 0: a free port
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/quartz"
    yield rec
    server.shutdown()
    server.server_close()
    thread.join()


def run_deliver(url: str, body: bytes, aid: str, **kwargs) -> bool:
    kwargs.setdefault("backoff_s", 0.001)
    return asyncio.run(asyncio.wait_for(deliver(url, SECRET, body, aid, **kwargs), HANG_GUARD_S))


def signature_t(header: str) -> int:
    return int(dict(part.split("=", 1) for part in header.split(","))["t"])


def test_delivered_after_two_503s(receiver):
    body = alert_body("acme", "calls_per_day", "2026-01-01", 80, 100, 80, T)
    aid = alert_id("acme", "calls_per_day", "2026-01-01", 80)
    receiver.plan[:] = [503, 503]
    assert run_deliver(receiver.url, body, aid) is True
    assert len(receiver.requests) == 3
    for headers, got in receiver.requests:
        assert got == body
        assert headers["Quartz-Webhook-Id"] == aid
        assert headers["Content-Type"] == "application/json"
        signature = headers["Quartz-Signature"]
        now_s = signature_t(signature)
        assert verify(SECRET, got, signature, now_s=now_s)
        assert not verify(b"not the secret", got, signature, now_s=now_s)
        assert not verify(SECRET, got.replace(b"acme", b"acmf"), signature, now_s=now_s)


@pytest.mark.parametrize("plan", [[429], [500, 502], ["drop"], ["drop", 503, "drop"]])
def test_retried_failures(receiver, plan):
    receiver.plan[:] = list(plan)
    assert run_deliver(receiver.url, b"{}", "alert_x") is True
    assert len(receiver.requests) == len(plan) + 1
    assert {h["Quartz-Webhook-Id"] for h, _ in receiver.requests} == {"alert_x"}


@pytest.mark.parametrize("status", [400, 401, 404, 410, 302, 307])
def test_gives_up_at_once_on_other_statuses(receiver, status):
    receiver.plan[:] = [status]
    assert run_deliver(receiver.url, b"{}", "alert_x") is False
    assert len(receiver.requests) == 1  # a redirect is not followed either


def test_gives_up_after_the_attempts(receiver):
    receiver.plan[:] = [500] * 10
    assert run_deliver(receiver.url, b"{}", "alert_x", attempts=3) is False
    assert len(receiver.requests) == 3


def test_nobody_listening():
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
        assert run_deliver(url, b"{}", "alert_x", attempts=2) is False


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "localhost:80/x", "", None])
def test_only_http_urls(url):
    with pytest.raises(InvalidArgument) as e:
        run_deliver(url, b"{}", "alert_x")
    assert e.value.field == "url"


@pytest.mark.parametrize("attempts", [0, -1, 21, True, 2.0])
def test_attempts_bounded(attempts):
    with pytest.raises(InvalidArgument) as e:
        run_deliver("http://127.0.0.1:1/", b"{}", "alert_x", attempts=attempts)
    assert e.value.field == "attempts"
