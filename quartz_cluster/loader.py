"""`quartz load`: stream a .npy of vectors (and a .jsonl of payloads) into a collection."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice

import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import NotFound


def _payloads(path: str | None) -> Iterator[dict | None]:
    if path is None:
        while True:
            yield None
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)


def load_file(
    router: str,
    file: str,
    collection: str,
    payloads: str | None = None,
    id_key: str = "id",
    batch: int = 1000,
    create: bool = True,
    shards: int = 4,
    rf: int = 1,
    metric: str = "cosine",
    limit: int | None = None,
    console: Console | None = None,
) -> int:
    console = console or Console(stderr=True)
    vectors = np.load(file, mmap_mode="r")
    n = min(limit or len(vectors), len(vectors))
    with QuartzClient(router, timeout=120) as client:
        try:
            info = client.describe_collection(collection)
        except NotFound:
            if not create:
                raise
            info = client.create_collection(
                collection,
                dim=vectors.shape[1],
                metric=metric,
                shards=shards,
                replication_factor=rf,
                wait=True,
            )
            console.print(
                f"created collection {collection}: {shards} shards x {rf}, dim {info.dim}, {metric}"
            )
        pays = _payloads(payloads)
        t0 = time.perf_counter()
        columns = [TextColumn("loading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("load", total=n)
            for start in range(0, n, batch):
                end = min(start + batch, n)
                rows = np.asarray(vectors[start:end], dtype=np.float32)
                docs = list(islice(pays, end - start))
                ids = []
                for i, doc in enumerate(docs):
                    ids.append(
                        str(doc.pop(id_key)) if isinstance(doc, dict) and id_key in doc else str(start + i)
                    )
                client.upsert(collection, ids, rows, None if payloads is None else docs)
                progress.update(task, advance=end - start)
        seconds = time.perf_counter() - t0
        console.print(
            f"loaded {n:,} points into {collection} in {seconds:.1f} s ({n / seconds:,.0f} points/s); "
            f"collection now holds {client.count(collection):,}"
        )
    return 0
