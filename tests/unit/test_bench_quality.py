"""The benchmark's quality measures and filter choice (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quartz_cluster.bench.harness import pick_filters, recall_ndcg
from quartz_cluster.datasets import Dataset


def test_recall_and_ndcg():
    truth = [["a", "b"], ["c", "d"]]
    assert recall_ndcg([["a", "b"], ["c", "d"]], truth, k=2) == (1.0, 1.0)
    recall, ndcg = recall_ndcg([["b", "x"], ["x", "y"]], truth, k=2)
    assert recall == 0.25  # one of two, then none of two
    assert ndcg == pytest.approx((1 / (1 + 1 / math.log2(3))) / 2)  # the hit at rank 1 of 2
    # a hit ranked lower is worth less in ndcg, the same in recall
    assert recall_ndcg([["x", "a"]], [["a", "b"]], k=2)[1] < recall_ndcg([["a", "x"]], [["a", "b"]], k=2)[1]


def test_pick_filters_by_selectivity():
    payloads = [
        {"kind": "rare" if i < 10 else "common", "site": i % 2 == 0, "text": "t"} for i in range(1000)
    ]
    ds = Dataset("t", "cosine", np.zeros((1000, 2), np.float32), np.zeros((1, 2), np.float32), payloads)
    picked = pick_filters(ds, targets=(0.01, 0.5))
    assert [(f["key"], f["value"], f["selectivity"]) for f in picked] == [
        ("kind", "rare", 0.01),
        ("site", True, 0.5),
    ]
