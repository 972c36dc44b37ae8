"""The HNSW graph of one shard replica (hnswlib), with explicit labels chosen by the shard.

Labels are dense integers the shard assigns and records in its log, so replay rebuilds the
same graph. A deleted label stays in the graph marked deleted until the shard reuses it for
a new point (hnswlib unmarks and overwrites it), which keeps the graph from growing with
churn. Capacity doubles on demand: there is no fixed maximum.

A copy of every vector is also kept in a plain float32 matrix indexed by label (`mirror`,
normalised for cosine like hnswlib's own): exact search over filter candidates gathers rows from
it with numpy. hnswlib's `get_items` copies vector by vector (about 50 us each: 265 ms for
5,400 candidates), which made selective filters 100x slower than their arithmetic. The mirror
costs dim x 4 bytes per point and is saved next to each checkpoint (`<ckpt>.hnsw.vec.npy`).

Not thread-safe by itself: the shard serialises mutations against searches (TaggedRWLock).
"""

from __future__ import annotations

import logging
import os

import hnswlib
import numpy as np

from quartz_cluster import limits

_SPACE = {"cosine": "cosine", "l2": "l2", "ip": "ip"}
MIRROR_FILL_CHUNK = 10_000  # labels per get_items call when a checkpoint has no mirror file
log = logging.getLogger("quartz.node.hnsw")


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
        self.mirror = np.zeros((0, dim), dtype=np.float32)
        self.labels_end = 0  # one past the highest label ever added

    def init_empty(self, capacity: int = limits.INITIAL_CAPACITY) -> None:
        self.index.init_index(max_elements=capacity, M=self.m, ef_construction=self.ef_construction)
        self.mirror = np.zeros((capacity, self.dim), dtype=np.float32)

    def load(self, path: str, capacity: int) -> None:
        self.index.load_index(path, max_elements=capacity)
        self.mirror = np.zeros((self.capacity, self.dim), dtype=np.float32)
        try:
            saved = np.load(path + ".vec.npy")
        except (OSError, ValueError):  # a checkpoint from before the mirror: copy out of hnswlib
            log.info("filling the vector mirror from the index", extra={"path": path})
            labels = np.asarray(self.index.get_ids_list(), dtype=np.int64)
            for start in range(0, len(labels), MIRROR_FILL_CHUNK):
                part = labels[start : start + MIRROR_FILL_CHUNK]
                try:
                    self.mirror[part] = np.asarray(self.index.get_items(part, return_type="numpy"))
                except RuntimeError:  # a deleted label in the chunk: hnswlib refuses it, go one by one
                    for label in part.tolist():
                        try:
                            self.mirror[label] = self.index.get_items([label], return_type="numpy")[0]
                        except RuntimeError:
                            pass  # deleted: never a candidate
            self.labels_end = int(labels.max()) + 1 if len(labels) else 0
            return
        self.mirror[: len(saved)] = saved
        self.labels_end = len(saved)

    def save(self, path: str) -> None:
        """Write the graph and the mirror durably: temp files, fsync, rename, fsync the directory."""
        tmp = path + ".tmp"
        self.index.save_index(tmp)
        fsync_path(tmp)
        with open(path + ".vec.tmp", "wb") as f:
            np.save(f, self.mirror[: self.labels_end], allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".vec.tmp", path + ".vec.npy")
        os.replace(tmp, path)
        fsync_path(os.path.dirname(path))

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
        if len(self.mirror) < cap:
            grown = np.zeros((cap, self.dim), dtype=np.float32)
            grown[: len(self.mirror)] = self.mirror
            self.mirror = grown
        return cap

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        if len(labels):
            self.index.add_items(vectors, labels, num_threads=self.threads)
            if self.metric == "cosine":
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.where(norms == 0, 1, norms)
            self.mirror[labels] = vectors
            self.labels_end = max(self.labels_end, int(labels.max()) + 1)

    def delete(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self.index.mark_deleted(label)

    def search(self, queries: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = self.index.knn_query(queries, k=k, num_threads=threads)
        return labels.astype(np.int64), scores_from_distances(self.metric, distances)

    def vectors(self, labels: np.ndarray) -> np.ndarray:
        """The stored vectors of these labels (normalised for cosine), from the mirror."""
        return self.mirror[labels]

    def bytes_estimate(self) -> int:
        """Memory hnswlib allocates per slot (the vector, level-0 links, bookkeeping) plus the mirror."""
        per_slot = self.dim * 4 + self.m * 2 * 4 + 4 + 8 + 8
        return self.capacity * (per_slot + self.dim * 4)


def fsync_path(path: str) -> None:
    """fsync a file or a directory (a rename is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
