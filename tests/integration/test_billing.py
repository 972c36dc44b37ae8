"""Plans, rate limits, quotas, metering, invoices, alerts and the audit log (issue 14), on a
real cluster with auth on (etcd, a coordinator, nodes, two routers), reached the way a user
would: the admin key of `quartz up` creates tenants and keys, and those keys make the calls."""

from __future__ import annotations

import http.server as http_server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import grpc
import numpy as np
import orjson
import pytest

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import QuartzError
from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc
from tests.integration.test_stripe_meter import fake_stripe  # noqa: F401 (a fixture)

DIM = 8
WAIT_S_MAX = 60.0  # a bound on waiting for something asynchronous (shipping, sampling), not a speed claim


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    saved = {k: os.environ.pop(k, None) for k in ("QUARTZ_API_KEY", "QUARTZ_DATA_DIR")}
    c = LocalCluster(
        tmp_path_factory.mktemp("billing"),
        nodes=2,
        routers=2,
        coordinator_args=["--usage-sample", "1"],
    )
    c.start()
    yield c
    c.kill()
    for k, v in saved.items():
        if v is not None:
            os.environ[k] = v


@pytest.fixture(scope="module")
def admin(cluster):
    c = cluster.client(timeout=30)
    yield c
    c.close()


def tenant_key(admin, tenant: str, plan: str = "paid", role: str = "tenant-admin", **kwargs) -> str:
    admin.create_tenant(tenant, plan=plan, **kwargs)
    key, _ = admin.create_key(tenant=tenant, role=role)
    return key


def wait_for(what: str, check, wait_s: float = WAIT_S_MAX):
    deadline = time.monotonic() + wait_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {wait_s} s")
        time.sleep(0.2)


def stub(address: str):
    return quartz_pb2_grpc.QuartzStub(grpc.insecure_channel(address))


def bearer(key: str):
    return (("authorization", f"Bearer {key}"),)


def quartz(cluster, *args: str, key: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "QUARTZ_DATA_DIR": str(cluster.data_dir)}
    if key:
        env["QUARTZ_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "quartz_cluster", *args], capture_output=True, text=True, env=env, timeout=120
    )


def http(cluster, method: str, path: str, key: str, body=None, headers=None, patient=False):
    """(status, headers, decoded body); patient: a 429 is waited out (Retry-After) and retried,
    as a well-behaved HTTP client does."""
    while True:
        status, got, decoded = _http(cluster, method, path, key, body, headers)
        if not (patient and status == 429):
            return status, got, decoded
        time.sleep(float(got["retry-after"]))


def _http(cluster, method: str, path: str, key: str, body=None, headers=None) -> tuple[int, dict, object]:
    data = json.dumps(body).encode() if body is not None else None
    h = {"content-type": "application/json", "authorization": f"Bearer {key}", **(headers or {})}
    req = urllib.request.Request(f"http://{cluster.http_address}{path}", data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            ctype = resp.headers.get("content-type", "")
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return resp.status, headers, orjson.loads(raw) if "json" in ctype else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, orjson.loads(exc.read())


# ------------------------------------------------------------------ rate limits


def test_rate_limit_holds_across_two_routers_and_spares_other_tenants(cluster, admin):
    """16 clients hammer one key through two routers: the calls accepted stay within the key's
    limit (burst + rate x time) and reach at least 90 % of it; another tenant is never refused."""
    rate_per_s, burst = 40.0, 40
    admin.create_tenant("hammered", plan="paid")
    key, _ = admin.create_key(
        tenant="hammered", role="read-write", rate_limits=[f"read={rate_per_s:g}/s:burst={burst}"]
    )
    other = tenant_key(admin, "bystander")
    QuartzClient(cluster.router_address, api_key=other).create_collection(
        "c", dim=DIM, shards=1, replication_factor=1
    )
    QuartzClient(cluster.router_address, api_key=key).list_collections()  # the key exists on both routers
    accepted, refused, bystander_errors = [0] * 16, [0] * 16, []
    trailers: list = []
    stop = threading.Event()

    def hammer(i: int) -> None:
        s = stub(cluster.routers[i % 2].address)
        while not stop.is_set():
            try:
                s.ListCollections(quartz_pb2.ListCollectionsRequest(), metadata=bearer(key), timeout=10)
                accepted[i] += 1
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                refused[i] += 1
                if not trailers:
                    trailers.append((exc.details(), dict(exc.trailing_metadata())))

    def bystander() -> None:
        c = QuartzClient(cluster.routers[1].address, api_key=other, timeout=10)
        while not stop.is_set():
            try:
                c.count("c")
            except QuartzError as exc:
                bystander_errors.append(exc)
            time.sleep(0.05)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(16)]
    threads.append(threading.Thread(target=bystander))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(5.0)
    stop.set()
    for t in threads:
        t.join()
    elapsed_s = time.monotonic() - t0
    total = sum(accepted)
    limit = burst + rate_per_s * elapsed_s
    print(f"accepted {total} in {elapsed_s:.2f} s (limit {limit:.0f}), refused {sum(refused)}")
    assert sum(refused) > 0, "16 clients must outrun 40 calls/s"
    assert total <= limit * 1.10
    assert total >= 0.90 * rate_per_s * elapsed_s
    assert not bystander_errors, bystander_errors[:3]
    details, meta = trailers[0]
    assert "rate limit" in details and "read" in details
    assert int(meta["retry-after-ms"]) > 0


