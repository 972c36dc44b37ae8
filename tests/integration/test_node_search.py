"""Recall and filtered search through a real node process."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from quartz_cluster import filters
from quartz_cluster.datasets import exact_knn, generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.node.filter_plan import filter_plan
from quartz_cluster.topk import merge_top_k
from tests.integration.conftest import load

pytestmark = pytest.mark.integration
K = 10


def found_rows(hits, row_of):
    return [[row_of[h.id] for h in hs] for hs in hits]


@pytest.fixture(scope="module")
def clustered(module_node):
    _, client = module_node
    # 60k points so the broad filters (> EXACT_SEARCH_CANDIDATES_MAX candidates) take the graph path.
    ds = generate_clustered(60_000, dim=32, n_queries=200, seed=7)
    client.create_shard("clustered", 0, ds.dim, "cosine")
    load(client, "clustered", ds.ids, ds.base, ds.payloads)
    return ds, {pid: i for i, pid in enumerate(ds.ids)}


def test_recall_on_generated_clustered_data(module_node, clustered):
    _, client = module_node
    ds, row_of = clustered
    hits = client.search("clustered", 0, ds.queries, k=K)
    recall = recall_at_k(found_rows(hits, row_of), ds.gt_ids, K)
    print(f"recall@10 clustered 60k x 32 at default ef: {recall:.4f}")
    assert recall >= 0.95
    assert all(len(h) == K for h in hits)
    scores = [[x.score for x in h] for h in hits]
    assert all(s == sorted(s, reverse=True) for s in scores)  # cosine: best (highest) first


SELECTIVITY_FILTERS = {
    0.001: {"must": [{"key": "bucket", "range": {"lt": 1}}]},
    0.01: {"must": [{"key": "bucket", "range": {"gte": 500, "lt": 510}}]},
    0.05: {"must": [{"key": "bucket", "range": {"lt": 50}}]},
    0.10: {"must": [{"key": "bucket", "range": {"lt": 100}}], "must_not": [{"key": "kind", "match": "nope"}]},
    0.25: {"must": [{"key": "bucket", "range": {"lt": 250}}]},
    0.35: {"must": [{"key": "bucket", "range": {"gte": 650}}]},
    0.50: {"must": [{"key": "site", "match": True}]},
}


@pytest.mark.parametrize("selectivity", sorted(SELECTIVITY_FILTERS))
def test_filtered_search_is_correct_and_accurate(module_node, clustered, selectivity):
    _, client = module_node
    ds, row_of = clustered
    flt = SELECTIVITY_FILTERS[selectivity]
    parsed = filters.parse(flt)
    mask = np.array([filters.matches(parsed, p) for p in ds.payloads])
    assert abs(mask.mean() - selectivity) < selectivity * 0.3 + 0.002
    resp = client.search_raw("clustered", 0, ds.queries, k=K, filter=flt, with_payload=True)
    for r in resp.results:
        for pid, blob in zip(r.ids, r.payloads, strict=True):
            assert mask[row_of[pid]], f"{pid} does not satisfy the filter"
            assert filters.matches(parsed, orjson.loads(blob))
    truth = exact_knn(ds.base, ds.queries, K, "cosine", mask)
    recall = recall_at_k([[row_of[i] for i in r.ids] for r in resp.results], truth, K)
    plans = {r.plan for r in resp.results}
    print(f"selectivity {selectivity:.3f}: recall@10 {recall:.4f} plan {plans}")
    assert recall >= 0.95
    assert plans == {filter_plan(int(mask.sum()), len(ds.ids))}


def test_match_any_and_list_values(module_node, clustered):
    _, client = module_node
    ds, row_of = clustered
    flt = {
        "must": [{"key": "tags", "match_any": ["t3", "t10"]}, {"key": "pkg", "match_any": ["pkg05", "pkg06"]}]
    }
    parsed = filters.parse(flt)
    mask = np.array([filters.matches(parsed, p) for p in ds.payloads])
    hits = client.search("clustered", 0, ds.queries[:50], k=K, filter=flt)
    truth = exact_knn(ds.base, ds.queries[:50], K, "cosine", mask)
    assert recall_at_k(found_rows(hits, row_of), truth, K) >= 0.99  # selective: answered exactly


@pytest.fixture(scope="module")
def pydocs(module_node):
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("../shared/data/pydocs-minilm-384 not present")
    _, client = module_node
    ds = load_pydocs(data_dir, with_text=False)
    client.create_shard("pydocs", 0, ds.dim, "cosine")
    load(client, "pydocs", ds.ids, ds.base, ds.payloads)
    return ds, {pid: i for i, pid in enumerate(ds.ids)}


def test_recall_on_real_embeddings(module_node, pydocs):
    _, client = module_node
    ds, row_of = pydocs
    hits = client.search("pydocs", 0, ds.queries, k=K)
    recall = recall_at_k(found_rows(hits, row_of), ds.gt_ids, K)
    print(f"recall@10 pydocs 60k x 384 at default ef: {recall:.4f}")
    assert recall >= 0.95


@pytest.mark.parametrize(
    "flt",
    [
        {"must": [{"key": "kind", "match": "class"}]},
        {
            "must": [{"key": "pkg", "match_any": ["numpy", "pip"]}],
            "must_not": [{"key": "kind", "match": "module"}],
        },
        {"must": [{"key": "site", "match": True}]},  # 88 %: the filtered-graph plan
        {"must": [{"key": "chars", "range": {"gte": 200}}]},
    ],
)
def test_filtered_recall_on_real_embeddings(module_node, pydocs, flt):
    _, client = module_node
    ds, row_of = pydocs
    parsed = filters.parse(flt)
    mask = np.array([filters.matches(parsed, p) for p in ds.payloads])
    if mask.sum() < K:
        pytest.skip("filter matches too few rows in this dataset version")
    queries = ds.queries[:300]
    hits = client.search("pydocs", 0, queries, k=K, filter=flt)
    for hs in hits:
        assert all(mask[row_of[h.id]] for h in hs)
    truth = exact_knn(ds.base, queries, K, "cosine", mask)
    recall = recall_at_k(found_rows(hits, row_of), truth, K)
    print(f"pydocs filter {flt}: selectivity {mask.mean():.4f} recall@10 {recall:.4f}")
    assert recall >= 0.95


def test_several_shards_in_one_call_equal_merging_each_shard(module_node):
    """also_shards: the node searches each shard and merges; the answer is what merging the
    shards' own answers gives (the router relies on it to call each node once)."""
    _, client = module_node
    ds = generate_clustered(3_000, dim=16, n_queries=20, seed=11)
    for shard in range(3):
        client.create_shard("multi", shard, ds.dim, "l2")
        rows = slice(shard * 1000, (shard + 1) * 1000)
        load(client, "multi", ds.ids[rows], ds.base[rows], ds.payloads[rows], shard=shard)
    one_by_one = [client.search_raw("multi", s, ds.queries, k=K, with_payload=True) for s in range(3)]
    request = client.search_request("multi", 0, ds.queries, k=K, with_payload=True)
    request.also_shards.extend([2, 1])
    together = client.stub.Search(request, timeout=30)
    expected = merge_top_k(
        "l2", K, [[(r.ids, r.scores, r.payloads) for r in rep.results] for rep in one_by_one]
    )
    assert len(together.results) == len(ds.queries)
    assert list(together.searched_shards) == [0, 2, 1]
    for got, (ids, scores, payloads) in zip(together.results, expected, strict=True):
        assert list(got.ids) == ids and list(got.payloads) == payloads
        assert np.allclose(got.scores, scores)
        assert scores == sorted(scores)  # l2: best (lowest) first
        assert got.plan == "hnsw"
    # the merge really spans shards: some query's top 10 holds points of more than one shard
    shard_of_row = {pid: i // 1000 for i, pid in enumerate(ds.ids)}
    assert any(len({shard_of_row[pid] for pid in r.ids}) > 1 for r in together.results)
