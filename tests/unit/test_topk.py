"""topk: merging per-source top-k lists and their plans, with exact expected answers (the
property tests in test_routing.py compare the merge with a reference; these pin the edges)."""

from types import SimpleNamespace

import pytest

from quartz_cluster import topk
from quartz_cluster.topk import merge_hits, merge_plans, merge_top_k


def answer(ids, scores, payloads=(), plan="hnsw"):
    return SimpleNamespace(ids=list(ids), scores=list(scores), payloads=list(payloads), plan=plan)


def test_no_source_gives_count_empty_answers_with_empty_plans():
    merged, plans = merge_hits("cosine", 5, [], 3)
    assert merged == [([], [], [])] * 3
    assert plans == ["", "", ""]
    assert merge_top_k("cosine", 5, []) == []


def test_one_source_is_returned_as_it_is():
    src = [answer(["a", "b"], [0.9, 0.1], [b"x", b"y"], "exact"), answer([], [], [], "hnsw")]
    merged, plans = merge_hits("l2", 1, [src], 2)  # k is not applied: the source already did
    assert merged == [(["a", "b"], [0.9, 0.1], [b"x", b"y"]), ([], [], [])]
    assert plans == ["exact", "hnsw"]


def test_one_source_without_payloads_gets_empty_ones():
    assert merge_top_k("ip", 3, [[(("a", "b"), (2.0, 1.0), ())]]) == [(["a", "b"], [2.0, 1.0], [b"", b""])]


@pytest.mark.parametrize("queries", [1, 9])  # the heap merge and the numpy merge
def test_merge_hits_orders_by_the_metric_and_merges_plans(queries):
    l2 = [
        [answer(["a", "b"], [0.1, 0.7], [b"A", b"B"], "hnsw")] * queries,
        [answer(["c", "d"], [0.3, 0.5], [b"C", b"D"], "exact")] * queries,
    ]
    merged, plans = merge_hits("l2", 3, l2, queries)
    assert merged == [(["a", "c", "d"], [0.1, 0.3, 0.5], [b"A", b"C", b"D"])] * queries
    assert plans == ["exact,hnsw"] * queries
    merged, _ = merge_hits("cosine", 3, l2, queries)  # higher is better
    assert merged == [(["b", "d", "c"], [0.7, 0.5, 0.3], [b"B", b"D", b"C"])] * queries


@pytest.mark.parametrize("queries", [1, topk.VECTORIZED_QUERIES_MIN - 1, topk.VECTORIZED_QUERIES_MIN, 70])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_merge_keeps_k_breaks_ties_by_source_then_rank(queries, metric):
    better, worse = (0.2, 0.8) if metric == "l2" else (0.8, 0.2)
    per_source = [
        [(["a1", "a2"], [better, worse], [b"a1", b"a2"])] * queries,
        [(["b1", "b2", "b3"], [better, better, worse], [b"b1", b"b2", b"b3"])] * queries,
        [([], [], [])] * queries,
    ]
    want = (["a1", "b1", "b2", "a2"], [better, better, better, worse], [b"a1", b"b1", b"b2", b"a2"])
    assert merge_top_k(metric, 4, per_source) == [want] * queries
    assert merge_top_k(metric, 1, per_source) == [(["a1"], [better], [b"a1"])] * queries
    # k above the number of hits: every hit once
    assert [len(ids) for ids, _, _ in merge_top_k(metric, 100, per_source)] == [5] * queries


@pytest.mark.parametrize("queries", [1, 12])
def test_infinite_scores_still_rank_and_payloads_default_to_empty(queries):
    inf = float("inf")
    per_source = [[(["hi", "lo"], [inf, -inf], [])] * queries, [(["mid"], [0.0], [])] * queries]
    assert merge_top_k("ip", 5, per_source) == [(["hi", "mid", "lo"], [inf, 0.0, -inf], [b""] * 3)] * queries
    assert merge_top_k("l2", 2, per_source) == [(["lo", "mid"], [-inf, 0.0], [b""] * 2)] * queries


def test_sources_with_no_hits_at_all_merge_to_empty_answers():
    per_source = [[([], [], [])] * 10, [([], [], [])] * 10]
    assert merge_top_k("cosine", 3, per_source) == [([], [], [])] * 10


def test_merge_plans_joins_distinct_plans_per_query_sorted():
    assert merge_plans([["hnsw", "", "exact"], ["hnsw", "exact,hnsw", ""]]) == ["hnsw", "exact,hnsw", "exact"]
    with pytest.raises(ValueError):  # every source must answer every query
        merge_plans([["hnsw"], ["hnsw", "exact"]])


@pytest.mark.parametrize("queries", [1, 12])
def test_a_worst_possible_score_in_a_later_source_still_sorts_before_the_padding(queries):
    # source 0 answers fewer hits than the widest source, so its row is padded; source 1's last
    # hit has the worst possible score (ip: -inf) and must still come out, and no padding may
    inf = float("inf")
    per_source = [[(["a"], [1.0], [])] * queries, [(["b", "c"], [0.5, -inf], [])] * queries]
    assert merge_top_k("ip", 5, per_source) == [(["a", "b", "c"], [1.0, 0.5, -inf], [b""] * 3)] * queries
    per_source = [[(["a"], [0.0], [])] * queries, [(["b", "c"], [0.5, inf], [])] * queries]
    assert merge_top_k("l2", 5, per_source) == [(["a", "b", "c"], [0.0, 0.5, inf], [b""] * 3)] * queries


def test_a_source_whose_ids_and_scores_disagree_in_length_is_refused():
    with pytest.raises(ValueError):
        merge_top_k("cosine", 3, [[(["a", "b"], [0.5], [])], [(["c"], [0.1], [])]])
    with pytest.raises(ValueError):
        merge_top_k("cosine", 3, [[(["a"], [0.5, 0.4], [])], [(["c"], [0.1], [])]])