def test_http_429_carries_retry_after_and_ratelimit_headers(cluster, admin):
    admin.create_tenant("http429", plan="paid")
    key, _ = admin.create_key(tenant="http429", role="read-write", rate_limits=["read=1/min:burst=2"])
    codes = [http(cluster, "GET", "/v1/collections", key)[0] for _ in range(3)]
    assert codes[:2] == [200, 200] and codes[2] == 429, codes
    status, headers, body = http(cluster, "GET", "/v1/collections", key)
    assert status == 429 and body["code"] == "RESOURCE_EXHAUSTED"
    assert int(headers["retry-after"]) >= 1
    assert headers["ratelimit-policy"].startswith('"read";q=2;w=')
    assert headers["ratelimit"].startswith('"read";r=0;t=')


def test_sdk_waits_out_a_rate_limit_within_its_deadline(cluster, admin):
    admin.create_tenant("patient", plan="paid")
    key, _ = admin.create_key(tenant="patient", role="read-write", rate_limits=["read=10/s:burst=1"])
    c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    for _ in range(8):  # 8 calls at 10/s with a burst of 1: most are refused once, then waited out
        assert c.list_collections() == []
    quick = QuartzClient(cluster.router_address, api_key=key, timeout=0.05)
    with pytest.raises(QuartzError) as err:
        for _ in range(5):  # no time to wait: the refusal reaches the caller
            quick.list_collections()
    assert err.value.code in ("RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


# ------------------------------------------------------------------ quotas


def test_free_plan_stored_vectors_quota_refuses_whole_batch(cluster, admin):
    key = tenant_key(admin, "freebie", plan="free")
    c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    c.create_collection("docs", dim=DIM, shards=2, replication_factor=1)
    rng = np.random.default_rng(3)
    c.upsert("docs", ids=[f"p{i}" for i in range(900)], vectors=rng.random((900, DIM), dtype="f4"))
    with pytest.raises(QuartzError) as err:
        c.upsert("docs", ids=[f"q{i}" for i in range(101)], vectors=rng.random((101, DIM), dtype="f4"))
    assert err.value.code == "RESOURCE_EXHAUSTED"
    assert "stored_vectors" in str(err.value) and "900 of 1000" in str(err.value)
    assert c.count("docs") == 900  # nothing of the refused batch was written
    # overwriting stored points adds nothing: allowed at the quota
    c.upsert("docs", ids=[f"p{i}" for i in range(100)], vectors=rng.random((100, DIM), dtype="f4"))
    status, _, body = http(
        cluster,
        "PUT",
        "/v1/collections/docs/points",
        key,
        {"points": [{"id": f"h{i}", "vector": [0.5] * DIM} for i in range(101)]},
        patient=True,
    )
    assert status == 403 and "stored_vectors" in body["detail"], body


def test_free_plan_calls_per_day_quota(cluster, admin):
    key = tenant_key(admin, "daily", plan="free", role="read-write")
    s = stub(cluster.routers[1].address)
    ok = 0
    while True:
        try:
            s.ListCollections(quartz_pb2.ListCollectionsRequest(), metadata=bearer(key), timeout=10)
            ok += 1
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            if "rate limit" in exc.details():  # the free plan's 20/s: wait as told
                time.sleep(int(dict(exc.trailing_metadata())["retry-after-ms"]) / 1000)
                continue
            assert "calls_per_day" in exc.details() and "100 of 100" in exc.details(), exc.details()
            break
    assert ok == 100
    status, _, body = http(cluster, "GET", "/v1/collections", key, patient=True)
    assert status == 403 and "calls_per_day" in body["detail"]


# ------------------------------------------------------------------ metering


def test_metered_calls_equal_acknowledged_calls_across_a_router_sigkill(cluster, admin):
    """Clients keep calling through router r1 while it is SIGKILLed and restarted: every
    acknowledged call is metered exactly once (the journal survives the kill; retries carry
    the same request id)."""
    key = tenant_key(admin, "metered")
    setup = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    setup.create_collection("m", dim=DIM, shards=2, replication_factor=2)
    acked = {"upsert": 0, "search": 0, "count": 0}  # calls the router answered OK, as the client saw
    written = [0]
    lock = threading.Lock()
    stop = threading.Event()
    errors: list = []
    verbs = {"Upsert": "upsert", "Search": "search", "Count": "count"}

    def client(i: int) -> None:
        c = QuartzClient(cluster.routers[0].address, api_key=key, timeout=60)
        call = c._call

        def counted(method, request, timeout=None):  # one acknowledged call per OK reply
            reply = call(method, request, timeout)
            with lock:
                acked[verbs[method]] += 1
                if method == "Upsert":
                    written[0] += len(request.points.ids) - len(reply.errors)
            return reply

        c._call = counted
        rng = np.random.default_rng(i)
        n = 0
        while not stop.is_set():
            try:
                if n % 3 == 0:
                    c.upsert(
                        "m", ids=[f"{i}-{n}-{j}" for j in range(5)], vectors=rng.random((5, DIM), dtype="f4")
                    )
                elif n % 3 == 1:
                    c.search("m", rng.random(DIM, dtype="f4"), k=3)
                else:
                    c.count("m")
            except QuartzError as exc:
                errors.append(exc)
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    router = cluster.routers[0]
    router.kill()  # SIGKILL, mid-load
    time.sleep(1.0)
    router.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    total = sum(acked.values())
    expected = {"create_collection": 1, **acked}

    def metered():
        u = setup.usage()
        return u if u["calls"] >= total + 1 else None

    u = wait_for("every acknowledged call shipped", metered)
    time.sleep(2.0)  # anything extra (a double count) would have been shipped by now too
    u = setup.usage()
    print(f"acknowledged {expected}, metered {u['calls_by_operation']}")
    assert u["calls_by_operation"] == expected
    assert u["vectors_written"] == written[0]


def test_usage_invoice_and_history_through_cli_and_http(cluster, admin):
    key = tenant_key(admin, "invoiced")
    c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    c.create_collection("docs", dim=DIM, shards=1, replication_factor=1)
    c.upsert("docs", ids=[str(i) for i in range(50)], vectors=np.ones((50, DIM), dtype="f4"))
    for _ in range(3):
        c.search("docs", np.ones(DIM, dtype="f4"), k=5, filter={"must": [{"key": "a", "match": 1}]})
    wait_for("storage sampled twice", lambda: c.usage()["vector_months"] > 0)
    wait_for("calls shipped", lambda: c.usage()["calls"] >= 5)
    out = quartz(cluster, "usage", "--tenant", "invoiced", "--json")
    assert out.returncode == 0, out.stderr
    u = json.loads(out.stdout)
    assert u["tenant"] == "invoiced" and u["calls_by_operation"]["search"] == 3
    assert u["vectors_written"] == 50 and u["stored_vectors"] == 50 and u["days"]
    month = u["month"]
    html_path = cluster.data_dir / "invoice.html"
    out = quartz(
        cluster, "invoice", "--tenant", "invoiced", "--month", month, "--json", "--html", str(html_path)
    )
    assert out.returncode == 0, out.stderr
    bill = json.loads(out.stdout)
    lines = {line["description"]: line for line in bill["lines"]}
    assert lines["API calls"]["quantity"] == u["calls"]
    assert "<table" in html_path.read_text() and "invoiced" in html_path.read_text()
    status, _, body = http(cluster, "GET", f"/v1/invoices/{month}", key)
    assert status == 200 and body["tenant"] == "invoiced" and body["total"] == bill["total"]
    status, _, body = http(cluster, "GET", "/v1/usage", key)
    assert status == 200 and body["calls_by_operation"]["search"] == 3
    status, _, body = http(cluster, "GET", "/v1/queries", key)
    assert status == 200
    q = body["queries"][0]
    assert q["collection"] == "docs" and q["k"] == 5 and q["filter"] is True and q["status"] == "OK"
    assert set(q) == {"time", "key", "collection", "k", "queries", "filter", "latency_ms", "status"}
    status, _, body = http(cluster, "GET", "/v1/billing/history", key)
    assert status == 200 and body["invoices"][0]["month"] == month
    # another tenant's usage: refused to a tenant key, fine for the admin key
    status, _, _ = http(cluster, "GET", "/v1/usage?tenant=metered", key)
    assert status == 403
    assert admin.usage("invoiced")["tenant"] == "invoiced"


# ------------------------------------------------------------------ usage alerts


class Receiver(http_server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.received.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_usage_alerts_at_80_and_100_percent_once_each(cluster, admin):
    from quartz_cluster.billing import webhooks

    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        key = tenant_key(admin, "alerted", plan="free", webhook_url=url, webhook_secret="s3cret")
        c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
        c.create_collection("docs", dim=DIM, shards=1, replication_factor=1)
        c.upsert("docs", ids=[f"a{i}" for i in range(800)], vectors=np.ones((800, DIM), dtype="f4"))

        def alerts():
            return [orjson.loads(b) for _, b in Receiver.received if orjson.loads(b)["tenant"] == "alerted"]

        wait_for("the 80 % alert", lambda: any(a["threshold_percent"] == 80 for a in alerts()))
        c.upsert("docs", ids=[f"b{i}" for i in range(200)], vectors=np.ones((200, DIM), dtype="f4"))
        wait_for("the 100 % alert", lambda: any(a["threshold_percent"] == 100 for a in alerts()))
        time.sleep(3.0)  # three more sampling passes: nothing is sent twice
        got = [(a["quota"], a["threshold_percent"]) for a in alerts()]
        assert sorted(got) == [("stored_vectors", 80), ("stored_vectors", 100)], got
        for headers, body in Receiver.received:
            assert webhooks.verify(b"s3cret", body, headers["Quartz-Signature"], time.time())
            assert not webhooks.verify(b"other", body, headers["Quartz-Signature"], time.time())
            assert headers["Quartz-Webhook-Id"] == orjson.loads(body)["id"]
    finally:
        server.shutdown()


# ------------------------------------------------------------------ audit log


def test_audit_log_records_writes_key_ops_and_auth_failures(cluster, admin):
    key = tenant_key(admin, "audited")
    c = QuartzClient(cluster.routers[1].address, api_key=key, timeout=30)
    c.create_collection("docs", dim=DIM, shards=1, replication_factor=1)
    c.upsert("docs", ids=["a", "b"], vectors=np.ones((2, DIM), dtype="f4"))
    c.delete("docs", ["a"])
    bad = QuartzClient(cluster.router_address, api_key="qz_0123456789ab_" + "0" * 40, timeout=5)
    with pytest.raises(QuartzError):
        bad.list_collections()
    wait_for("shipped", lambda: len(admin.audit(tenant="audited", limit=100)) >= 5)
    events = [r["event"] for r in admin.audit(tenant="audited", limit=100)]
    verbs = [e["verb"] for e in events]
    for verb in ("create_tenant", "create_key", "create_collection", "upsert", "delete"):
        assert verb in verbs, verbs
    up = next(e for e in events if e["verb"] == "upsert")
    assert up["user"]["username"] == c.whoami().id and up["user"]["extra"]["tenant"] == ["audited"]
    assert up["objectRef"] == {"resource": "points", "namespace": "audited", "name": "docs"}
    assert up["responseStatus"]["code"] == 200 and up["sourceIPs"] == ["127.0.0.1"]
    assert up["annotations"]["quartz/points"] == "2"
    assert "vector" not in json.dumps(up).replace("quartz/points", "")
    failures = [r["event"] for r in admin.audit(verb="authenticate", limit=100)]
    assert any(
        e["responseStatus"]["code"] == 401 and e["user"]["username"] == "0123456789ab" for e in failures
    )
    assert all("0" * 40 not in json.dumps(e) for e in failures)  # never the secret
    status, _, body = http(cluster, "GET", "/v1/admin/audit?tenant=audited&limit=3", cluster.admin_key)
    assert status == 200 and len(body["records"]) == 3
    status, _, _ = http(cluster, "GET", "/v1/admin/audit", key)  # a tenant admin reads its own only
    assert status == 200
    ro, _ = admin.create_key(tenant="audited", role="read-only")
    status, _, _ = http(cluster, "GET", "/v1/admin/audit", ro)
    assert status == 403


def test_audit_verify_names_an_edited_and_a_deleted_record(cluster, admin):
    import asyncio

    from quartz_cluster.metering import keys
    from tests.integration.conftest import etcd_store

    key = tenant_key(admin, "tamper")
    c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    c.create_collection("docs", dim=DIM, shards=1, replication_factor=1)
    for i in range(12):
        c.upsert("docs", ids=[str(i)], vectors=np.ones((1, DIM), dtype="f4"))
    out = quartz(cluster, "audit", "verify")
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
    records = admin.audit(tenant="tamper", verb="upsert", limit=12)
    assert len(records) == 12
    edited, deleted = records[-3], records[-8]

    async def tamper():
        store = etcd_store(cluster)
        k = keys.audit_record_key(edited["chain"], edited["seq"])
        kv = await store.get(k)
        rec = orjson.loads(kv.value)
        rec["event"]["verb"] = "nothing_to_see"
        await store.put(k, orjson.dumps(rec))
        await store.delete(keys.audit_record_key(deleted["chain"], deleted["seq"]))
        await store.close()

    async def from_the_cli():  # an etcd-level command (quartz drain) records its own chain
        from quartz_cluster.audit.event import make_event
        from quartz_cluster.audit.store import append_one

        store = etcd_store(cluster)
        await append_one(store, make_event(verb="drain", code=200, resource="nodes", name="n9"), "cli")
        await store.close()

    asyncio.run(from_the_cli())
    assert any(r["event"]["verb"] == "drain" for r in admin.audit(verb="drain"))
    out = quartz(cluster, "audit", "verify")
    assert out.returncode == 0 and "intact" in out.stdout, out.stdout + out.stderr
    asyncio.run(tamper())
    out = quartz(cluster, "audit", "verify")
    assert out.returncode == 1 and "TAMPERED" in out.stdout
    assert f"{edited['chain']}:{edited['seq']:012d}: hash mismatch" in out.stderr, out.stderr
    assert f"{deleted['chain']}:{deleted['seq']:012d}: missing" in out.stderr, out.stderr
    status, _, body = http(cluster, "GET", "/v1/admin/audit/verify", cluster.admin_key)
    assert status == 200 and body["ok"] is False and len(body["problems"]) >= 2


# ------------------------------------------------------------------ Stripe


def test_usage_leaves_as_an_hourly_stripe_meter_event_and_a_failed_send_is_retried(
    cluster,
    admin,
    fake_stripe,  # noqa: F811 (the fixture imported above)
):
    """The coordinator's billing pass, run for the hour after this one (so this hour is
    complete), sends the paid tenant's hour once through the real stripe library; a failed
    send moves nothing and goes again on the next pass, with the same identifier."""
    import asyncio

    from quartz_cluster.billing.stripe_meter import StripeMeter
    from quartz_cluster.coordinator.billing import Billing, BillingSettings
    from quartz_cluster.coordinator.reconcile import ClusterView
    from quartz_cluster.meta import schema
    from quartz_cluster.metering import keys
    from tests.integration.conftest import etcd_store

    key = tenant_key(admin, "striped", stripe_customer="cus_striped")
    c = QuartzClient(cluster.router_address, api_key=key, timeout=30)
    c.create_collection("docs", dim=DIM, shards=1, replication_factor=1)
    c.upsert("docs", ids=[str(i) for i in range(20)], vectors=np.ones((20, DIM), dtype="f4"))
    wait_for("calls shipped", lambda: c.usage()["calls"] >= 2)
    fake_stripe.answers = ["500"]
    later = time.time() + 3600

    async def one_pass() -> bytes | None:
        store = etcd_store(cluster)
        rev, kvs = await store.list(schema.ROOT)
        leader = await store.get(schema.LEADER)
        billing = Billing(
            store, None, BillingSettings(stripe_api_key="sk_test_q"), lambda: leader.create_revision
        )
        billing.stripe = StripeMeter("sk_test_q", fake_stripe.base)
        await billing.send_stripe(ClusterView.from_kvs(rev, kvs), now=later)
        cursor = await store.get(keys.stripe_key("striped"))
        await store.close()
        return cursor.value if cursor else None

    assert asyncio.run(one_pass()) is None  # refused: nothing recorded as sent
    mine = [r for r in fake_stripe.requests if r.form.get("payload[stripe_customer_id]") == "cus_striped"]
    assert [r.answer for r in mine] == ["500"]
    cursor = asyncio.run(one_pass())
    mine = [r for r in fake_stripe.requests if r.form.get("payload[stripe_customer_id]") == "cus_striped"]
    assert [r.answer for r in mine] == ["500", "ok"]
    hour = keys.hour_of(time.time())
    assert orjson.loads(cursor)["hour"] == hour
    sent = mine[-1].form
    assert sent["identifier"] == mine[0].form["identifier"] == f"quartz-striped-{hour}"
    assert int(sent["payload[value]"]) >= 2 * 100  # at least two calls at $0.0001 (100 micro-dollars)
    assert mine[-1].headers["Authorization"] == "Bearer sk_test_q"
    asyncio.run(one_pass())  # nothing new: nothing sent
    assert (
        len([r for r in fake_stripe.requests if r.form.get("payload[stripe_customer_id]") == "cus_striped"])
        == 2
    )
