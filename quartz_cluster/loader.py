"""`quartz load`: stream a .npy of vectors (and a .jsonl of payloads) into a collection.

Everything that can be checked before the first write is: the vectors file (exists, is a 2-D
numeric .npy, finite), the payloads file (one JSON object per line, as many lines as vectors),
the collection (exists unless created here, same dimension). A problem is a LoadError naming the
file and the row or line, and nothing is written."""

from __future__ import annotations

import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from quartz_cluster.client import QuartzClient
from quartz_cluster.errors import InvalidArgument, NotFound

CHECK_ROWS = 65_536  # vectors checked for NaN/inf at a time (a bounded slice of the memory map)


class LoadError(Exception):
    """A file or argument `quartz load` cannot use; the message names it."""


def open_vectors(file: str, limit: int | None) -> np.ndarray:
    """The vectors to load (a read-only memory map), checked whole before anything is written."""
    path = Path(file)
    if not path.is_file():
        raise LoadError(f"{file}: no such file")
    try:
        vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise LoadError(f"{file}: not a .npy array file ({exc})") from None
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or 0 in vectors.shape:
        shape = getattr(vectors, "shape", None)
        raise LoadError(f"{file}: must hold a non-empty 2-D array (rows, dim), got shape {shape}")
    if vectors.dtype.kind not in "fiu":
        raise LoadError(f"{file}: must hold numbers, got dtype {vectors.dtype}")
    n = len(vectors) if limit is None else min(limit, len(vectors))
    if n <= 0:
        raise LoadError(f"--limit must be at least 1, got {limit}")
    for start in range(0, n, CHECK_ROWS):
        rows = np.asarray(vectors[start : min(start + CHECK_ROWS, n)], dtype=np.float32)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            raise LoadError(f"{file}: row {start + int(np.flatnonzero(~finite)[0])} holds NaN or infinity")
    return vectors[:n]


def check_payloads(file: str, rows: int) -> None:
    """Every line of the first `rows` is a JSON object, and there are at least `rows` lines."""
    path = Path(file)
    if not path.is_file():
        raise LoadError(f"{file}: no such file")
    seen = 0
    with open(path, "rb") as f:
        for seen, line in enumerate(islice(f, rows), start=1):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise LoadError(f"{file}: line {seen} is not valid JSON ({exc})") from None
            if not isinstance(doc, dict):
                raise LoadError(f"{file}: line {seen} must be a JSON object, got {type(doc).__name__}")
    if seen < rows:
        raise LoadError(f"{file}: has {seen} lines for {rows} vectors (one JSON object per vector)")


def _payloads(path: str | None) -> Iterator[dict | None]:
    if path is None:
        while True:
            yield None
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)


def load_file(
    router: str,
    api_key: str | None,
    file: str,
    collection: str,
    payloads: str | None = None,
    id_key: str = "id",
    batch: int = 1000,
    create: bool = True,
    shards: int = 4,
    rf: int | None = None,
    metric: str = "cosine",
    limit: int | None = None,
    console: Console | None = None,
) -> int:
    console = console or Console(stderr=True)
    if batch < 1:
        raise LoadError(f"--batch must be at least 1, got {batch}")
    vectors = open_vectors(file, limit)
    n, dim = vectors.shape
    if payloads is not None:
        check_payloads(payloads, n)
    with QuartzClient(router, api_key=api_key, timeout=120) as client:
        try:
            info = client.describe_collection(collection)
        except NotFound:
            if not create:
                raise LoadError(
                    f"collection {collection!r} does not exist (and --no-create was given)"
                ) from None
            info = client.create_collection(
                collection, dim=dim, metric=metric, shards=shards, replication_factor=rf, wait=True
            )
            console.print(
                f"created collection {collection}: {info.shards} shards x {info.replication_factor}, "
                f"dim {info.dim}, {metric}"
            )
        if info.dim != dim:
            raise LoadError(f"{file}: vectors of dim {dim}, but collection {collection!r} has dim {info.dim}")
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
                try:
                    client.upsert(collection, ids, rows, None if payloads is None else docs)
                except InvalidArgument as exc:
                    raise LoadError(
                        f"rows {start}-{end - 1} refused ({start} rows before them loaded): {exc}"
                    ) from None
                progress.update(task, advance=end - start)
        seconds = time.perf_counter() - t0
        console.print(
            f"loaded {n:,} points into {collection} in {seconds:.1f} s ({n / seconds:,.0f} points/s); "
            f"collection now holds {client.count(collection):,}"
        )
    return 0
