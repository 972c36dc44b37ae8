"""Paging and counting on a shard replica (node/shard/scan.py) and the merge of shards' pages, on
a real replica in a temp dir (no network): pages cover every matching point once, in the byte
order of the ids, whichever way a page is found (rows in key order, sorted index matches, rows
tested through their labels), whatever ends a page early; counts equal `filters.matches`."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

import grpc
import numpy as np
import orjson
import pytest

from quartz_cluster import filters, limits
from quartz_cluster.node.shard import scan
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.unit.test_node_service import DIM, Aborted, Context, node, ref

N = 1500
LONG = "L" * (limits.INDEXED_STRING_BYTES_MAX + 10)  # indexed by hash: matches are re-checked


def point_ids() -> list[str]:
    # byte order is not the order of numbers ("10" < "9") nor of lengths; some multi-byte ids
    kinds = [
        lambda i: f"p{i}",
        lambda i: str(i),
        lambda i: f"é{i}",
        lambda i: f"日本{i}",
        lambda i: f"Z{i:05d}",
    ]
    return [kinds[i % len(kinds)](i) for i in range(N)]


def payload(i: int) -> dict:
    out: dict = {"n": i, "tag": i % 7}
    if i % 11 == 0:
        out["s"] = LONG + str(i % 2)
    if i % 13 == 0:
        out["tags"] = ["a", "b"] if i % 2 else ["c"]
    return out


IDS = point_ids()
VECTORS = np.random.default_rng(5).normal(size=(N, DIM)).astype("<f4")
PAYLOADS = [payload(i) for i in range(N)]

FILTERS = [
    None,
    {"must": [{"key": "tag", "match": 3}]},  # 1/7
    {"must": [{"key": "n", "range": {"gte": 100, "lt": 130}}]},  # 30 points
    {"must_not": [{"key": "tag", "match_any": [0, 1]}]},  # 5/7
    {"must": [{"key": "s", "match": LONG + "1"}]},  # a hashed string
    {"should": [{"key": "tags", "match": "a"}, {"key": "n", "match": 7}]},
    {"must": [{"key": "nope", "match": 1}]},  # nothing
]


def truth(flt: dict | None, alive: dict[str, int] | None = None) -> list[str]:
    parsed = filters.parse(flt)
    rows = alive if alive is not None else {pid: i for i, pid in enumerate(IDS)}
    return sorted((pid for pid, i in rows.items() if filters.matches(parsed, PAYLOADS[i])), key=str.encode)


def run(fn, tmp_path, load: bool = True):
    async def go():
        svc, registry = await node(tmp_path, shards=(0,))
        try:
            if load:
                for at in range(0, N, 500):
                    req = node_pb2.WriteRequest(
                        ref=ref(0),
                        upserts=node_pb2.PointBatch(
                            ids=IDS[at : at + 500],
                            vectors=node_pb2.Vectors(
                                data=VECTORS[at : at + 500].tobytes(), count=len(IDS[at : at + 500]), dim=DIM
                            ),
                            payloads=[orjson.dumps(p) for p in PAYLOADS[at : at + 500]],
                        ),
                    )
                    await svc.Write(req, Context())
            await fn(svc, registry.get("c", 0))
        finally:
            await registry.close()

    asyncio.run(go())


def page_through(shard, flt, limit, **kw) -> tuple[list[str], list[scan.Page]]:
    parsed = filters.parse(flt)
    seen, pages, offset = [], [], ""
    for _ in range(10 * N):
        page = scan.scroll(shard.state, shard.store, parsed, offset, limit, False, False, **kw)
        assert len(page.points) <= limit
        pages.append(page)
        seen.extend(p[0] for p in page.points)
        if not page.next_offset:
            return seen, pages
        assert page.next_offset > (page.points[-1][0] if page.points else offset) or not page.points
        offset = page.next_offset
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize("limit", [1, 37, limits.SCROLL_LIMIT_MAX])
def test_pages_cover_every_matching_point_once_in_byte_order(tmp_path, flt, limit):
    async def go(svc, shard):
        seen, pages = page_through(shard, flt, limit)
        assert seen == truth(flt)
        # full pages but the last: the index decides these exactly
        assert all(len(p.points) == limit for p in pages[:-1])
        if len(pages) > 1:  # next_offset is the first point of the next page
            assert all(a.next_offset == b.points[0][0] for a, b in itertools.pairwise(pages))
        assert scan.count(shard.state, shard.store, filters.parse(flt)) == len(truth(flt))

    run(go, tmp_path)


@pytest.mark.parametrize("flt", FILTERS[1:])
def test_rows_tested_through_their_labels_page_the_same(tmp_path, monkeypatch, flt):
    """A filter admitting more points than are sorted reads rows in key order; with a small scan
    budget pages end early (some empty), and together they still hold every match once."""
    monkeypatch.setattr(limits, "SCROLL_SORTED_CANDIDATES_MAX", 0)
    monkeypatch.setattr(limits, "SCROLL_SCAN_ROWS_MAX", 97)

    async def go(svc, shard):
        seen, pages = page_through(shard, flt, 50)
        assert seen == truth(flt)
        if seen:  # (a filter admitting nothing has nothing to scan for)
            assert len(pages) >= N // 97

    run(go, tmp_path)


def test_a_page_ends_at_its_byte_budget_with_at_least_one_point(tmp_path):
    async def go(svc, shard):
        offset, seen = "", []
        while True:
            page = scan.scroll(shard.state, shard.store, None, offset, 100, True, True, bytes_max=200)
            assert 1 <= len(page.points) < 100
            seen.extend(p[0] for p in page.points)
            if not page.next_offset:
                break
            offset = page.next_offset
        assert seen == truth(None)

    run(go, tmp_path)


def test_vectors_and_payloads_come_back_as_written(tmp_path):
    async def go(svc, shard):
        page = scan.scroll(shard.state, shard.store, None, "", limits.SCROLL_LIMIT_MAX, True, True)
        index = {pid: i for i, pid in enumerate(IDS)}
        for pid, vec, pay in page.points:
            assert vec == VECTORS[index[pid]].tobytes()
            assert orjson.loads(pay) == PAYLOADS[index[pid]]
        bare = scan.scroll(shard.state, shard.store, None, "", 5, False, False)
        assert all(v == b"" and p == b"" for _, v, p in bare.points)

    run(go, tmp_path)


def test_the_offset_is_inclusive_and_need_not_exist(tmp_path):
    async def go(svc, shard):
        everything = truth(None)
        at = everything[100]
        page = scan.scroll(shard.state, shard.store, None, at, 3, False, False)
        assert [p[0] for p in page.points] == everything[100:103] and page.next_offset == everything[103]
        page = scan.scroll(shard.state, shard.store, None, at + "\x00", 2, False, False)
        assert [p[0] for p in page.points] == everything[101:103]
        page = scan.scroll(shard.state, shard.store, None, "\U0010ffff", 5, False, False)
        assert page.points == [] and page.next_offset == ""

    run(go, tmp_path)


def test_rows_written_after_the_mask_are_tested_on_their_payload(tmp_path):
    """The label-tested path with a mask taken before points were deleted and re-written under
    reused labels: a row whose label no longer names it is decided by its payload."""

    async def go(svc, shard):
        flt = filters.parse({"must": [{"key": "tag", "match": 3}]})
        state = shard.state
        mask = state.payload_index.mask(flt, state.next_label)
        owners = state.ids_by_label[: state.next_label].copy()
        victims = [pid for pid in IDS[:40]]
        await svc.Write(node_pb2.WriteRequest(ref=ref(0), delete_ids=victims), Context())
        fresh = [f"new{i}" for i in range(40)]  # take the freed labels; half of them match
        req = node_pb2.WriteRequest(
            ref=ref(0),
            upserts=node_pb2.PointBatch(
                ids=fresh,
                vectors=node_pb2.Vectors(data=VECTORS[:40].tobytes(), count=40, dim=DIM),
                payloads=[orjson.dumps({"tag": 3 if i % 2 else 4}) for i in range(40)],
            ),
        )
        await svc.Write(req, Context())
        assert {state.label_of[f] for f in fresh} <= set(range(len(owners)))
        got = [pid for pid, row in scan._tested_rows(shard.store, "", flt, mask, owners) if row]
        expected = sorted(
            [pid for pid in truth({"must": [{"key": "tag", "match": 3}]}) if pid not in set(victims)]
            + [f for i, f in enumerate(fresh) if i % 2],
            key=str.encode,
        )
        assert got == expected

    run(go, tmp_path)


# ------------------------------------------------------------------ the node's handlers


def test_scroll_and_count_handlers_and_their_errors_naming_the_field(tmp_path):
    async def go(svc, shard):
        flt = orjson.dumps(FILTERS[1]).decode()
        resp = await svc.Scroll(node_pb2.ScrollRequest(ref=ref(0), filter=flt, limit=10), Context())
        assert [p.id for p in resp.points] == truth(FILTERS[1])[:10]
        assert resp.next_offset == truth(FILTERS[1])[10]
        counted = await svc.CountPoints(node_pb2.CountPointsRequest(ref=ref(0), filter=flt), Context())
        assert counted.count == len(truth(FILTERS[1]))
        every = await svc.CountPoints(node_pb2.CountPointsRequest(ref=ref(0)), Context())
        assert every.count == N
        for req, field in [
            (node_pb2.ScrollRequest(ref=ref(0), limit=limits.SCROLL_LIMIT_MAX + 1), "limit: "),
            (node_pb2.ScrollRequest(ref=ref(0), limit=0), "limit: "),
            (node_pb2.ScrollRequest(ref=ref(0), limit=5, offset="x" * 300), "offset: "),
            (node_pb2.ScrollRequest(ref=ref(0), limit=5, filter='{"must": 3}'), "filter"),
            (node_pb2.ScrollRequest(ref=ref(0), limit=5, filter="{"), "filter: "),
        ]:
            with pytest.raises(Aborted) as err:
                await svc.Scroll(req, Context())
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert err.value.details.startswith(field), err.value.details
        with pytest.raises(Aborted) as err:
            await svc.CountPoints(node_pb2.CountPointsRequest(ref=ref(0), filter="[1]"), Context())
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.details.startswith("filter")
        with pytest.raises(Aborted) as err:
            await svc.Scroll(node_pb2.ScrollRequest(ref=ref(5), limit=5), Context())
        assert err.value.code == grpc.StatusCode.NOT_FOUND

    run(go, tmp_path)


def test_an_empty_shard_has_one_empty_page(tmp_path):
    async def go(svc, shard):
        page = scan.scroll(shard.state, shard.store, filters.parse(FILTERS[1]), "", 10, True, True)
        assert (page.points, page.next_offset) == ([], "")
        assert scan.count(shard.state, shard.store, None) == 0

    run(go, tmp_path, load=False)


# ------------------------------------------------------------------ merging shards' pages


def pt(pid: str, size: int = 0):
    return SimpleNamespace(id=pid, vector=b"v" * size, payload=b"")


def ids(points) -> list[str]:
    return [p.id for p in points]


def test_merge_stops_at_the_first_shards_next_offset():
    a = ([pt("a"), pt("c"), pt("e")], "g")  # a's next point is g
    b = ([pt("b"), pt("d")], "")  # b is done
    c = ([], "d2")  # c read its budget: nothing before d2, d2 not looked at
    out, nxt = scan.merge_pages([a, b, c], 10, 1 << 20)
    assert (ids(out), nxt) == (["a", "b", "c", "d"], "d2")
    out, nxt = scan.merge_pages([a, b], 10, 1 << 20)
    assert (ids(out), nxt) == (["a", "b", "c", "d", "e"], "g")
    out, nxt = scan.merge_pages([a, b], 3, 1 << 20)
    assert (ids(out), nxt) == (["a", "b", "c"], "d")
    out, nxt = scan.merge_pages([([], ""), ([], "")], 3, 1 << 20)
    assert (out, nxt) == ([], "")


def test_merge_keeps_to_the_byte_budget_with_at_least_one_point():
    pages = [([pt("a", 50), pt("c", 50)], ""), ([pt("b", 50)], "")]
    assert ids(scan.merge_pages(pages, 10, 120)[0]) == ["a", "b"]
    assert scan.merge_pages(pages, 10, 120)[1] == "c"
    assert scan.merge_pages(pages, 10, 1) == ([pages[0][0][0]], "b")


def test_merge_orders_by_utf8_bytes():
    pages = [([pt("Z"), pt("é")], ""), ([pt("a"), pt("日")], "")]
    out, _ = scan.merge_pages(pages, 10, 1 << 20)
    assert ids(out) == sorted(["Z", "é", "a", "日"], key=str.encode)


def test_offset_and_limit_validation():
    assert scan.page_limit(0) == limits.SCROLL_LIMIT_DEFAULT
    assert scan.page_limit(limits.SCROLL_LIMIT_MAX) == limits.SCROLL_LIMIT_MAX
    with pytest.raises(Exception, match=r"^limit: "):
        scan.page_limit(limits.SCROLL_LIMIT_MAX + 1)
    assert scan.offset_id("") == "" and scan.offset_id("é" * 128) == "é" * 128
    with pytest.raises(Exception, match=r"^offset: "):
        scan.offset_id("é" * 129)
    assert scan.needs_recheck(filters.parse({"must": [{"should": [{"key": "s", "match": LONG}]}]}))
    assert not scan.needs_recheck(filters.parse({"must": [{"key": "s", "match": "short"}]}))
