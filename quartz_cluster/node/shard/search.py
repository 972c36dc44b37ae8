"""Search over a shard replica's state: the graph, the graph with a filter, or brute force over
filter candidates, chosen by the filter plan (ADR 3). Blocking: called from a worker thread."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from quartz_cluster import filters, limits
from quartz_cluster.node.filter_plan import EXACT, filter_plan
from quartz_cluster.node.hnsw_index import best_first, exact_scores, scores_from_distances
from quartz_cluster.node.shard.state import IndexState
from quartz_cluster.node.shard.storage import ShardStore
from quartz_cluster.validation import ReplyBudget


@dataclass(slots=True)
class SearchHits:
    ids: list[str]
    scores: list[float]
    payloads: list[bytes]
    plan: str


def search(
    state: IndexState,
    store: ShardStore,
    queries: np.ndarray,
    k: int,
    ef: int,
    flt: filters.Filter | None,
    with_payload: bool,
) -> list[SearchHits]:
    """Top-k per query, best first (payloads only when asked: a node searching several shards
    asks for none and attaches the winners' after the merge, `attach_payloads`)."""
    ef = max(ef or state.spec.ef, k)
    with state.lock.shared(ef):
        labels, scores, plan = _search_labels(state, queries, k, flt)
        ids = state.ids_by_label[labels].tolist()  # one fancy index for the whole batch
    need_payloads = with_payload or flt is not None
    if not need_payloads:  # nothing to re-check: hnswlib never returns a deleted label
        return [SearchHits(row, sc, [], plan) for row, sc in zip(ids, scores.tolist(), strict=True)]
    unique = list({pid for row in ids for pid in row})
    blobs = dict(zip(unique, store.payloads(unique), strict=True)) if unique else {}
    out = []
    for row_ids, row_scores in zip(ids, scores, strict=True):
        hits = SearchHits([], [], [], plan)
        for pid, score in zip(row_ids, row_scores.tolist(), strict=True):
            blob = blobs.get(pid)
            if blob is None:
                continue  # deleted after the graph search: not a hit any more
            if flt is not None and not filters.matches(flt, orjson.loads(blob) if blob else {}):
                continue  # a hashed long string collided, or the payload just changed
            hits.ids.append(pid)
            hits.scores.append(score)
            if with_payload:
                hits.payloads.append(blob)
        out.append(hits)
    return out


def attach_payloads(
    stores: list[ShardStore], per_shard: list[list[SearchHits]], merged: list, budget: ReplyBudget
) -> list[tuple[list[str], list[float], list[bytes]]]:
    """The merged top-k of several shards (per query: ids, scores, no payloads) with the winners'
    payloads, read from the shard each came from, PAYLOAD_FETCH_IDS at a time, within `budget`
    (the reply is refused, RESOURCE_EXHAUSTED, before it is built beyond it). A hit whose point
    was deleted since the graph search is dropped, as `search` drops it."""
    owner = {pid: i for i, hits in enumerate(per_shard) for row in hits for pid in row.ids}
    wanted: dict[int, list[str]] = {}
    for ids, _, _ in merged:
        for pid in ids:
            wanted.setdefault(owner[pid], []).append(pid)
    blobs: dict[str, bytes | None] = {}
    distinct_bytes = 0  # a lower bound of the reply's bytes: stop reading once it is over
    for i, ids in wanted.items():
        unique = list(dict.fromkeys(ids))
        for at in range(0, len(unique), limits.PAYLOAD_FETCH_IDS):
            chunk = unique[at : at + limits.PAYLOAD_FETCH_IDS]
            got = stores[i].payloads(chunk)
            distinct_bytes += sum(len(b) for b in got if b)
            budget.check(distinct_bytes)
            blobs.update(zip(chunk, got, strict=True))
    out = []
    for ids, scores, _ in merged:
        keep = [
            (pid, score, blobs[pid]) for pid, score in zip(ids, scores, strict=True) if blobs[pid] is not None
        ]
        budget.take(sum(len(b) for _, _, b in keep))
        out.append(([p for p, _, _ in keep], [s for _, s, _ in keep], [b for _, _, b in keep]))
    return out


def _search_labels(
    state: IndexState, queries: np.ndarray, k: int, flt: filters.Filter | None
) -> tuple[np.ndarray, np.ndarray, str]:
    n_labels, live = state.next_label, len(state.label_of)
    empty = (np.empty((len(queries), 0), dtype=np.int64), np.empty((len(queries), 0)), "empty")
    if live == 0:
        return empty
    threads = min(state.options.threads, len(queries))
    if flt is None:
        try:
            labels, scores = state.hnsw.search(queries, min(k, live), threads)
            return labels, scores, "hnsw"
        except RuntimeError:  # hnswlib found fewer than k (many deletions): answer exactly
            return _exact(state, queries, np.flatnonzero(state.payload_index.live[:n_labels]), k)
    mask = state.payload_index.mask(flt, n_labels)
    candidates = np.flatnonzero(mask)
    if len(candidates) == 0:
        return empty
    if filter_plan(len(candidates), live) == EXACT:
        return _exact(state, queries, candidates, k)
    allowed = mask.tobytes()
    try:
        labels, dist = state.hnsw.index.knn_query(
            queries,
            k=min(k, len(candidates)),
            num_threads=threads,
            filter=lambda label: allowed[label] == 1,
        )
    except RuntimeError:
        return _exact(state, queries, candidates, k)
    return labels.astype(np.int64), scores_from_distances(state.spec.metric, dist), "hnsw-filtered"


def _exact(
    state: IndexState, queries: np.ndarray, candidates: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Brute force over candidates, in chunks so memory stays bounded however many there are."""
    metric = state.spec.metric
    chunk = limits.EXACT_CHUNK_ROWS
    best_labels = np.empty((len(queries), 0), dtype=np.int64)
    best_scores = np.empty((len(queries), 0), dtype=np.float32)
    for start in range(0, len(candidates), chunk):
        part = candidates[start : start + chunk]
        scores = exact_scores(metric, state.hnsw.vectors(part), queries)
        labels = np.broadcast_to(part, scores.shape)
        if best_labels.shape[1]:
            scores = np.concatenate([best_scores, scores], axis=1)
            labels = np.concatenate([best_labels, labels], axis=1)
        top = best_first(metric, scores, k)
        best_labels = np.take_along_axis(labels, top, 1)
        best_scores = np.take_along_axis(scores, top, 1)
    return best_labels, best_scores, "exact"
