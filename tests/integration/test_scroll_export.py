"""Paging, counting and deleting by filter, and exporting (issue 15; DESIGN §13) against a real
cluster (auth on: the admin key): scroll pages cover every point once, in id order, across 3
shards, with and without a filter (SDK, async SDK, HTTP); a filtered count equals the truth
computed with numpy; a delete by filter deletes exactly the matching points; `quartz export` and
GET /v1/collections/{name}/export hold every point bit for bit (ids, float32 vectors, payloads);
bad input is refused naming the field (gRPC and HTTP)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import grpc
import numpy as np
import pytest

from quartz_cluster import errors, limits
from quartz_cluster.client import AsyncQuartzClient
from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc
from tests.integration.conftest import bearer, with_metadata

pytestmark = pytest.mark.integration
DIM = 8
N = 3000
TAGS = 5


def make_ids(n: int) -> list[str]:
    # byte order differs from numeric and length order; some ids are multi-byte
    kinds = [lambda i: f"p{i}", lambda i: str(i), lambda i: f"é-{i}", lambda i: f"点{i}"]
    return [kinds[i % len(kinds)](i) for i in range(n)]


def make_vectors(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype("<f4")
    # values whose text form must still read back bit for bit
    v[0, :4] = [np.float32(1e-45), np.float32(-0.0), np.float32(1 / 3), np.float32(3.0e18)]
    v[1, :3] = [np.nextafter(np.float32(1), np.float32(2)), np.float32(0.1), np.float32(-1.17549435e-38)]
    return v


IDS = make_ids(N)
VECTORS = make_vectors(N, 1)
N_COL = np.arange(N)
TAG = N_COL % TAGS
PAYLOADS = [
    {"n": int(i), "tag": int(t), "name": f"point {i}", "nested": {"odd": bool(i % 2)}}
    for i, t in zip(N_COL, TAG, strict=True)
]
ORDER = sorted(IDS, key=str.encode)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from quartz_cluster.cluster import LocalCluster

    c = LocalCluster(tmp_path_factory.mktemp("scroll"), nodes=3, coordinators=1, routers=1)
    c.start()
    with c.client(timeout=60) as admin:
        admin.create_collection("docs", dim=DIM, shards=3, metric="l2")
        for at in range(0, N, 1000):
            admin.upsert("docs", IDS[at : at + 1000], VECTORS[at : at + 1000], PAYLOADS[at : at + 1000])
    yield c
    c.kill()


@pytest.fixture(scope="module")
def stub(cluster):
    channel = grpc.insecure_channel(cluster.router_address)
    yield quartz_pb2_grpc.QuartzStub(with_metadata(channel, bearer(cluster.admin_key)))
    channel.close()


def http(cluster, method: str, path: str, body=None) -> tuple[int, str, bytes]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {cluster.admin_key}"}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        f"http://{cluster.http_address}{path}", data=data, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers.get("content-type", ""), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type", ""), e.read()


def quartz(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quartz_cluster", *args], capture_output=True, text=True, timeout=300
    )


def matching(mask: np.ndarray) -> list[str]:
    return sorted((IDS[i] for i in np.flatnonzero(mask)), key=str.encode)


TAG2 = {"must": [{"key": "tag", "match": 2}]}
CASES = [
    (None, np.ones(N, dtype=bool)),
    (TAG2, TAG == 2),
    (
        {"must": [{"key": "n", "range": {"gte": 100, "lt": 700}}], "must_not": [{"key": "tag", "match": 0}]},
        (N_COL >= 100) & (N_COL < 700) & (TAG != 0),
    ),
    (
        {"should": [{"key": "nested.odd", "match": True}, {"key": "n", "match_any": [4, 8]}]},
        (N_COL % 2 == 1) | np.isin(N_COL, [4, 8]),
    ),
    ({"must": [{"key": "tag", "match": 99}]}, np.zeros(N, dtype=bool)),
]


def check_bit_exact(lines: list[bytes]) -> None:
    """An export's lines hold every point, in id order, as upserted (float32 bits compared)."""
    index = {pid: i for i, pid in enumerate(IDS)}
    docs = [json.loads(line) for line in lines]  # any JSON reader: floats read as float64
    assert [d["id"] for d in docs] == ORDER
    got = np.array([d["vector"] for d in docs], dtype=np.float64).astype("<f4")
    want = VECTORS[[index[d["id"]] for d in docs]]
    assert got.view("<u4").tolist() == want.view("<u4").tolist()
    assert all(d["payload"] == PAYLOADS[index[d["id"]]] for d in docs)


# --------------------------------------------------------------------------- scroll and count


