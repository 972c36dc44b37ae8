"""The admin dashboard's pure parts (quartz_cluster/gateway/dashboard): quantiles from cumulative
buckets as Prometheus' histogram_quantile computes them, the window over bucket snapshots, the
cluster table from a shard map and the nodes' answers, the bounded node calls, the admin-only
guard; and the gateway routes driven in process through ASGI (no network, no cluster)."""

from __future__ import annotations

import asyncio
import math
import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from quartz_cluster import errors
from quartz_cluster.auth.access import Principal
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.gateway.dashboard import STATIC_DIR, cluster, guard, latency
from quartz_cluster.gateway.dashboard.latency import LatencyWindow, Series, quantile
from quartz_cluster.meta.schema import CollectionRecord, InSync, NodeRecord, ShardRecord
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.router.frontdoor import FrontDoor

INF = math.inf

# ------------------------------------------------------------------ quantiles


def test_quantile_interpolates_within_the_bucket_holding_the_rank():
    bounds, counts = (0.1, 0.2, 0.4, INF), (10, 20, 40, 40)
    assert quantile(0.25, bounds, counts) == pytest.approx(0.1)  # rank 10: the top of bucket 0
    assert quantile(0.5, bounds, counts) == pytest.approx(0.2)  # rank 20: the top of bucket 1
    assert quantile(0.75, bounds, counts) == pytest.approx(0.3)  # rank 30: halfway into (0.2, 0.4]
    assert quantile(0.05, bounds, counts) == pytest.approx(0.02)  # bucket 0 starts at 0
    assert quantile(0.0, bounds, counts) == 0.0


def test_quantile_edge_cases_follow_prometheus():
    # a rank in the +Inf bucket: the highest finite bound
    assert quantile(0.99, (0.1, 0.2, INF), (1, 2, 100)) == 0.2
    assert quantile(0.5, (0.1, 0.2, INF), (0, 0, 0)) is None  # no observations: NaN in Prometheus
    assert quantile(-0.1, (0.1, INF), (1, 1)) == -INF
    assert quantile(1.5, (0.1, INF), (1, 1)) == INF
    assert quantile(0.5, (-1.0, 0.5, INF), (4, 4, 4)) == -1.0  # first bucket's bound <= 0: itself
    assert quantile(1.0, (0.1, 0.2, INF), (5, 10, 10)) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="last one"):
        quantile(0.5, (0.1, 0.2), (1, 2))
    with pytest.raises(ValueError):
        quantile(0.5, (INF,), (1,))


def _reference(q: float, bounds, counts) -> float | None:
    """histogram_quantile written out again, the Go code's way (sort.Search over all but +Inf)."""
    total = counts[-1]
    if total == 0:
        return None
    rank = q * total
    lo, hi = 0, len(bounds) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if counts[mid] >= rank:
            hi = mid
        else:
            lo = mid + 1
    b = lo
    if b == len(bounds) - 1:
        return bounds[-2]
    start, count = 0.0, counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (bounds[b] - start) * (rank / count) if count else start


@st.composite
def histograms(draw):
    n = draw(st.integers(1, 12))
    bounds = sorted(draw(st.sets(st.floats(0.0001, 100.0, allow_nan=False), min_size=n, max_size=n)))
    per_bucket = draw(st.lists(st.integers(0, 1000), min_size=n + 1, max_size=n + 1))
    counts, running = [], 0
    for c in per_bucket:
        running += c
        counts.append(float(running))
    return (*bounds, INF), tuple(counts)


@given(histograms(), st.floats(0.0, 1.0))
def test_quantile_agrees_with_the_reference_and_stays_within_the_buckets(hist, q):
    bounds, counts = hist
    got = quantile(q, bounds, counts)
    want = _reference(q, bounds, counts)
    if want is None:
        assert got is None
        return
    assert got == pytest.approx(want)
    assert 0.0 <= got <= bounds[-2]


