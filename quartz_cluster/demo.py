"""`quartz demo`: start a node, load demo data, print example searches, stop the node.

Uses ../shared/data/pydocs-minilm-384 (real MiniLM embeddings of Python docs) when present,
generated clustered vectors otherwise. Re-running on the same data dir reuses what is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from quartz_cluster.datasets import Dataset, generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.node.client import NodeClient
from quartz_cluster.procs import NodeProcess

COLLECTION = "demo"
LOAD_BATCH = 1000
K = 5


def _dataset(shared_dir: str | None, rows: int) -> Dataset:
    data_dir = Path(shared_dir) if shared_dir else shared_data_dir()
    if data_dir is not None and (data_dir / "pydocs-minilm-384").exists():
        return load_pydocs(data_dir, rows=rows)
    return generate_clustered(rows, dim=64, n_queries=100, seed=0)


def _load(console: Console, client: NodeClient, ds: Dataset) -> float:
    t0 = time.perf_counter()
    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(f"loading {len(ds.ids):,} points", total=len(ds.ids))
        for start in range(0, len(ds.ids), LOAD_BATCH):
            end = start + LOAD_BATCH
            client.upsert(COLLECTION, 0, ds.ids[start:end], ds.base[start:end], ds.payloads[start:end])
            progress.update(task, advance=len(ds.ids[start:end]))
    return time.perf_counter() - t0


def _show(console: Console, title: str, hits, label_key: str) -> None:
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("payload", overflow="fold")
    for i, h in enumerate(hits, 1):
        p = dict(h.payload or {})
        text = p.pop(label_key, None)
        desc = f"{text[:90]!r} " if text else ""
        table.add_row(str(i), f"{h.score:.3f}", h.id, desc + str(p))
    console.print(table)


def run_demo(data_dir: str, shared_dir: str | None, rows: int) -> int:
    console = Console()
    ds = _dataset(shared_dir, rows)
    console.print(
        f"[bold]QuartzDB demo[/]: dataset {ds.name}, {len(ds.ids):,} x {ds.dim}-d, metric {ds.metric}"
    )
    root = Path(data_dir)
    node = NodeProcess("n1", root / "n1", root / "n1.log")
    node.start()
    console.print(f"node n1 serving quartz.v1.Node on {node.address} (log: {node.log_path})")
    try:
        with NodeClient(node.address, timeout_s=120) as client:
            client.create_shard(COLLECTION, 0, ds.dim, ds.metric)
            count = client.stats(COLLECTION, 0).count
            if count != len(ds.ids):
                if count:
                    client.drop_shard(COLLECTION, 0)
                    client.create_shard(COLLECTION, 0, ds.dim, ds.metric)
                seconds = _load(console, client, ds)
                console.print(
                    f"loaded {len(ds.ids):,} points in {seconds:.1f} s ({len(ds.ids) / seconds:,.0f}/s)"
                )
            else:
                console.print(f"reusing {count:,} points already stored in {root}")

            label_key = "text" if ds.query_payloads else "pkg"
            for qi in (0, 1, 2):
                title = f"query {qi}"
                if ds.query_payloads:
                    title += f": {ds.query_payloads[qi]['text'][:100]!r}"
                hits = client.search(COLLECTION, 0, ds.queries[qi], k=K, with_payload=True)[0]
                _show(console, title, hits, label_key)

            flt = {"must": [{"key": "kind", "match": "class"}], "must_not": [{"key": "site", "match": True}]}
            hits = client.search(COLLECTION, 0, ds.queries[0], k=K, filter=flt, with_payload=True)[0]
            _show(console, f"query 0 filtered by {flt}", hits, label_key)

            t0 = time.perf_counter()
            all_hits = client.search(COLLECTION, 0, ds.queries, k=10)
            seconds = time.perf_counter() - t0
            row_of = {pid: i for i, pid in enumerate(ds.ids)}
            recall = recall_at_k([[row_of[h.id] for h in hs] for hs in all_hits], np.asarray(ds.gt_ids), 10)
            s = client.stats(COLLECTION, 0)
            console.print(
                f"{len(ds.queries)} queries in one batch: {seconds * 1000:.0f} ms, recall@10 {recall:.3f} "
                f"vs exact ground truth; shard: {s.count:,} points, LSN {s.applied_lsn}, "
                f"node RSS {s.rss_bytes / 2**20:.0f} MiB"
            )
    finally:
        code = node.stop()
        console.print(f"node stopped (exit {code}); data kept in {root}")
    return 0
