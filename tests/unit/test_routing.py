import heapq
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster import topk
from quartz_cluster.meta.schema import shard_of
from quartz_cluster.router.routing import cover, split_by_shard
from quartz_cluster.topk import merge_plans, merge_top_k


def test_shard_of_is_stable_and_spreads():
    # Fixed values: changing the hash would silently move every point of every collection.
    assert shard_of("doc-1", 4) == shard_of("doc-1", 4)
    counts = np.bincount([shard_of(f"p{i}", 8) for i in range(8000)], minlength=8)
    assert counts.min() > 800


@pytest.mark.parametrize(
    ("point_id", "expected"),
    [
        # xxhash64 (seed 0) of the UTF-8 id modulo 1, 2, 3, 4, 7, 16, 64 shards
        ("doc-1", [0, 0, 1, 2, 4, 10, 42]),
        ("a", [0, 1, 2, 3, 6, 11, 27]),
        ("é", [0, 0, 0, 0, 3, 8, 56]),
        ("p0", [0, 1, 1, 1, 1, 5, 37]),
        ("0", [0, 0, 2, 0, 1, 12, 44]),
        ("x" * 256, [0, 0, 0, 0, 0, 0, 16]),
    ],
)
def test_shard_of_is_pinned_to_xxhash64_of_the_utf8_id(point_id, expected):
    assert [shard_of(point_id, n) for n in (1, 2, 3, 4, 7, 16, 64)] == expected


def test_split_by_shard_pinned():
    # shard_of(x, 3) for a..h: 2, 0, 2, 2, 1, 1, 2, 2
    groups = split_by_shard(list("abcdefgh"), 3)
    assert {s: idx.tolist() for s, idx in groups.items()} == {0: [1], 1: [4, 5], 2: [0, 2, 3, 6, 7]}
    assert split_by_shard([], 4) == {}
    assert {s: i.tolist() for s, i in split_by_shard(["a", "b"], 1).items()} == {0: [0, 1]}


@given(ids=st.lists(st.text(min_size=1, max_size=8), unique=True, max_size=200), shards=st.integers(1, 16))
def test_split_by_shard_partitions_in_order(ids, shards):
    groups = split_by_shard(ids, shards)
    seen = np.concatenate(list(groups.values())) if groups else np.array([], dtype=np.int64)
    assert sorted(seen.tolist()) == list(range(len(ids)))
    for shard, idx in groups.items():
        assert list(idx) == sorted(idx)
        assert all(shard_of(ids[i], shards) == shard for i in idx)


def _shard_results(rng, metric, n_shards, n_queries, k):
    per_shard, truth = [], []
    for s in range(n_shards):
        rows = []
        for q in range(n_queries):
            n = int(rng.integers(0, k + 1))
            scores = np.sort(rng.random(n))
            scores = scores if metric == "l2" else scores[::-1]
            ids = [f"s{s}q{q}i{i}" for i in range(n)]
            rows.append((ids, scores.tolist(), [f'{{"id": "{x}"}}'.encode() for x in ids]))
            truth.extend((q, x, sc) for x, sc in zip(ids, scores.tolist(), strict=True))
        per_shard.append(rows)
    return per_shard, truth


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    metric=st.sampled_from(["cosine", "l2", "ip"]),
    shards=st.integers(1, 6),
    k=st.integers(1, 12),
)
def test_merge_top_k_keeps_the_best_with_their_own_payloads(seed, metric, shards, k):
    rng = np.random.default_rng(seed)
    per_shard, truth = _shard_results(rng, metric, shards, 3, k)
    merged = merge_top_k(metric, k, per_shard)
    for q, (ids, scores, payloads) in enumerate(merged):
        expected = sorted((t for t in truth if t[0] == q), key=lambda t: t[2], reverse=metric != "l2")[:k]
        assert scores == [t[2] for t in expected]
        assert len(ids) == len(expected)
        # every hit carries its own payload, not another shard's
        assert payloads == [f'{{"id": "{x}"}}'.encode() for x in ids]


def test_merge_plans_lists_each_plan_once():
    assert merge_plans([["hnsw", "exact"], ["hnsw", "hnsw,exact"]]) == ["hnsw", "exact,hnsw"]
    assert merge_plans([]) == []


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    nodes=st.integers(1, 6),
    shards=st.integers(1, 12),
    rf=st.integers(1, 3),
)
def test_cover_reads_every_shard_once_from_a_node_holding_it(seed, nodes, shards, rf):
    rng = random.Random(seed)
    names = [f"n{i}" for i in range(nodes)]
    holders = {s: rng.sample(names, min(rf, nodes)) for s in range(shards)}
    groups = cover(holders, rng)
    assigned = [s for _, group in groups for s in group]
    assert sorted(assigned) == list(range(shards))
    assert all(node in holders[s] for node, group in groups for s in group)
    assert len({node for node, _ in groups}) == len(groups)  # one call per node at most


