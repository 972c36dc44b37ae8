"""Datasets for demos, tests and benchmarks: the real pydocs-minilm-384 set from shared/data
when present, or generated clustered vectors with payloads. Plus exact ground truth."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

PYDOCS = "pydocs-minilm-384"
PKGS = [f"pkg{i:02d}" for i in range(40)]
KINDS = ["function", "class", "module"]


@dataclass
class Dataset:
    name: str
    metric: str
    base: np.ndarray  # (n, dim) float32
    queries: np.ndarray  # (q, dim) float32
    payloads: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    gt_ids: np.ndarray | None = None  # (q, >=k) row numbers into base, best first
    query_payloads: list[dict] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.base.shape[1]


def shared_data_dir() -> Path | None:
    """../shared/data relative to the repository (or $QUARTZ_SHARED_DATA), if it holds pydocs."""
    env = os.environ.get("QUARTZ_SHARED_DATA")
    candidates = [Path(env)] if env else []
    repo = Path(__file__).resolve().parent.parent
    candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for cand in candidates:
        if (cand / PYDOCS / "base.f16.npy").exists():
            return cand
    return None


def load_pydocs(data_dir: Path, rows: int | None = None, with_text: bool = True) -> Dataset:
    """The real 384-d MiniLM set. With `rows`, the first `rows` base vectors; ground truth is
    then recomputed exactly for that subset (the shipped one covers all 60k)."""
    d = data_dir / PYDOCS
    base = np.load(d / "base.f16.npy").astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = np.load(d / "queries.npy").astype(np.float32)
    payloads = []
    with open(d / "payloads.jsonl", "rb") as f:
        for i, line in enumerate(f):
            if rows is not None and i >= rows:
                break
            p = orjson.loads(line)
            if not with_text:
                p.pop("text", None)
            payloads.append(p)
    with open(d / "queries.jsonl", "rb") as f:
        query_payloads = [orjson.loads(line) for line in f]
    if rows is not None and rows < len(base):
        base = base[:rows]
        gt = exact_knn(base, queries, 100, "cosine")
    else:
        gt = np.load(d / "gt_ids.npy")
    ids = [p.pop("id") for p in payloads]
    return Dataset(PYDOCS, "cosine", base, queries, payloads, ids, gt, query_payloads)


def generate_clustered(
    n: int, dim: int = 64, n_queries: int = 200, clusters: int = 32, seed: int = 0, metric: str = "cosine"
) -> Dataset:
    """Gaussian clusters (like real embeddings, unlike uniform noise) with payloads:
    `bucket` int uniform in [0, 1000) for range filters of any selectivity, `pkg` skewed
    categorical, `kind` categorical, `site` bool, `tags` a list."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim)).astype(np.float32)
    which = rng.integers(0, clusters, size=n + n_queries)
    pts = centers[which] + 0.35 * rng.normal(size=(n + n_queries, dim)).astype(np.float32)
    if metric == "cosine":
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    base, queries = pts[:n].astype(np.float32), pts[n:].astype(np.float32)
    pkg_p = 1.0 / np.arange(1, len(PKGS) + 1)
    pkg_p /= pkg_p.sum()
    pkgs = rng.choice(len(PKGS), size=n, p=pkg_p)
    buckets = rng.integers(0, 1000, size=n)
    kinds = rng.integers(0, len(KINDS), size=n)
    payloads = [
        {
            "bucket": int(b),
            "pkg": PKGS[p],
            "kind": KINDS[k],
            "site": bool(b % 2),
            "tags": [f"t{b % 7}", f"t{b % 11}"],
        }
        for b, p, k in zip(buckets.tolist(), pkgs.tolist(), kinds.tolist(), strict=True)
    ]
    ids = [f"g{i}" for i in range(n)]
    gt = exact_knn(base, queries, 100, metric)
    return Dataset(f"clustered-{n}x{dim}", metric, base, queries, payloads, ids, gt)


def exact_knn(
    base: np.ndarray, queries: np.ndarray, k: int, metric: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """Exact top-k row numbers per query (best first), optionally among rows where mask is True.
    Rows beyond the number of candidates are -1."""
    cand = np.arange(len(base)) if mask is None else np.flatnonzero(mask)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    if len(cand) == 0:
        return out
    vecs = base[cand]
    for start in range(0, len(queries), 256):
        q = queries[start : start + 256]
        if metric == "l2":
            keyed = (q**2).sum(1)[:, None] - 2 * q @ vecs.T + (vecs**2).sum(1)[None, :]
        elif metric == "cosine":
            qn = q / np.linalg.norm(q, axis=1, keepdims=True)
            vn = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
            keyed = -(qn @ vn.T)
        else:
            keyed = -(q @ vecs.T)
        kk = min(k, len(cand))
        part = np.argpartition(keyed, kk - 1, axis=1)[:, :kk]
        order = np.take_along_axis(keyed, part, 1).argsort(axis=1, kind="stable")
        out[start : start + len(q), :kk] = cand[np.take_along_axis(part, order, 1)]
    return out


def recall_at_k(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    """Mean |found[:k] ∩ truth[:k]| / |truth[:k]| over queries (truth rows of -1 ignored)."""
    total, hit = 0, 0
    for row, exact in zip(found, truth, strict=True):
        want = {int(x) for x in exact[:k] if x >= 0}
        total += len(want)
        hit += len(want.intersection(row[:k]))
    return hit / total if total else 1.0
