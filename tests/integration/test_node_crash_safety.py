"""SIGKILL a node while it ingests, many times, at varied moments (mid-batch, mid-checkpoint,
right after start). After every restart each acknowledged write must be there exactly, and
searching a point's own vector must find it first (invariant 3 of DESIGN §5)."""

from __future__ import annotations

import random
import threading
import time

import grpc
import numpy as np
import pytest

pytestmark = pytest.mark.integration

DIM = 24
KILLS = 24
COLL = "crash"


class Model:
    """What the node must hold: id -> (vector, payload) for every acknowledged write; ids of
    an unacknowledged (in-flight at the kill) batch may hold either their old or new state."""

    def __init__(self) -> None:
        self.points: dict[str, tuple[np.ndarray, dict]] = {}
        self.uncertain: dict[str, list[tuple[np.ndarray, dict] | None]] = {}


def writer(
    client,
    model: Model,
    rng: random.Random,
    nprng: np.random.Generator,
    stop: threading.Event,
    counter: list[int],
) -> None:
    while not stop.is_set():
        n = rng.choice([1, 5, 50, 200])
        existing = list(model.points)
        kind = rng.random()
        deletes: list[str] = []
        if kind < 0.15 and len(existing) > 100:
            ids = rng.sample(existing, min(n, 50))  # update in place
        else:
            ids = [f"p{counter[0] + i}" for i in range(n)]
            counter[0] += n
        if 0.15 <= kind < 0.3 and len(existing) > 100:
            deletes = rng.sample([e for e in existing if e not in set(ids)], 20)
        vecs = nprng.normal(size=(len(ids), DIM)).astype(np.float32)
        payloads = [{"v": rng.randrange(10**9), "id": pid} for pid in ids]
        before = {pid: model.points.get(pid) for pid in ids + deletes}
        after = {pid: (vecs[i], payloads[i]) for i, pid in enumerate(ids)} | dict.fromkeys(deletes)
        try:
            client.upsert(COLL, 0, ids, vecs, payloads, delete_ids=deletes)
        except grpc.RpcError:
            for pid in ids + deletes:
                model.uncertain[pid] = [before[pid], after[pid]]
            return
        for pid, state in after.items():
            if state is None:
                model.points.pop(pid, None)
            else:
                model.points[pid] = state


def resolve_and_verify(client, model: Model) -> None:
    # In-flight batches: each id must be in its old or its new state; adopt what is there.
    if model.uncertain:
        got = client.get(COLL, 0, list(model.uncertain))
        for pid, options in model.uncertain.items():
            actual = got.get(pid)
            ok = [
                o
                for o in options
                if (o is None and actual is None)
                or (
                    o is not None
                    and actual is not None
                    and np.array_equal(o[0], actual[0])
                    and o[1] == actual[1]
                )
            ]
            assert ok, f"{pid}: state after crash is neither before nor after its in-flight batch"
            if actual is None:
                model.points.pop(pid, None)
            else:
                model.points[pid] = (actual[0], actual[1])
        model.uncertain.clear()

    ids = list(model.points)
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        got = client.get(COLL, 0, chunk)
        missing = [pid for pid in chunk if pid not in got]
        assert not missing, f"{len(missing)} acknowledged ids lost, e.g. {missing[:3]}"
        for pid in chunk:
            vec, payload = got[pid]
            assert np.array_equal(vec, model.points[pid][0]), f"{pid}: vector differs"
            assert payload == model.points[pid][1], f"{pid}: payload differs"
    assert client.stats(COLL, 0).count == len(ids)

    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        queries = np.stack([model.points[pid][0] for pid in chunk])
        hits = client.search(COLL, 0, queries, k=3, ef=128)
        wrong = [pid for pid, h in zip(chunk, hits, strict=True) if not h or h[0].id != pid]
        assert not wrong, f"{len(wrong)} points do not find themselves first, e.g. {wrong[:3]}"


def test_sigkill_during_ingest_loses_no_acknowledged_write(node_factory):
    rng = random.Random(1234)
    nprng = np.random.default_rng(1234)
    # Frequent checkpoints so kills also land during checkpoint writes and log trimming.
    proc, client = node_factory("n1", ["--checkpoint-every", "700"])
    client.create_shard(COLL, 0, DIM, "cosine", m=16, ef_construction=100)
    model, counter = Model(), [0]
    for _kill in range(KILLS):
        stop = threading.Event()
        t = threading.Thread(target=writer, args=(client, model, rng, nprng, stop, counter))
        t.start()
        # Varied moments: immediately, mid-stream, or after several checkpoints.
        time.sleep(rng.choice([0.0, 0.01, 0.05, 0.15, 0.3, 0.6]))
        proc.kill()
        stop.set()
        t.join(30)
        assert not t.is_alive()
        proc.start()
        client.reconnect(proc.address)
        resolve_and_verify(client, model)
    assert len(model.points) > 1000, "the test wrote too little to mean anything"