@pytest.mark.parametrize(("flt", "mask"), CASES)
def test_pages_cover_every_point_once_in_id_order_across_shards(cluster, flt, mask):
    want = matching(mask)
    with cluster.client(timeout=60) as c:
        for limit in (limits.SCROLL_LIMIT_MAX, 137):
            seen, offset = [], None
            while True:
                page = c.scroll("docs", filter=flt, limit=limit, offset=offset)
                assert len(page) <= limit and page.shards.answered == page.shards.total == 3
                seen.extend(p.id for p in page)
                if page.next_offset is None:
                    break
                assert len(page) == limit and page.next_offset not in seen
                offset = page.next_offset
            assert seen == want
        assert [p.id for p in c.scroll_all("docs", filter=flt, page_size=333)] == want
        assert c.count("docs", filter=flt) == len(want) == int(mask.sum())
    status, _, body = http(cluster, "POST", "/v1/collections/docs/points/count", {"filter": flt})
    assert status == 200 and json.loads(body)["count"] == len(want)


def test_scroll_returns_vectors_and_payloads_as_written_and_next_offset_is_the_next_page(cluster):
    index = {pid: i for i, pid in enumerate(IDS)}
    with cluster.client(timeout=60) as c:
        page = c.scroll("docs", limit=10, with_vectors=True, consistency="strong")
        assert [p.id for p in page] == ORDER[:10] and page.next_offset == ORDER[10]
        for p in page:
            assert p.vector.tobytes() == VECTORS[index[p.id]].tobytes() and p.payload == PAYLOADS[index[p.id]]
        nxt = c.scroll("docs", limit=5, offset=page.next_offset, with_payload=False)
        assert [p.id for p in nxt] == ORDER[10:15] and all(
            p.payload is None and p.vector is None for p in nxt
        )
    # HTTP: the same page
    status, _, body = http(
        cluster,
        "POST",
        "/v1/collections/docs/points/scroll",
        {"limit": 10, "with_vectors": True, "filter": TAG2},
    )
    got = json.loads(body)
    assert status == 200 and [p["id"] for p in got["points"]] == matching(TAG == 2)[:10]
    assert got["next_offset"] == matching(TAG == 2)[10]
    for p in got["points"]:
        assert np.asarray(p["vector"], dtype="<f4").tobytes() == VECTORS[index[p["id"]]].tobytes()


def test_the_async_client_pages_the_same(cluster):
    async def go():
        async with AsyncQuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=60) as c:
            seen = [p.id async for p in c.scroll_all("docs", filter=TAG2, page_size=100)]
            page = await c.scroll("docs", filter=TAG2, limit=7, offset=seen[3])
            return seen, [p.id for p in page], await c.count("docs", filter=TAG2)

    seen, page, count = asyncio.run(go())
    assert seen == matching(TAG == 2) and page == seen[3:10] and count == len(seen)


# --------------------------------------------------------------------------- delete by filter


def test_delete_by_filter_deletes_exactly_the_matching_points(cluster):
    n = 2000
    ids, vectors = IDS[:n], make_vectors(n, 2)
    with cluster.client(timeout=60) as c:
        c.create_collection("del", dim=DIM, shards=3)
        c.upsert("del", ids, vectors, PAYLOADS[:n])
        c.delete("del", filter={"must": [{"key": "tag", "match": 1}]})
        alive = TAG[:n] != 1
        assert [p.id for p in c.scroll_all("del")] == sorted(
            (ids[i] for i in np.flatnonzero(alive)), key=str.encode
        )
        # over HTTP, with a range: crosses pages of every shard (more than SCROLL_LIMIT_MAX points)
        status, _, body = http(
            cluster,
            "POST",
            "/v1/collections/del/points/delete",
            {"filter": {"must": [{"key": "n", "range": {"lt": 1500}}]}},
        )
        assert status == 200 and json.loads(body)["errors"] == [], body
        alive &= N_COL[:n] >= 1500
        assert [p.id for p in c.scroll_all("del")] == sorted(
            (ids[i] for i in np.flatnonzero(alive)), key=str.encode
        )
        assert c.count("del") == int(alive.sum())
        c.delete("del", [ids[1999]])  # by ids, positionally, as before
        assert c.count("del") == int(alive.sum()) - 1
        for kwargs, field in [
            ({"ids": ["a"], "filter": TAG2}, "filter"),
            ({}, "ids"),
        ]:
            with pytest.raises(errors.InvalidArgument) as err:
                c.delete("del", **kwargs)
            assert err.value.field == field
    for body, field in [
        ({"ids": ["a"], "filter": TAG2}, "filter: "),
        ({"filter": {}}, "filter: "),  # no condition: would delete everything
        ({"filter": {"must": 3}}, "filter"),
        ({}, "ids: "),
    ]:
        status, ctype, got = http(cluster, "POST", "/v1/collections/del/points/delete", body)
        assert (status, ctype) == (400, "application/problem+json"), (body, got)
        assert json.loads(got)["detail"].startswith(field), got
    with cluster.client(timeout=60) as c:
        assert c.count("del") == int(alive.sum()) - 1  # nothing deleted by a refused call


# --------------------------------------------------------------------------- export


