"""The HTTP gateway (issue 13) against a live cluster: schemathesis over the whole OpenAPI spec
with a valid key (0 server errors, every response conforms to the spec), a corpus of >= 10,000
generated bad requests (0 5xx, every process alive, the cluster still answering), and the
gateway's own promises: problem+json errors naming the field, the docs served without a CDN,
probes, OpenAPI 3.1."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

DIM = 4
CORPUS_REQUESTS = 10_000
SCHEMATHESIS_EXAMPLES = 30


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    # small nodes: schemathesis creates collections of every shape; admission control bounds them
    c = LocalCluster(tmp_path_factory.mktemp("http"), nodes=2, node_args=["--memory-max", "1G"])
    c.start()
    admin = c.client(timeout=60)
    admin.create_collection("docs", dim=DIM, shards=2, replication_factor=2)
    admin.upsert(
        "docs",
        ids=[f"p{i}" for i in range(50)],
        vectors=np.random.default_rng(0).normal(size=(50, DIM)).astype("f4"),
        payloads=[{"lang": "en" if i % 2 else "de", "n": i} for i in range(50)],
    )
    yield c
    c.kill()


def call(
    cluster,
    method: str,
    path: str,
    body=None,
    key: str | None = "admin",
    raw: bytes | None = None,
    headers: dict | None = None,
) -> tuple[int, str, bytes]:
    h = {"content-type": "application/json", **(headers or {})}
    if key == "admin":
        h["authorization"] = f"Bearer {cluster.admin_key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(f"http://{cluster.http_address}{path}", data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def test_openapi_31_docs_and_probes_are_served_locally(cluster):
    status, _, body = call(cluster, "GET", "/openapi.json", key=None)
    spec = json.loads(body)
    assert status == 200 and spec["openapi"].startswith("3.1")
    for path in [
        "/v1/collections",
        "/v1/collections/{name}",
        "/v1/collections/{name}/points",
        "/v1/collections/{name}/points/get",
        "/v1/collections/{name}/points/delete",
        "/v1/collections/{name}/search",
        "/v1/collections/{name}/count",
        "/healthz",
        "/readyz",
    ]:
        assert path in spec["paths"], path
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])
    status, _, page = call(cluster, "GET", "/docs", key=None)
    assert status == 200 and b"/docs/assets/swagger-ui-bundle.js" in page and b"cdn" not in page.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        status, _, content = call(cluster, "GET", f"/docs/assets/{asset}", key=None)
        assert status == 200 and len(content) > 10_000
    assert call(cluster, "GET", "/healthz", key=None)[0] == 200
    assert json.loads(call(cluster, "GET", "/readyz", key=None)[2]) == {"status": "ready"}


def test_a_filtered_search_and_errors_that_name_the_field(cluster):
    status, _, body = call(
        cluster,
        "POST",
        "/v1/collections/docs/search",
        {"vector": [1, 0, 0, 0], "k": 5, "filter": {"must": [{"key": "lang", "match": "en"}]}},
    )
    hits = json.loads(body)["hits"]
    assert status == 200 and len(hits) == 5 and all(h["payload"]["lang"] == "en" for h in hits)
    for method, path, payload, status_, field in [
        ("POST", "/v1/collections/docs/search", {"vector": [1, 2], "k": 5}, 400, "vector: dimension 2"),
        (
            "POST",
            "/v1/collections/docs/search",
            {"vectors": [[1, 2, 3, 4], [1, 2]]},
            400,
            "vectors: every vector",
        ),
        ("POST", "/v1/collections/docs/search", {"vectors": [[1, 2], [1, 2]]}, 400, "vectors: dimension 2"),
        ("POST", "/v1/collections/docs/search", {"vector": [1, 0, 0, 0], "k": 0}, 400, "k"),
        (
            "POST",
            "/v1/collections/docs/search",
            {"vector": [1, 0, 0, 0], "filter": {"must": 3}},
            400,
            "filter",
        ),
        (
            "PUT",
            "/v1/collections/docs/points",
            {"points": [{"id": "a", "vector": [1, 2, 3, 4]}, {"id": "b"}]},
            400,
            "points[1].vector",
        ),
        (
            "PUT",
            "/v1/collections/docs/points",
            {"points": [{"id": "", "vector": [1, 2, 3, 4]}]},
            400,
            "points[0].id",
        ),
        ("POST", "/v1/collections/nope/search", {"vector": [1, 0, 0, 0]}, 404, "nope"),
        ("POST", "/v1/collections", {"name": "bad/name", "dim": 4}, 400, "name"),
    ]:
        got, ctype, body = call(cluster, method, path, payload)
        problem = json.loads(body)
        assert (got, ctype) == (status_, "application/problem+json"), (path, payload, body)
        assert problem["status"] == status_ and field in problem["detail"], problem
    nan = b'{"points": [{"id": "a", "vector": [1, 2, 3, 4]}, {"id": "b", "vector": [NaN, 1, 2, 3]}]}'
    status, _, body = call(cluster, "PUT", "/v1/collections/docs/points", raw=nan)
    assert status == 400 and json.loads(body)["detail"].startswith("points[1].vector: "), body
    assert call(cluster, "GET", "/v1/collections/docs/count")[0] == 200
    assert (
        json.loads(call(cluster, "GET", "/v1/collections/docs/count")[2])["count"] == 50
    )  # nothing half-applied


@pytest.fixture(scope="module")
def st_cluster(tmp_path_factory):
    """schemathesis's own cluster: with an admin key it creates and drops collections, tenants
    and keys (its stateful phase follows links, such as a key id from a listing to a revoke)."""
    from quartz_cluster.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("st"), nodes=2, node_args=["--memory-max", "1G"])
    c.start()
    yield c
    c.kill()


def test_schemathesis_finds_no_server_error_and_no_response_off_the_spec(st_cluster, tmp_path):
    """schemathesis (its CLI: the pytest plugin does not support pytest 9) over every operation
    of /openapi.json with the admin key, positive and negative examples, then its stateful phase:
    no 5xx; status codes, content types, headers and bodies as documented; requests that break
    the schema refused; 405 with Allow for methods not served."""
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"http://{st_cluster.http_address}/openapi.json",
            "--header",
            f"Authorization: Bearer {st_cluster.admin_key}",
            "--max-examples",
            str(SCHEMATHESIS_EXAMPLES),
            "--seed",
            "13",
            "--request-timeout",
            "60",
            "--continue-on-failure",
            # every check but positive_data_acceptance: a schema cannot say "the vector's length
            # is the collection's dim" or "replication_factor <= live nodes", so valid-looking
            # requests are rightly refused with 4xx
            "--exclude-checks",
            "positive_data_acceptance",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, "NO_COLOR": "1"},
        cwd=tmp_path,  # its .schemathesis/ cache goes there, not into the checkout
    )
    summary = out.stdout[-4000:]
    print(summary)
    assert out.returncode == 0, summary + out.stderr[-2000:]
    [junit] = tmp_path.glob("junit*.xml")
    report = junit.read_text()
    assert "<testcase" in report and "<failure" not in report


# ------------------------------------------------------------------ a corpus of bad requests

PATHS = [
    ("POST", "/v1/collections"),
    ("GET", "/v1/collections"),
    ("GET", "/v1/collections/{c}"),
    ("DELETE", "/v1/collections/{c}"),
    ("PUT", "/v1/collections/{c}/points"),
    ("POST", "/v1/collections/{c}/points/get"),
    ("POST", "/v1/collections/{c}/points/delete"),
    ("POST", "/v1/collections/{c}/search"),
    ("GET", "/v1/collections/{c}/count"),
    ("POST", "/v1/admin/keys"),
    ("POST", "/v1/admin/tenants"),
    ("GET", "/v1/admin/keys"),
]
NASTY = [
    None,
    True,
    -1,
    0,
    2**64,
    -(2**63),
    1e308,
    -1e308,
    "",
    "x" * 5000,
    "\u0000",
    "\ud800" * 0 + "é",
    [],
    {},
    [[]],
    [None],
    {"$": 1},
    "NaN",
    "Infinity",
    [1e39] * DIM,
    list(range(5000)),
    {"must": [{"key": 1}]},
]
RAW = [
    b"",
    b"{",
    b"[]",
    b"null",
    b"\xff\xfe",
    b'{"vector": NaN}',
    b'{"vector": [Infinity, 1, 2, 3]}',
    b'{"points": [{"id": "a", "vector": [1e400, 0, 0, 0]}]}',
    b"{" * 10_000,
    b'{"a":' * 500 + b"1" + b"}" * 500,
]
GOOD = {
    "/v1/collections": {"name": "z", "dim": 4},
    "/v1/collections/{c}/points": {"points": [{"id": "q", "vector": [1, 2, 3, 4], "payload": {"a": 1}}]},
    "/v1/collections/{c}/points/get": {"ids": ["p1"]},
    "/v1/collections/{c}/points/delete": {"ids": ["zzz"]},
    "/v1/collections/{c}/search": {
        "vector": [1, 2, 3, 4],
        "k": 3,
        "filter": {"must": [{"key": "n", "range": {"gte": 1}}]},
    },
    "/v1/admin/keys": {"role": "read-only"},
    "/v1/admin/tenants": {"name": "t"},
}


def mutate(rng: random.Random, body):
    """A valid body with one part replaced, removed, or a field added."""
    if not isinstance(body, dict) or not body:
        return rng.choice(NASTY)
    body = json.loads(json.dumps(body))
    node, key = body, rng.choice(list(body))
    while isinstance(node[key], (dict, list)) and node[key] and rng.random() < 0.6:
        node = node[key]
        key = rng.randrange(len(node)) if isinstance(node, list) else rng.choice(list(node))
    roll = rng.random()
    if roll < 0.7:
        node[key] = rng.choice(NASTY)
    elif roll < 0.85 and isinstance(node, dict):
        del node[key]
    elif isinstance(node, dict):
        node[rng.choice(["extra", "k", "ids", "vector", "vectors"])] = rng.choice(NASTY)
    return body


def test_a_corpus_of_bad_requests_gets_4xx_and_never_hurts_the_cluster(cluster):
    rng = random.Random(13)
    statuses: dict[int, int] = {}
    server_errors = []
    for _ in range(CORPUS_REQUESTS):
        method, path = rng.choice(PATHS)
        coll = rng.choice(
            ["docs", "docs", "nope", "a" * 65, "%2e%2e", "d%00s", "x%20y", "%F0%9F%98%80", "..%2f"]
        )
        if method == "DELETE" and coll == "docs":
            coll = "nope"  # a valid drop would end the run's checks; bad names only
        url = path.replace("{c}", coll)
        key = rng.choice(["admin"] * 6 + [None])
        headers = rng.choice([{}, {}, {}, {"content-type": "text/plain"}, {"authorization": "Bearer qz_x"}])
        if method in ("GET", "DELETE"):
            status, ctype, body = call(cluster, method, url, key=key, headers=headers)
        elif rng.random() < 0.15:
            status, ctype, body = call(cluster, method, url, raw=rng.choice(RAW), key=key, headers=headers)
        else:
            status, ctype, body = call(
                cluster, method, url, mutate(rng, GOOD.get(path)), key=key, headers=headers
            )
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            server_errors.append((method, url, status, body[:300]))
        if status >= 400:
            assert ctype == "application/problem+json", (method, url, status, body[:200])
    print(f"{CORPUS_REQUESTS} bad requests: statuses {dict(sorted(statuses.items()))}")
    assert server_errors == []
    assert all(p.alive() for p in cluster.processes())
    assert cluster.client(timeout=60).count("docs") >= 50
    assert call(cluster, "GET", "/readyz", key=None)[0] == 200
