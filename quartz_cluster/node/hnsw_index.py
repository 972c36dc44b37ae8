"""The HNSW graph of one shard replica (hnswlib), with explicit labels chosen by the shard.

Labels are dense integers the shard assigns and records in its log, so replay rebuilds the
same graph. A deleted label stays in the graph marked deleted until the shard reuses it for
a new point (hnswlib unmarks and overwrites it), which keeps the graph from growing with
churn. Capacity doubles on demand: there is no fixed maximum.

Not thread-safe by itself: the shard serialises mutations against searches (TaggedRWLock).
"""

from __future__ import annotations

import os

import hnswlib
import numpy as np

from quartz_cluster import limits

_SPACE = {"cosine": "cosine", "l2": "l2", "ip": "ip"}


def scores_from_distances(metric: str, distances: np.ndarray) -> np.ndarray:
    """hnswlib distances -> user-facing scores. cosine/ip: similarity (higher is better);
    l2: euclidean distance (lower is better; hnswlib reports it squared)."""
    if metric == "l2":
        return np.sqrt(np.maximum(distances, 0.0))
    return 1.0 - distances


def exact_scores(metric: str, vectors: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """(n_queries, n_vectors) scores by brute force, comparable with scores_from_distances.
    For cosine, `vectors` must already be unit length (hnswlib stores them normalised)."""
    if metric == "cosine":
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        return (queries / np.where(norms == 0, 1, norms)) @ vectors.T
    if metric == "ip":
        return queries @ vectors.T
    sq = (queries**2).sum(1)[:, None] - 2 * queries @ vectors.T + (vectors**2).sum(1)[None, :]
    return np.sqrt(np.maximum(sq, 0.0))


def best_first(metric: str, scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores per row, best first."""
    k = min(k, scores.shape[1])
    keyed = scores if metric == "l2" else -scores
    part = np.argpartition(keyed, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(keyed, part, 1).argsort(axis=1, kind="stable")
    return np.take_along_axis(part, order, 1)


class HnswIndex:
    def __init__(self, dim: int, metric: str, m: int, ef_construction: int, threads: int) -> None:
        self.dim, self.metric, self.m, self.ef_construction = dim, metric, m, ef_construction
        self.threads = threads
        self.index = hnswlib.Index(space=_SPACE[metric], dim=dim)

    def init_empty(self, capacity: int = limits.INITIAL_CAPACITY) -> None:
        self.index.init_index(max_elements=capacity, M=self.m, ef_construction=self.ef_construction)

    def load(self, path: str, capacity: int) -> None:
        self.index.load_index(path, max_elements=capacity)

    def save(self, path: str) -> None:
        """Write to `path` durably: a temp file, fsync, rename, fsync the directory."""
        tmp = path + ".tmp"
        self.index.save_index(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path))

    @property
    def capacity(self) -> int:
        return self.index.get_max_elements()

    def set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    def ensure_capacity(self, labels_end: int) -> int:
        """Grow (doubling) so labels below `labels_end` fit. Returns the capacity."""
        cap = self.capacity
        if labels_end > cap:
            while cap < labels_end:
                cap *= 2
            self.index.resize_index(cap)
        return cap

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        if len(labels):
            self.index.add_items(vectors, labels, num_threads=self.threads)

    def delete(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self.index.mark_deleted(label)

    def search(self, queries: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = self.index.knn_query(queries, k=k, num_threads=threads)
        return labels.astype(np.int64), scores_from_distances(self.metric, distances)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        if len(labels) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return np.asarray(self.index.get_items(labels, return_type="numpy"), dtype=np.float32)

    def bytes_estimate(self) -> int:
        """Memory hnswlib allocates: per slot the vector, level-0 links and bookkeeping."""
        per_slot = self.dim * 4 + self.m * 2 * 4 + 4 + 8 + 8
        return self.capacity * per_slot


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