def test_cli_export_holds_every_point_bit_for_bit(cluster, tmp_path):
    out = tmp_path / "docs.ndjson"
    done = quartz("export", "docs", "--to", str(out), "--json", "--data-dir", str(cluster.data_dir))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["collection"] == "docs" and summary["points"] == N and summary["file"] == str(out)
    assert summary["bytes"] == out.stat().st_size and summary["seconds"] >= 0
    check_bit_exact(out.read_bytes().splitlines())
    # a filter
    part = tmp_path / "tag2.ndjson"
    done = quartz(
        "export", "docs", "--to", str(part), "--filter", json.dumps(TAG2), "--data-dir", str(cluster.data_dir)
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in part.read_bytes().splitlines()] == matching(TAG == 2)
    # a failed export leaves no file under the final name (nor a temp file beside it)
    for args, text in [(["nope"], "NOT_FOUND"), (["docs", "--filter", '{"must": 3}'], "filter")]:
        bad = tmp_path / "bad.ndjson"
        done = quartz("export", *args, "--to", str(bad), "--data-dir", str(cluster.data_dir))
        assert done.returncode == 1 and done.stderr.startswith("error: ") and text in done.stderr
        assert not bad.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.ndjson", "tag2.ndjson"]


def test_http_export_streams_every_point_bit_for_bit(cluster):
    status, ctype, body = http(cluster, "GET", "/v1/collections/docs/export?page_size=700")
    assert status == 200 and ctype.startswith("application/x-ndjson")
    check_bit_exact(body.splitlines())
    flt = urllib.parse.quote(json.dumps(TAG2))
    status, _, body = http(cluster, "GET", f"/v1/collections/docs/export?filter={flt}&consistency=eventual")
    assert status == 200 and [json.loads(x)["id"] for x in body.splitlines()] == matching(TAG == 2)


# --------------------------------------------------------------------------- bad input


def test_bad_scroll_input_is_refused_naming_the_field(cluster, stub):
    for req, code, text in [
        (
            quartz_pb2.ScrollPointsRequest(collection="docs", limit=limits.SCROLL_LIMIT_MAX + 1),
            "INVALID_ARGUMENT",
            "limit: ",
        ),
        (
            quartz_pb2.ScrollPointsRequest(collection="docs", filter='{"must": [{"key": 1}]}'),
            "INVALID_ARGUMENT",
            "filter",
        ),
        (quartz_pb2.ScrollPointsRequest(collection="docs", filter="{"), "INVALID_ARGUMENT", "filter: "),
        (quartz_pb2.ScrollPointsRequest(collection="docs", offset="x" * 300), "INVALID_ARGUMENT", "offset: "),
        (quartz_pb2.ScrollPointsRequest(collection="nope"), "NOT_FOUND", "nope"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Scroll(req, timeout=30)
        assert err.value.code().name == code and text in err.value.details(), (req, err.value.details())
    for req, text in [
        (quartz_pb2.CountRequest(collection="docs", filter="[1]"), "filter"),
        (quartz_pb2.DeleteRequest(collection="docs", filter='{"must": "x"}'), "filter"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, "Count" if isinstance(req, quartz_pb2.CountRequest) else "Delete")(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(text)
    assert stub.Scroll(quartz_pb2.ScrollPointsRequest(collection="docs"), timeout=30).points  # limit 0: 100
    with cluster.client() as c:
        for kwargs, field in [
            ({"limit": limits.SCROLL_LIMIT_MAX + 1}, "limit"),
            ({"limit": 0}, "limit"),
            ({"offset": ""}, "offset"),
            ({"offset": 1.5}, "offset"),
            ({"consistency": "later"}, "consistency"),
        ]:
            with pytest.raises(errors.InvalidArgument) as err:
                c.scroll("docs", **kwargs)
            assert err.value.field == field
        with pytest.raises(errors.NotFound):
            c.count("nope", filter=TAG2)
    for method, path, body, status_, text in [
        ("POST", "/v1/collections/docs/points/scroll", {"limit": limits.SCROLL_LIMIT_MAX + 1}, 400, "limit"),
        ("POST", "/v1/collections/docs/points/scroll", {"filter": {"must": 3}}, 400, "filter"),
        ("POST", "/v1/collections/docs/points/scroll", {"offset": "x" * 300}, 400, "offset"),
        ("POST", "/v1/collections/nope/points/scroll", {}, 404, "nope"),
        ("POST", "/v1/collections/docs/points/count", {"filter": {"should": 1}}, 400, "filter"),
        ("GET", "/v1/collections/nope/export", None, 404, "nope"),
        ("GET", "/v1/collections/docs/export?filter=%7B", None, 400, "filter"),
        (
            "GET",
            f"/v1/collections/docs/export?page_size={limits.SCROLL_LIMIT_MAX + 1}",
            None,
            400,
            "page_size",
        ),
    ]:
        got, ctype, payload = http(cluster, method, path, body)
        problem = json.loads(payload)
        assert (got, ctype) == (status_, "application/problem+json"), (path, payload)
        assert text in problem["detail"], problem
