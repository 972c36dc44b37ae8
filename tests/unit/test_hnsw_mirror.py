"""The vector mirror exact search reads: what was added (normalised for cosine), kept through
growth, label reuse and a checkpoint round trip, and rebuilt from hnswlib for a checkpoint
written before the mirror existed."""

from __future__ import annotations

import os

import numpy as np
import pytest

from quartz_cluster.node.hnsw_index import HnswIndex


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_mirror_holds_what_hnswlib_holds(tmp_path, metric):
    rng = np.random.default_rng(0)
    idx = HnswIndex(8, metric, 8, 50, 1)
    idx.init_empty(4)
    a = rng.normal(size=(10, 8)).astype(np.float32)
    idx.ensure_capacity(10)  # grows past the initial 4: the mirror grows with the index
    idx.add(a, np.arange(10))
    expect = unit(a) if metric == "cosine" else a
    assert np.allclose(idx.vectors(np.array([3, 0, 9])), expect[[3, 0, 9]], atol=1e-6)
    hnsw_copy = np.asarray(idx.index.get_items(np.arange(10), return_type="numpy"))
    assert np.allclose(idx.vectors(np.arange(10)), hnsw_copy, atol=1e-6)
    b = rng.normal(size=(1, 8)).astype(np.float32)
    idx.add(b, np.array([4]))  # a reused label
    assert np.allclose(idx.vectors(np.array([4]))[0], (unit(b) if metric == "cosine" else b)[0], atol=1e-6)

    path = str(tmp_path / "ckpt.hnsw")
    idx.save(path)
    again = HnswIndex(8, metric, 8, 50, 1)
    again.load(path, capacity=idx.capacity)
    assert np.array_equal(again.vectors(np.arange(10)), idx.vectors(np.arange(10)))

    idx.delete(np.array([7]))  # hnswlib refuses get_items of a deleted label
    idx.save(path)
    os.remove(path + ".vec.npy")  # as written before the mirror existed
    old = HnswIndex(8, metric, 8, 50, 1)
    old.load(path, capacity=idx.capacity)
    live = np.array([i for i in range(10) if i != 7])
    assert np.allclose(old.vectors(live), idx.vectors(live), atol=1e-6)
    old.add(b, np.array([10]))  # and it keeps working
    assert old.labels_end == 11
