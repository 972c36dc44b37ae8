"""Metrics and traces of a real cluster (issue 16, DESIGN §14): Debian's `prometheus` server scrapes
every process of a `quartz up`-style cluster and answers queries over its HTTP API; an OTLP/gRPC
sink in this test (the real OTLP protocol, spans kept in memory) receives every process's spans
and sees one trace id across the router and the nodes for a search and for a write; metrics name
collections by uuid, never a tenant or a collection name; a lost node shows as down, failed over
and under-replicated on the coordinator."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from collections import defaultdict
from concurrent import futures

import grpc
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from quartz_cluster.client import QuartzClient
from quartz_cluster.cluster import LocalCluster
from quartz_cluster.procs import free_port
from tests.integration.conftest import wait_for

WAIT_S = 90.0
DIM = 16
POINTS = 300
TENANT = "acme-hidden-tenant"
COLLECTION = "private-collection-name"


class SpanSink(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: every exported span, with its process's service.name."""

    def __init__(self) -> None:
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for rs in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        self.spans.append(
                            {
                                "service": attrs.get("service.name"),
                                "instance": attrs.get("service.instance.id"),
                                "name": span.name,
                                "trace_id": span.trace_id.hex(),
                                "parent": span.parent_span_id.hex(),
                            }
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def traces(self) -> dict[str, list[dict]]:
        with self.lock:
            by_trace = defaultdict(list)
            for s in self.spans:
                by_trace[s["trace_id"]].append(s)
            return by_trace


@pytest.fixture(scope="module")
def sink():
    spans = SpanSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(spans, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield spans, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sink):
    _, endpoint = sink
    tracing = ["--otlp-endpoint", endpoint, "--trace-sample-ratio", "1"]
    c = LocalCluster(
        tmp_path_factory.mktemp("observed"),
        nodes=3,
        coordinators=1,
        node_args=tracing,
        router_args=tracing,
        coordinator_args=tracing,
    )
    c.start()
    yield c
    c.kill()


@pytest.fixture(scope="module")
def loaded(cluster):
    admin = cluster.client()
    admin.create_tenant(TENANT, plan="paid")
    key, _ = admin.create_key(tenant=TENANT, role="tenant-admin")
    client = QuartzClient(cluster.router_address, api_key=key, timeout=60)
    client.create_collection(COLLECTION, dim=DIM, shards=2, replication_factor=2)
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((POINTS, DIM)).astype(np.float32)
    client.upsert(COLLECTION, [f"p{i}" for i in range(POINTS)], vectors, [{"i": i} for i in range(POINTS)])
    client.search(COLLECTION, vectors[:5], k=3)
    coll_id = client.describe_collection(COLLECTION).id
    return client, key, vectors, coll_id


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name:
            continue
        pairs = dict(p.split("=", 1) for p in rest.rstrip("}").split(",") if "=" in p)
        pairs = {k: v.strip('"') for k, v in pairs.items()}
        if all(pairs.get(k) == v for k, v in labels.items()):
            total, found = total + float(value), True
    return total if found else float("nan")


def every_metrics_address(cluster) -> dict[str, list[str]]:
    return {
        "quartz-router": [r.http_address for r in cluster.routers],
        "quartz-node": [n.metrics_address for n in cluster.nodes],
        "quartz-coordinator": [c.metrics_address for c in cluster.coordinators],
    }


def test_every_process_serves_metrics_and_names_no_tenant(cluster, loaded):
    _, key, vectors, coll_id = loaded
    # one HTTP search too: its route is a template, never the collection's name
    req = urllib.request.Request(
        f"http://{cluster.http_address}/v1/collections/{COLLECTION}/search",
        data=json.dumps({"vector": vectors[0].tolist(), "k": 3}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    texts = {a: scrape(a) for addrs in every_metrics_address(cluster).values() for a in addrs}
    for address, text in texts.items():
        assert TENANT not in text and COLLECTION not in text, address  # ids only, never names
        assert "quartz_build_info{" in text and "process_resident_memory_bytes" in text, address
        assert metric_value(text, "quartz_etcd_request_duration_seconds_count") > 0, address
    router = texts[cluster.http_address]
    assert metric_value(router, "quartz_rpc_request_duration_seconds_count", method="Search", code="OK") >= 1
    assert metric_value(router, "quartz_rpc_request_duration_seconds_count", method="Upsert", code="OK") >= 1
    route = "/v1/collections/{name}/search"
    assert metric_value(router, "quartz_http_request_duration_seconds_count", route=route, code="200") == 1
    nodes = [texts[n.metrics_address] for n in cluster.nodes]
    # 2 shards x RF 2: every point twice, each shard once as primary with 2 replicas in sync
    assert sum(metric_value(t, "quartz_shard_points", collection_id=coll_id) for t in nodes) == 2 * POINTS
    primaries = [metric_value(t, "quartz_shard_points", collection_id=coll_id, role="primary") for t in nodes]
    assert sum(p for p in primaries if p == p) == POINTS
    in_sync = [metric_value(t, "quartz_shard_replicas_in_sync", collection_id=coll_id) for t in nodes]
    assert sum(v for v in in_sync if v == v) == 2 * 2  # 2 shards, 2 replicas each
    for t in nodes:
        assert metric_value(t, "quartz_node_writable") == 1
        assert (
            metric_value(t, "quartz_node_disk_capacity_bytes")
            > metric_value(t, "quartz_node_disk_free_bytes")
            > 0
        )
        lag = metric_value(t, "quartz_replication_lag_entries", collection_id=coll_id)
        assert lag != lag or lag == 0  # followers acknowledged every write (majority of 2 = both)
        calls = metric_value(t, "quartz_rpc_request_duration_seconds_count", service="quartz.v1.Node")
        assert calls > 0
    coordinator = texts[cluster.coordinators[0].metrics_address]
    assert metric_value(coordinator, "quartz_coordinator_leader") == 1
    assert metric_value(coordinator, "quartz_cluster_nodes", state="live") == 3
    assert metric_value(coordinator, "quartz_cluster_shards_under_replicated") == 0


def test_a_rate_limit_refusal_is_counted(cluster, loaded):
    admin = cluster.client()
    key, _ = admin.create_key(tenant=TENANT, role="read-write", rate_limits=["read=1/min:burst=1"])
    limited = QuartzClient(cluster.router_address, api_key=key, timeout=0.5)
    before = metric_value(scrape(cluster.http_address), "quartz_rate_limit_refusals_total", reason="rate")
    refused = 0
    for _ in range(3):
        try:
            limited.list_collections()
        except Exception:
            refused += 1
    assert refused >= 1
    after = metric_value(scrape(cluster.http_address), "quartz_rate_limit_refusals_total", reason="rate")
    assert after - (before if before == before else 0) >= refused


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is not installed")
def test_a_real_prometheus_scrapes_the_cluster(cluster, loaded, tmp_path):
    _, _, _, coll_id = loaded
    jobs = every_metrics_address(cluster)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]} for job, t in jobs.items()],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115 - closed with the process
    )

    def query(expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                body = json.loads(r.read())
        except OSError:
            return []
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        targets = sum(len(t) for t in jobs.values())
        up = wait_for(
            lambda: (r := query("sum(up)")) and float(r[0]["value"][1]) == targets and r, "all up", WAIT_S
        )
        assert float(up[0]["value"][1]) == targets
        points = wait_for(
            lambda: query(f'sum(quartz_shard_points{{collection_id="{coll_id}",role="primary"}})'),
            "the shard points scraped",
            WAIT_S,
        )
        assert float(points[0]["value"][1]) == POINTS
        searches = query(
            'sum(quartz_rpc_request_duration_seconds_count{job="quartz-router",method="Search"})'
        )
        assert float(searches[0]["value"][1]) >= 1
        leader = query('max(quartz_coordinator_leader{job="quartz-coordinator"})')
        assert float(leader[0]["value"][1]) == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_search_and_a_write_are_each_one_trace_across_router_and_nodes(cluster, loaded, sink):
    spans, _ = sink
    client, _, vectors, _ = loaded
    client.search(COLLECTION, vectors[:1], k=3)
    client.upsert(COLLECTION, ["traced"], vectors[:1])

    def joined(method: str):
        for trace_id, group in spans.traces().items():
            services = {s["service"] for s in group}
            if any(s["name"] == f"quartz.v1.Quartz/{method}" for s in group) and "quartz-node" in services:
                return trace_id, group
        return None

    for method, node_method in (("Search", "quartz.v1.Node/Search"), ("Upsert", "quartz.v1.Node/Write")):
        trace_id, group = wait_for(lambda m=method: joined(m), f"a {method} traced into the nodes", WAIT_S)
        router_spans = [s for s in group if s["service"] == "quartz-router"]
        node_spans = [s for s in group if s["service"] == "quartz-node"]
        assert router_spans and node_spans
        assert {s["trace_id"] for s in group} == {trace_id}
        assert any(s["name"] == node_method for s in node_spans), [s["name"] for s in node_spans]
        router_ids = {s["name"] for s in router_spans}
        assert f"quartz.v1.Quartz/{method}" in router_ids
        assert all(s["parent"] for s in node_spans)  # each node span has a parent: the router's


def test_a_lost_node_shows_down_failed_over_and_under_replicated(cluster, loaded):
    coordinator = cluster.coordinators[0].metrics_address
    before = metric_value(scrape(coordinator), "quartz_failovers_total")
    victim = next(
        n
        for n in cluster.nodes
        if metric_value(scrape(n.metrics_address), "quartz_shard_points", role="primary") > 0
    )
    victim.kill()
    try:

        def lost() -> bool:
            text = scrape(coordinator)
            return (
                metric_value(text, "quartz_cluster_nodes", state="down") == 1
                and metric_value(text, "quartz_failovers_total") > before
                and metric_value(text, "quartz_cluster_shards_under_replicated") >= 1
            )

        wait_for(
            lost, "the coordinator counts the node down, a failover and an under-replicated shard", WAIT_S
        )
    finally:
        victim.start()
    wait_for(
        lambda: metric_value(scrape(coordinator), "quartz_cluster_nodes", state="down") == 0,
        "the node is back",
        WAIT_S,
    )
    with contextlib.suppress(Exception):
        loaded[0].search(COLLECTION, loaded[2][:1], k=1)
