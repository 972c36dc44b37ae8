import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from quartz_cluster.meta.schema import shard_of
from quartz_cluster.router.routing import merge_top_k, split_by_shard


def test_shard_of_is_stable_and_spreads():
    # A fixed value: changing the hash would silently move every point of every collection.
    assert shard_of("doc-1", 4) == shard_of("doc-1", 4)
    counts = np.bincount([shard_of(f"p{i}", 8) for i in range(8000)], minlength=8)
    assert counts.min() > 800


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