def test_cover_three_shards_two_replicas_on_three_nodes_takes_two_calls_and_spreads():
    # the layout of the benchmark cluster: every node holds two of the three shards
    holders = {0: ["a", "b"], 1: ["b", "c"], 2: ["c", "a"]}
    rng = random.Random(7)
    used = {"a": 0, "b": 0, "c": 0}
    for _ in range(300):
        groups = cover(holders, rng)
        assert len(groups) == 2
        for node, _ in groups:
            used[node] += 1
    assert min(used.values()) > 150  # every replica takes a share of the reads


def test_cover_calls_the_node_holding_most_shards_first():
    # a holds every shard: one call, whatever the random ties would choose
    holders = {0: ["b", "a"], 1: ["a", "c"], 2: ["a"], 3: ["c", "a", "b"]}
    for seed in range(20):
        assert cover(holders, random.Random(seed)) == [("a", [0, 1, 2, 3])]
    # c holds three of four shards, b two: c first, then the shard only b holds
    holders = {0: ["b", "c"], 1: ["c"], 2: ["c"], 3: ["b"]}
    for seed in range(20):
        assert cover(holders, random.Random(seed)) == [("c", [0, 1, 2]), ("b", [3])]


def test_cover_of_nothing_is_no_call():
    assert cover({}, random.Random(0)) == []


def test_cover_refuses_a_shard_nobody_holds():
    with pytest.raises(ValueError, match="no node"):
        cover({0: ["a"], 1: []}, random.Random(0))


def _reference_merge(metric, k, per_source):
    """The obvious merge: every candidate into a heap, ties by source then rank."""
    sign = 1.0 if metric == "l2" else -1.0
    out = []
    for q in range(len(per_source[0])):
        cands = [
            (sign * sc, s, i, pid, sc, src[q][2][i] if src[q][2] else b"")
            for s, src in enumerate(per_source)
            for i, (pid, sc) in enumerate(zip(src[q][0], src[q][1], strict=True))
        ]
        best = heapq.nsmallest(k, cands)
        out.append(([b[3] for b in best], [b[4] for b in best], [b[5] for b in best]))
    return out


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    metric=st.sampled_from(["cosine", "l2", "ip"]),
    sources=st.integers(2, 5),
    queries=st.integers(1, 12),  # both sides of VECTORIZED_QUERIES_MIN
    k=st.integers(1, 12),
    with_payloads=st.booleans(),
)
def test_merge_top_k_equals_a_heap_merge_ties_and_all(data, metric, sources, queries, k, with_payloads):
    # scores from a small set so that ties across sources are common
    score = st.sampled_from([-1.5, 0.0, 0.25, 0.5, 0.5, 1.0, float(np.float32(0.1))])
    per_source = []
    for s in range(sources):
        rows = []
        for q in range(queries):
            scores = sorted(data.draw(st.lists(score, max_size=k)), reverse=metric != "l2")
            ids = [f"s{s}q{q}i{i}" for i in range(len(scores))]
            rows.append((ids, scores, [x.encode() for x in ids] if with_payloads else []))
        per_source.append(rows)
    assert merge_top_k(metric, k, per_source) == _reference_merge(metric, k, per_source)


def _random_sources(rng, metric, sources, queries, k):
    per_source = []
    for s in range(sources):
        rows = []
        for q in range(queries):
            scores = sorted(rng.choice([0.0, 0.25, 0.5, 1.0], size=int(rng.integers(0, k + 1))).tolist())
            scores = scores if metric == "l2" else scores[::-1]
            rows.append(([f"s{s}q{q}i{i}" for i in range(len(scores))], scores, []))
        per_source.append(rows)
    return per_source


def test_merge_in_bounded_blocks_equals_one_merge(monkeypatch):
    rng = np.random.default_rng(3)
    per_source = _random_sources(rng, "cosine", 3, 40, 10)
    whole = merge_top_k("cosine", 10, per_source)
    monkeypatch.setattr(topk, "MERGE_CHUNK_QUERIES", 7)  # 6 blocks, the last one short
    assert merge_top_k("cosine", 10, per_source) == whole == _reference_merge("cosine", 10, per_source)


@pytest.mark.parametrize("queries", [1, 20])  # the heap and the numpy merge alike
def test_a_nan_score_is_no_hit(queries):
    nan = float("nan")
    per_source = [
        [(["a", "b"], [0.9, nan], [])] * queries,
        [(["c"], [0.5], [])] * queries,
    ]
    assert merge_top_k("cosine", 10, per_source) == [(["a", "c"], [0.9, 0.5], [b"", b""])] * queries