@given(histograms(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_quantile_grows_with_q(hist, a, b):
    bounds, counts = hist
    if counts[-1] == 0:
        return
    lo, hi = sorted((a, b))
    assert quantile(lo, bounds, counts) <= quantile(hi, bounds, counts) + 1e-12


@given(st.floats(0.0, 1.0, exclude_min=True))
def test_observations_in_one_bucket_spread_linearly_across_it(q):
    assert quantile(q, (0.1, 0.2, 0.4, INF), (0, 0, 50, 50)) == pytest.approx(0.2 + 0.2 * q)


# ------------------------------------------------------------------ histograms -> operations


def registry_with_traffic():
    reg = CollectorRegistry()
    rpc = Histogram(
        latency.RPC_HISTOGRAM, "x", ["service", "method", "code"], buckets=(0.001, 0.01, 0.1), registry=reg
    )
    http = Histogram(
        latency.HTTP_HISTOGRAM, "x", ["route", "method", "code"], buckets=(0.001, 0.01, 0.1), registry=reg
    )
    for _ in range(90):
        rpc.labels("quartz.v1.Quartz", "Search", "OK").observe(0.005)
    for _ in range(10):
        rpc.labels("quartz.v1.Quartz", "Search", "NOT_FOUND").observe(0.05)
    rpc.labels("grpc.health.v1.Health", "Check", "OK").observe(0.0001)  # not the public API
    for _ in range(4):
        http.labels("/v1/collections/{name}/search", "POST", "200").observe(0.0005)
    http.labels("/v1/collections/{name}/search", "POST", "404").observe(0.0005)
    http.labels("/healthz", "GET", "200").observe(0.0001)  # a probe: left out
    http.labels("unmatched", "GET", "404").observe(0.0001)
    return reg, rpc, http


def test_operations_sum_the_codes_of_each_public_method_and_api_route():
    reg, _, _ = registry_with_traffic()
    ops = latency.read_registry(reg)
    assert set(ops) == {("grpc", "Search"), ("http", "POST /v1/collections/{name}/search")}
    search = ops[("grpc", "Search")]
    assert search.bounds == (0.001, 0.01, 0.1, INF)
    assert search.counts == (0, 90, 100, 100) and search.failed == 10
    assert quantile(0.5, search.bounds, search.counts) == pytest.approx(0.001 + 0.009 * 50 / 90)
    assert quantile(0.95, search.bounds, search.counts) == pytest.approx(0.01 + 0.09 * 5 / 10)
    http = ops[("http", "POST /v1/collections/{name}/search")]
    assert http.counts == (5, 5, 5, 5) and http.failed == 1  # a 404 is a failed request


def test_since_subtracts_an_earlier_reading_and_survives_a_reset():
    then = Series((0.1, INF), (2, 3), 1)
    now = Series((0.1, INF), (5, 9), 2)
    assert latency.since(now, then) == Series((0.1, INF), (3, 6), 1)
    assert latency.since(now, None) == now
    assert latency.since(Series((0.1, INF), (1, 1), 0), then).counts == (1, 1)  # went down: a reset
    assert latency.since(now, Series((0.2, INF), (1, 1), 0)) == now  # other buckets


def test_read_registry_on_a_process_without_the_histograms_is_empty():
    assert latency.read_registry(CollectorRegistry()) == {}


# ------------------------------------------------------------------ the window


def sample(n: float, slow: float = 0) -> dict:
    """A Search histogram with n fast requests (<= 1 ms) and `slow` ones in (10, 100] ms."""
    return {("grpc", "Search"): Series((0.001, 0.01, 0.1, INF), (n, n, n + slow, n + slow), 0)}


def test_a_young_router_reports_since_its_start():
    w = LatencyWindow(started_at=1000.0)
    rep = w.report(1010.0, sample(7), 60)
    assert rep["start"] == 1000.0 and rep["window_s"] == 10.0 and rep["requested_window_s"] == 60
    [row] = rep["operations"]
    assert row["operation"] == "Search" and row["count"] == 7 and row["per_s"] == pytest.approx(0.7)
    assert row["p50_ms"] == pytest.approx(0.5) and row["p99_ms"] == pytest.approx(0.99)


def test_the_window_subtracts_the_newest_snapshot_old_enough():
    w = LatencyWindow(started_at=0.0)
    w.report(1000.0, sample(100), 30)  # kept as a snapshot
    w.report(1020.0, sample(150), 30)
    rep = w.report(1040.0, sample(160, slow=40), 30)  # 1040 - 30 = 1010: the 1000 snapshot
    [row] = rep["operations"]
    assert rep["start"] == 1000.0 and row["count"] == 100  # 60 fast + 40 slow since t=1000
    assert row["p50_ms"] == pytest.approx(1.0 * 50 / 60)  # rank 50 of the 60 in (0, 1 ms]
    rep = w.report(1060.0, sample(160, slow=40), 30)  # since t=1020: 10 fast, 40 slow
    [row] = rep["operations"]
    assert rep["start"] == 1020.0 and row["count"] == 50
    assert row["p95_ms"] == pytest.approx(10 + 90 * (47.5 - 10) / 40)
    rep = w.report(1100.0, sample(160, slow=40), 30)  # nothing new: no rows
    assert rep["operations"] == [] and rep["start"] == 1060.0


def test_an_old_router_without_an_old_enough_snapshot_uses_its_oldest():
    w = LatencyWindow(started_at=0.0)
    assert w.baseline(5000.0, 60) == (0.0, {})  # nothing kept yet: since the start
    w.keep(5000.0, sample(10))
    assert w.baseline(5030.0, 60)[0] == 5000.0  # a window shorter than asked, reported as such
    rep = w.report(5030.0, sample(12), 60)
    assert rep["window_s"] == 30.0 and rep["operations"][0]["count"] == 2


def test_snapshots_are_spaced_and_bounded_and_keep_what_the_longest_window_needs():
    w = LatencyWindow(started_at=0.0)
    w.keep(100.0, sample(1))
    w.keep(100.0 + latency.SNAPSHOT_EVERY_S / 2, sample(2))  # too soon: not kept
    assert len(w) == 1
    t = 100.0
    for i in range(5000):
        t += latency.SNAPSHOT_EVERY_S
        w.keep(t, sample(i))
        assert len(w) <= latency.SNAPSHOTS_MAX
    then, _ = w.baseline(t, latency.WINDOW_S_MAX)
    assert t - latency.WINDOW_S_MAX - latency.SNAPSHOT_EVERY_S <= then <= t - latency.WINDOW_S_MAX


def test_the_window_asked_for_is_clamped():
    w = LatencyWindow(started_at=0.0)
    assert w.report(10_000.0, {}, 10**9)["requested_window_s"] == latency.WINDOW_S_MAX
    assert w.report(10_001.0, {}, 0)["requested_window_s"] == latency.WINDOW_S_MIN


# ------------------------------------------------------------------ the cluster table


def coll(name, cid, tenant="default", shards=2, rf=2):
    return CollectionRecord(name, cid, 8, "cosine", shards, rf, 16, 200, 64, tenant)


def shard(cid, s, primary, replicas, in_sync, epoch=3):
    return ShardRecord(
        "x",
        cid,
        s,
        8,
        "cosine",
        16,
        200,
        64,
        epoch,
        primary,
        tuple(replicas),
        tuple(InSync(n, "inc") for n in in_sync),
    )


def a_view() -> ClusterView:
    """n1 and n2 live, n3 named in the map without a lease; two tenants; one dropped collection."""
    v = ClusterView(revision=42)
    v.nodes["n1"] = NodeRecord("n1", "10.0.0.1:7001", "i1")
    v.nodes["n2"] = NodeRecord("n2", "10.0.0.2:7001", "i2")
    v.collections["docs"] = coll("docs", "c1")
    v.collections["acme/faq"] = coll("faq", "c2", tenant="acme", shards=1, rf=3)
    v.collections["gone"] = coll("gone", "c3", shards=1, rf=1)
    v.tombstones.add("c3")
    v.shards["c1"] = {
        0: (shard("c1", 0, "n1", ["n1", "n2"], ["n1", "n2"]), 1),
        1: (shard("c1", 1, "n2", ["n2", "n1"], ["n2"], epoch=5), 1),
    }
    v.shards["c2"] = {0: (shard("c2", 0, "n3", ["n3", "n1", "n2"], ["n1"]), 1)}
    v.shards["c3"] = {0: (shard("c3", 0, "n1", ["n1"], ["n1"]), 1)}
    v.draining.add("n2")
    return v


def stats(log_end, count):
    return cluster.ReplicaStats(log_end=log_end, count=count, role="", health="ok")


def test_the_table_names_each_replica_its_lag_and_each_node_its_state():
    answers = {
        "n1": cluster.NodeAnswer(
            {("c1", 0): stats(100, 40), ("c1", 1): stats(90, 35), ("c2", 0): stats(7, 3)}, None, 2**30
        ),
        "n2": cluster.NodeAnswer(error="DEADLINE_EXCEEDED: no answer"),
    }
    t = cluster.table(a_view(), answers)
    assert t["revision"] == 42
    nodes = {n["id"]: n for n in t["nodes"]}
    assert list(nodes) == ["n1", "n2", "n3"]
    assert nodes["n1"] | {"rss_bytes": None} == {
        "id": "n1",
        "address": "10.0.0.1:7001",
        "alive": True,
        "reachable": True,
        "error": "",
        "health": "",
        "draining": False,
        "replicas": 3,
        "primaries": 1,
        "rss_bytes": None,
    }
    assert nodes["n1"]["rss_bytes"] == 2**30
    assert nodes["n2"]["reachable"] is False and "DEADLINE_EXCEEDED" in nodes["n2"]["error"]
    assert nodes["n2"]["draining"] and nodes["n2"]["primaries"] == 1 and nodes["n2"]["rss_bytes"] is None
    assert (
        nodes["n3"]["alive"] is False and nodes["n3"]["address"] is None and nodes["n3"]["reachable"] is None
    )

    by = {(s["tenant"], s["collection"], s["shard"]): s for s in t["shards"]}
    assert list(by) == [("acme", "faq", 0), ("default", "docs", 0), ("default", "docs", 1)]  # no dropped
    s0 = by[("default", "docs", 0)]
    assert (s0["epoch"], s0["primary"], s0["in_sync"], s0["ready"]) == (3, "n1", ["n1", "n2"], True)
    r = {x["node"]: x for x in s0["replicas"]}
    assert r["n1"] == {
        "node": "n1",
        "primary": True,
        "in_sync": True,
        "state": "ok",
        "log_end": 100,
        "lag": 0,
        "count": 40,
        "health": "ok",
    }
    assert r["n2"]["state"] == "unreachable" and r["n2"]["lag"] is None and r["n2"]["count"] is None
    s1 = by[("default", "docs", 1)]  # its primary (n2) did not answer: no lag known for anyone
    assert [x["lag"] for x in s1["replicas"]] == [None, None] and s1["replicas"][1]["log_end"] == 90
    faq = by[("acme", "faq", 0)]  # primary down: not ready, positions unknown
    assert faq["ready"] is False and faq["replication_factor"] == 3
    assert [(x["node"], x["state"]) for x in faq["replicas"]] == [
        ("n3", "down"),
        ("n1", "ok"),
        ("n2", "unreachable"),
    ]

    cols = {(c["tenant"], c["name"]): c for c in t["collections"]}
    assert list(cols) == [("acme", "faq"), ("default", "docs")]
    assert cols[("default", "docs")]["points"] == 40 and not cols[("default", "docs")]["points_complete"]
    assert cols[("acme", "faq")]["points"] == 0 and not cols[("acme", "faq")]["ready"]
    assert t["summary"] == {
        "nodes": 3,
        "nodes_alive": 2,
        "nodes_unreachable": 1,
        "shards": 3,
        "shards_without_primary": 1,
        "shards_under_replicated": 2,
        "max_lag": 0,
        "collections": 2,
    }


def test_lag_is_the_primary_log_end_minus_the_replica_and_missing_replicas_are_named():
    v = a_view()
    answers = {
        "n1": cluster.NodeAnswer({("c1", 0): stats(100, 40), ("c1", 1): stats(90, 35)}),
        "n2": cluster.NodeAnswer({("c1", 0): stats(97, 40), ("c1", 1): stats(95, 36)}),
    }
    t = cluster.table(v, answers)
    by = {(s["collection"], s["shard"]): s for s in t["shards"]}
    assert [(x["node"], x["lag"]) for x in by[("docs", 0)]["replicas"]] == [("n1", 0), ("n2", 3)]
    assert [(x["node"], x["lag"]) for x in by[("docs", 1)]["replicas"]] == [("n2", 0), ("n1", 5)]
    faq = {x["node"]: x["state"] for x in by[("faq", 0)]["replicas"]}
    assert faq == {"n3": "down", "n1": "missing", "n2": "missing"}  # answered without it
    assert t["summary"]["max_lag"] == 5 and t["summary"]["nodes_unreachable"] == 0
    docs = next(c for c in t["collections"] if c["name"] == "docs")
    assert docs["points"] == 40 + 36 and docs["points_complete"] and docs["ready"]


def test_an_empty_cluster_has_an_empty_table():
    t = cluster.table(ClusterView(), {})
    assert t["nodes"] == t["shards"] == t["collections"] == []
    assert t["summary"]["nodes"] == 0 and t["summary"]["max_lag"] == 0


def test_answer_of_reads_list_shards():
    resp = node_pb2.ListShardsResponse(
        shards=[
            node_pb2.ShardStats(
                spec=node_pb2.ShardSpec(ref=node_pb2.ShardRef(collection_id="c1", shard=2)),
                count=5,
                log_end=9,
                role="primary",
                health="ok",
                rss_bytes=123,
            )
        ]
    )
    a = cluster.answer_of(resp)
    assert a.error is None and a.rss_bytes == 123
    assert a.replicas == {("c1", 2): cluster.ReplicaStats(9, 5, "primary", "ok", 0)}


class FakeRpcError(Exception):
    def code(self):
        return type("Code", (), {"name": "UNAVAILABLE"})()

    def details(self):
        return "connection refused"


def test_gather_never_fails_and_bounds_the_calls_in_flight():
    inflight = peak = 0
    never = asyncio.Event

    async def list_shards(address, timeout_s):
        nonlocal inflight, peak
        inflight += 1
        peak = max(peak, inflight)
        try:
            await asyncio.sleep(0)
            if address == "hang":
                await never().wait()  # answers only by the deadline
            if address == "refuse":
                raise FakeRpcError()
            if address == "crash":
                raise RuntimeError("boom")
            return node_pb2.ListShardsResponse()
        finally:
            inflight -= 1

    addresses = {f"n{i}": "ok" for i in range(20)} | {"h": "hang", "r": "refuse", "c": "crash"}
    got = asyncio.run(cluster.gather(addresses, list_shards, timeout_s=0.05, concurrency=3))
    assert peak <= 3
    assert got["h"].error == "no answer within 0.05 s"
    assert got["r"].error == "UNAVAILABLE: connection refused"
    assert got["c"].error == "RuntimeError: boom"
    assert all(got[f"n{i}"].error is None for i in range(20))


# ------------------------------------------------------------------ the guard


class FakeAuth:
    """Keys by their bearer value: "admin", "ta" (a tenant-admin of acme); anything else refused."""

    PRINCIPALS = {
        "admin": Principal("k-admin", "default", "admin"),
        "ta": Principal("k-ta", "acme", "tenant-admin"),
    }

    def authenticate(self, metadata):
        value = dict(metadata).get("authorization", "")
        p = self.PRINCIPALS.get(value.removeprefix("Bearer "))
        if p is None:
            raise errors.Unauthenticated("unknown or revoked API key")
        return p


class FakeLimiter:
    def __init__(self):
        self.taken = []

    async def acquire_all(self, requests):
        self.taken.extend(requests)


class FakeDoor:
    take = FrontDoor.take  # the real token taking (and refusal counting) over the fakes below

    def __init__(self):
        self.limiter = FakeLimiter()
        self.failed = []

    def limits_of(self, principal, op_class):
        return [(f"tenant/{principal.tenant}", op_class, "RATE")]

    def auth_failed(self, method, error, context, metadata, received):
        self.failed.append((method, error.code))


class FakeService:
    def __init__(self, view=None, door=None):
        self.auth = FakeAuth()
        self.frontdoor = door
        self.shardmap = type("Map", (), {"view": view or ClusterView()})()
        self.nodes = None


def bearer(key):
    return [("authorization", f"Bearer {key}")]


def test_the_guard_admits_an_admin_and_takes_a_manage_token():
    door = FakeDoor()
    p = asyncio.run(guard.cluster_admin(FakeService(door=door), bearer("admin"), None, "Latency", "latency"))
    assert p.role == "admin"
    assert door.limiter.taken == [("tenant/default", "manage", "RATE", 1)]


def test_the_guard_refuses_a_tenant_admin_with_a_clear_message_and_audits_bad_keys():
    door = FakeDoor()
    svc = FakeService(door=door)
    with pytest.raises(
        errors.PermissionDenied, match=r"tenant-admin\) may not read latency: it needs a cluster admin key"
    ):
        asyncio.run(guard.cluster_admin(svc, bearer("ta"), None, "Latency", "latency"))
    with pytest.raises(errors.Unauthenticated):
        asyncio.run(guard.cluster_admin(svc, bearer("nope"), None, "ClusterStatus", "the cluster"))
    assert door.failed == [("ClusterStatus", "UNAUTHENTICATED")]
    # without a front door (--no-auth routers have none): the role check alone
    assert asyncio.run(guard.cluster_admin(FakeService(), bearer("admin"), None, "L", "l")).role == "admin"


def test_a_guard_refusal_by_the_rate_limits_counts_in_the_refusals_metric():
    from prometheus_client import REGISTRY

    class EmptyLimiter:
        async def acquire_all(self, requests):
            raise errors.ResourceExhausted("rate limit manage exceeded")

    door = FakeDoor()
    door.limiter = EmptyLimiter()

    def refused():
        return REGISTRY.get_sample_value("quartz_rate_limit_refusals_total", {"reason": "rate"}) or 0.0

    before = refused()
    with pytest.raises(errors.ResourceExhausted):
        asyncio.run(guard.cluster_admin(FakeService(door=door), bearer("admin"), None, "Latency", "latency"))
    assert refused() == before + 1


# ------------------------------------------------------------------ the routes, in process


async def asgi(app, method: str, path: str, key: str | None = None) -> tuple[int, dict, bytes]:
    """One request through the ASGI app: (status, headers, body)."""
    raw_path, _, query = path.partition("?")
    headers = [(b"host", b"test")]
    if key:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
        "root_path": "",
    }
    sent = []
    requested, done = False, asyncio.Event()

    async def receive():
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays until the whole response is sent
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, body


class FakeNodes:
    def stub(self, address):
        class Stub:
            async def ListShards(self, request, timeout):
                if address.startswith("10.0.0.2"):
                    raise FakeRpcError()
                return node_pb2.ListShardsResponse(
                    shards=[
                        node_pb2.ShardStats(
                            spec=node_pb2.ShardSpec(ref=node_pb2.ShardRef(collection_id="c1", shard=0)),
                            log_end=100,
                            count=40,
                        )
                    ]
                )

        return Stub()


@pytest.fixture(scope="module")
def app():
    from quartz_cluster.gateway.app import build_app

    svc = FakeService(view=a_view())
    svc.nodes = FakeNodes()
    return build_app(svc, lambda: True)


def test_cluster_route_answers_admins_and_refuses_others(app):
    status, headers, body = asyncio.run(asgi(app, "GET", "/v1/admin/cluster", "admin"))
    assert status == 200, body
    t = orjson.loads(body)
    assert [n["id"] for n in t["nodes"]] == ["n1", "n2", "n3"]
    assert [n["reachable"] for n in t["nodes"]] == [True, False, None]
    assert t["nodes"][1]["error"] == "UNAVAILABLE: connection refused"
    status, headers, body = asyncio.run(asgi(app, "GET", "/v1/admin/cluster", "ta"))
    problem = orjson.loads(body)
    assert status == 403 and headers["content-type"] == "application/problem+json"
    assert problem["code"] == "PERMISSION_DENIED" and "needs a cluster admin key" in problem["detail"]
    status, headers, _ = asyncio.run(asgi(app, "GET", "/v1/admin/cluster"))
    assert status == 401 and "www-authenticate" in headers


def test_latency_route_reports_the_registrys_operations(app, monkeypatch):
    reg, _, _ = registry_with_traffic()
    monkeypatch.setattr(latency, "read_registry", lambda: latency.operations(reg.collect()))
    status, _, body = asyncio.run(asgi(app, "GET", "/v1/admin/latency?window_s=600", "admin"))
    assert status == 200, body  # the reply matched models.LatencyReport
    rows = {(r["protocol"], r["operation"]): r for r in orjson.loads(body)["operations"]}
    search = rows[("grpc", "Search")]
    assert (search["count"], search["failed"]) == (100, 10)
    assert search["p95_ms"] == pytest.approx(55.0) and search["p50_ms"] < search["p99_ms"]


def test_latency_route_validates_the_window_and_is_admin_only(app):
    status, _, body = asyncio.run(asgi(app, "GET", "/v1/admin/latency?window_s=30", "admin"))
    rep = orjson.loads(body)
    assert status == 200 and rep["requested_window_s"] == 30 and isinstance(rep["operations"], list)
    status, _, body = asyncio.run(asgi(app, "GET", "/v1/admin/latency?window_s=0", "admin"))
    assert status == 400 and orjson.loads(body)["detail"].startswith("window_s:")
    assert asyncio.run(asgi(app, "GET", "/v1/admin/latency", "ta"))[0] == 403


def test_the_dashboard_is_served_from_the_package_with_a_strict_csp(app):
    status, headers, page = asyncio.run(asgi(app, "GET", "/dashboard"))
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert b"/dashboard/static/app.js" in page
    for name in ("app.js", "app.css", "favicon.svg"):
        status, headers, content = asyncio.run(asgi(app, "GET", f"/dashboard/static/{name}"))
        assert status == 200 and content == (STATIC_DIR / name).read_bytes()
        assert headers["x-content-type-options"] == "nosniff" and "content-security-policy" in headers
    assert asyncio.run(asgi(app, "GET", "/dashboard/static/../app.py"))[0] == 404


def test_nothing_the_dashboard_loads_comes_from_another_origin_or_is_inline():
    for path in STATIC_DIR.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # the SVG namespace
        assert not re.search(r"https?://|//cdn|@import|url\(", text), path.name
    page = (STATIC_DIR / "index.html").read_text()
    # the CSP allows no inline script, style or event handler: the page must not need one
    assert not re.search(r"<style|\sstyle=|\son[a-z]+=|<script(?![^>]*\ssrc=)", page)


def test_the_openapi_spec_documents_the_dashboard_routes(app):
    _, _, body = asyncio.run(asgi(app, "GET", "/openapi.json"))
    spec = orjson.loads(body)
    assert {"/v1/admin/cluster", "/v1/admin/latency"} <= set(spec["paths"])
    assert "/dashboard" not in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"ClusterStatus", "ShardStatus", "ReplicaStatus", "LatencyReport", "OperationLatency"} <= set(
        schemas
    )
