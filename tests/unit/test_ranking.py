import numpy as np

from quartz_cluster.datasets import exact_knn
from quartz_cluster.node.hnsw_index import best_first, exact_scores


def test_best_first_orders_by_metric():
    scores = np.array([[0.1, 0.9, 0.5, 0.7]])
    assert best_first("cosine", scores, 3).tolist() == [[1, 3, 2]]
    assert best_first("l2", scores, 3).tolist() == [[0, 2, 3]]
    assert best_first("ip", scores, 10).tolist() == [[1, 3, 2, 0]]  # k larger than candidates


def test_exact_scores_agree_with_reference_knn():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    for metric in ("l2", "ip"):
        got = best_first(metric, exact_scores(metric, base, queries), 5)
        assert (got == exact_knn(base, queries, 5, metric)).all()
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    got = best_first("cosine", exact_scores("cosine", unit, queries), 5)
    assert (got == exact_knn(base, queries, 5, "cosine")).all()
