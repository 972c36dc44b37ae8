"""Concurrent writers (unique ids, majority writes) and readers (searches, strong and eventual
gets), each recording every operation to the shared history."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import QuartzError

WRITE_BATCH = 5
READ_KINDS = ("search", "get-eventual", "get-strong")
CLIENT_TIMEOUT_S = 10.0


@dataclass
class History:
    """Every operation and fault, with times relative to the run's start. Thread-safe."""

    start: float = field(default_factory=time.monotonic)
    events: list[dict] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # every attempted id
    acked: set[str] = field(default_factory=set)
    read_ids: set[str] = field(default_factory=set)
    result_lists: list[list[str]] = field(default_factory=list)
    strong_read_misses: list[str] = field(default_factory=list)  # acked ids a strong read did not return
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.start

    def add(self, event: dict) -> None:
        with self.lock:
            self.events.append(event)


class Workload:
    def __init__(
        self,
        router: str,
        api_key: str | None,
        collection: str,
        dim: int,
        history: History,
        seed: int,
        writers: int = 2,
        readers: tuple[str, ...] = READ_KINDS,
    ) -> None:
        self.router, self.collection, self.dim, self.h = router, collection, dim, history
        self.api_key = api_key  # the cluster's key (None: a --no-auth cluster)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._writer, args=(i, seed), daemon=True) for i in range(writers)
        ]
        # one thread per kind of read: a strong read waiting out a failover must not hold up eventual ones
        self.threads += [
            threading.Thread(target=self._reader, args=(i, kind, seed), daemon=True)
            for i, kind in enumerate(readers)
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def halt(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT_S * 3)

    def _writer(self, w: int, seed: int) -> None:
        rng = np.random.default_rng(seed * 1000 + w)
        with QuartzClient(self.router, api_key=self.api_key, timeout=CLIENT_TIMEOUT_S) as c:
            n = 0
            while not self.stop.is_set():
                ids = [f"w{w}-{n}-{j}" for j in range(WRITE_BATCH)]
                vecs = rng.normal(size=(WRITE_BATCH, self.dim)).astype(np.float32)
                with self.h.lock:
                    self.h.vectors.update(zip(ids, vecs, strict=True))
                t0 = self.h.now()
                try:
                    c.upsert(
                        self.collection,
                        ids,
                        vecs,
                        [{"w": w, "n": n}] * WRITE_BATCH,
                        write_consistency="majority",
                    )
                    ok, err = True, None
                    with self.h.lock:
                        self.h.acked.update(ids)
                except QuartzError as exc:
                    ok, err = False, exc.code
                self.h.add(
                    {"type": "write", "t0": t0, "t1": self.h.now(), "ok": ok, "error": err, "ids": ids}
                )
                n += 1

    def _reader(self, r: int, kind: str, seed: int) -> None:
        rng = random.Random(seed * 7919 + r)
        with QuartzClient(self.router, api_key=self.api_key, timeout=CLIENT_TIMEOUT_S) as c:
            while not self.stop.is_set():
                with self.h.lock:
                    acked = list(self.h.acked)[-2000:] if self.h.acked else []
                t0 = self.h.now()
                try:
                    if kind == "search":
                        q = np.asarray([rng.gauss(0, 1) for _ in range(self.dim)], dtype=np.float32)
                        ids = [h.id for h in c.search(self.collection, q, k=10, with_payload=False)]
                        with self.h.lock:
                            self.h.result_lists.append(ids)
                    elif acked:
                        want = rng.sample(acked, min(10, len(acked)))  # all acknowledged before now
                        consistency = "strong" if kind == "get-strong" else "eventual"
                        ids = [
                            p.id
                            for p in c.get(
                                self.collection,
                                want,
                                with_vectors=False,
                                with_payload=False,
                                consistency=consistency,
                            )
                        ]
                    else:
                        ids = []
                    ok, err = True, None
                    with self.h.lock:
                        self.h.read_ids.update(ids)
                        if kind == "get-strong" and acked:
                            self.h.strong_read_misses.extend(set(want) - set(ids))
                except QuartzError as exc:
                    ok, err = False, exc.code
                self.h.add(
                    {"type": "read", "kind": kind, "t0": t0, "t1": self.h.now(), "ok": ok, "error": err}
                )
                if not acked:
                    time.sleep(0.01)
