"""`quartz demo`: the README's main job. Runs `quartz up` (etcd, coordinator, nodes, router),
loads demo data with `quartz load`'s loader, shows searches through the Python SDK, then stops
the cluster. Uses ../shared/data/pydocs-minilm-384 (real MiniLM embeddings of Python docs)
when present, generated clustered vectors otherwise. Re-running reuses what is loaded."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson
from rich.console import Console
from rich.table import Table

from quartz_cluster.cluster import CLUSTER_FILE
from quartz_cluster.datasets import PYDOCS, generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.errors import NotFound
from quartz_cluster.loader import load_file

COLLECTION = "demo"
K = 5
UP_TIMEOUT_S = 120


def _show(console: Console, title: str, hits, label_key: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("id")
    table.add_column("payload", overflow="fold")
    for i, h in enumerate(hits, 1):
        p = dict(h.payload or {})
        text = p.pop(label_key, None)
        table.add_row(str(i), f"{h.score:.3f}", h.id, (f"{text[:90]!r} " if text else "") + str(p))
    console.print(table)


def _start_cluster(console: Console, root: Path, nodes: int) -> tuple[subprocess.Popen, dict]:
    info_file = root / CLUSTER_FILE
    info_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "quartz_cluster",
        "up",
        "--data-dir",
        str(root),
        "--nodes",
        str(nodes),
        "--port",
        "0",
    ]
    console.print(f"$ quartz up --data-dir {root} --nodes {nodes} --port 0")
    log = open(root / "up.log", "ab")  # noqa: SIM115 (kept open for the child's lifetime)
    up = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + UP_TIMEOUT_S
    while not info_file.exists():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            raise RuntimeError(f"quartz up failed; see {root / 'up.log'} and {root / 'logs'}")
        time.sleep(0.1)
    return up, orjson.loads(info_file.read_bytes())


def run_demo(data_dir: str, shared_dir: str | None, rows: int, nodes: int = 3) -> int:
    from quartz_cluster import QuartzClient

    console = Console()
    root = Path(data_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    shared = Path(shared_dir) if shared_dir else shared_data_dir()
    if shared is not None and (shared / PYDOCS).exists():
        ds = load_pydocs(shared, rows=rows)
        vec_file, pay_file = shared / PYDOCS / "base.f16.npy", shared / PYDOCS / "payloads.jsonl"
    else:
        ds = generate_clustered(rows, dim=64, n_queries=100, seed=0)
        vec_file, pay_file = root / "generated.npy", root / "generated.jsonl"
        np.save(vec_file, ds.base)
        pay_file.write_bytes(
            b"".join(orjson.dumps({"id": i, **p}) + b"\n" for i, p in zip(ds.ids, ds.payloads, strict=True))
        )
    console.print(f"[bold]QuartzDB demo[/]: {ds.name}, {len(ds.ids):,} x {ds.dim}-d ({ds.metric})")
    up, info = _start_cluster(console, root, nodes)
    try:
        router = info["router"]
        # auth is on: `quartz up` wrote the admin key to the file cluster.json names
        key_file = info.get("admin_key_file")
        api_key = Path(key_file).read_text().strip() if key_file else None
        console.print(
            f"cluster up: router {router}, etcd {info['etcd'][0]}, "
            f"{sum(p['role'] == 'node' for p in info['processes'])} nodes; admin key in {key_file}"
        )
        with QuartzClient(router, api_key=api_key, timeout=60) as client:
            try:
                have = client.count(COLLECTION)
            except NotFound:
                have = -1
            if have != len(ds.ids):
                if have >= 0:
                    client.drop_collection(COLLECTION)
                console.print(
                    f"$ quartz load {vec_file.name} --collection {COLLECTION} --payloads {pay_file.name} "
                    f"--limit {len(ds.ids)} --shards 4"
                )
                load_file(
                    router,
                    api_key,
                    str(vec_file),
                    COLLECTION,
                    str(pay_file),
                    limit=len(ds.ids),
                    shards=4,
                    metric=ds.metric,
                    console=console,
                )
            else:
                console.print(f"reusing {have:,} points already loaded in {root}")
            coll = client.describe_collection(COLLECTION)
            console.print(
                f"collection {COLLECTION}: {coll.shards} shards on "
                f"{sorted({s['primary'] for s in coll.shard_map})}"
            )

            label_key = "text" if ds.query_payloads else "pkg"
            for qi in (0, 1, 2):
                title = f"client.search({COLLECTION!r}, query[{qi}], k={K})"
                if ds.query_payloads:
                    title += f"  # {ds.query_payloads[qi]['text'][:80]!r}"
                _show(console, title, client.search(COLLECTION, ds.queries[qi], k=K), label_key)
            flt = {"must": [{"key": "kind", "match": "class"}], "must_not": [{"key": "site", "match": True}]}
            _show(
                console,
                f"client.search({COLLECTION!r}, query[0], k={K}, filter={flt})",
                client.search(COLLECTION, ds.queries[0], k=K, filter=flt),
                label_key,
            )

            t0 = time.perf_counter()
            all_hits = client.search(COLLECTION, ds.queries, k=10, with_payload=False)
            seconds = time.perf_counter() - t0
            row_of = {pid: i for i, pid in enumerate(ds.ids)}
            recall = recall_at_k([[row_of[h.id] for h in hs] for hs in all_hits], np.asarray(ds.gt_ids), 10)
            console.print(
                f"{len(ds.queries)} queries in one call: {seconds * 1000:.0f} ms; recall@10 {recall:.3f} "
                f"vs exact ground truth; {client.count(COLLECTION):,} points in the collection"
            )
            usage = client.usage()  # metered per call, shipped by the router within a second
            ops = ", ".join(f"{op} {n}" for op, n in sorted(usage["calls_by_operation"].items()))
            console.print(
                f"client.usage(): tenant {usage['tenant']} (plan {usage['plan']}) this month: "
                f"{usage['calls']} calls ({ops or 'not shipped yet'}), "
                f"{usage['vectors_written']:,} vectors written"
            )
    finally:
        up.send_signal(signal.SIGINT)
        code = up.wait(60)
        console.print(f"cluster stopped (quartz up exit {code}); data kept in {root}")
    return 0
