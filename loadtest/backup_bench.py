"""Backup and restore rates next to a plain copy of the data directory (issue 15).

  .venv/bin/python loadtest/backup_bench.py --vectors 100000
  .venv/bin/python loadtest/backup_bench.py --vectors 1000000

One node (RF 1, 2 shards), clustered 384-d vectors, loaded through the SDK with the admin key.
Prints one JSON document:
  copy:        `cp --reflink=never -a` of the node's data dir, then `sync` (the limit: the bytes a
               backup must read and write, made durable as a backup's are)
  backup:      a full backup to a file:// repository (vectors/s, MB/s, ratio to the copy rate)
  incremental: a second backup after overwriting 1 % of the points (bytes copied vs the first)
  restore:     into a fresh 1-node cluster until the collection is ready (vectors/s, MB/s),
               then recall@10 of 100 queries (stored points plus noise) against exact search, on the
               source and on the restored collection, at the default ef and at each of EFS
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from quartz_cluster.cluster import LocalCluster

DIM = 384
BATCH = 1000
WRITERS = 2
QUERIES = 100
EFS = (256, 1024)  # recall is also taken at these search ef (besides the collection's default)


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(256, DIM)).astype(np.float32)
    out = np.empty((n, DIM), np.float32)
    for at in range(0, n, 100_000):
        m = min(100_000, n - at)
        out[at : at + m] = centers[rng.integers(0, 256, m)] + 0.12 * rng.normal(size=(m, DIM)).astype(
            np.float32
        )
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def load(cluster: LocalCluster, ids: list[str], vectors: np.ndarray) -> float:
    t0 = time.monotonic()
    chunks = [(at, min(at + BATCH, len(ids))) for at in range(0, len(ids), BATCH)]

    def writer(w: int) -> None:
        with cluster.client(timeout=300) as c:
            for a, b in chunks[w::WRITERS]:
                c.upsert("bench", ids[a:b], vectors[a:b])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def recall_at_10(c, ids: list[str], vectors: np.ndarray, ef: int = 0) -> float:
    rng = np.random.default_rng(9)  # queries near stored points (as real queries are)
    q = vectors[rng.choice(len(vectors), QUERIES, replace=False)] + 0.03 * rng.normal(size=(QUERIES, DIM))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    hits = c.search("bench", q, k=10, with_payload=False, **({"ef": ef} if ef else {}))
    truth = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    return float(
        np.mean([len({h.id for h in hits[i]} & {ids[j] for j in truth[i]}) / 10 for i in range(QUERIES)])
    )


def wait_backup(c, backup_id: str) -> dict:
    job = c.backup(backup_id)
    while job["state"] in ("pending", "running"):
        time.sleep(0.1)
        job = c.backup(backup_id)
    assert job["state"] == "complete", job
    return job


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=100_000)
    ap.add_argument("--work-dir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs, repository)")
    args = ap.parse_args()
    n = args.vectors
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="backup-bench-"))
    ids = [f"v{i}" for i in range(n)]
    vectors = clustered(n, 1)
    out: dict = {"vectors": n, "dim": DIM}
    repo = work / "repo"
    with LocalCluster(work / "src", nodes=1) as src, src.client(timeout=300) as c:
        c.create_collection("bench", dim=DIM, shards=2, replication_factor=1)
        out["load_s"] = round(load(src, ids, vectors), 1)
        c.count("bench")
        node_dir = src.nodes[0].data_dir
        time.sleep(2.0)  # let the last checkpoints settle
        size = du(Path(node_dir))
        subprocess.run(["sync"], check=True)
        t0 = time.monotonic()  # a real copy (no reflinks), made durable as a backup is
        subprocess.run(["cp", "--reflink=never", "-a", str(node_dir), str(work / "plain-copy")], check=True)
        subprocess.run(["sync"], check=True)
        copy_s = time.monotonic() - t0
        shutil.rmtree(work / "plain-copy")
        out["copy"] = {"bytes": size, "seconds": round(copy_s, 2), "mb_s": round(size / copy_s / 1e6, 1)}
        t0 = time.monotonic()
        full = wait_backup(c, c.create_backup(f"file://{repo}")["id"])
        backup_s = time.monotonic() - t0
        out["backup"] = {
            "bytes": full["bytes_total"],
            "seconds": round(backup_s, 2),
            "vectors_s": round(n / backup_s),
            "mb_s": round(full["bytes_total"] / backup_s / 1e6, 1),
            "vs_copy_rate": round((full["bytes_total"] / backup_s) / (size / copy_s), 2),
        }
        changed = max(1, n // 100)
        rng = np.random.default_rng(2)
        pick = np.sort(rng.choice(n, changed, replace=False))
        newv = clustered(changed, 3)
        for a in range(0, changed, BATCH):
            c.upsert("bench", [ids[i] for i in pick[a : a + BATCH]], newv[a : a + BATCH])
        vectors[pick] = newv
        out["source_recall_at_10"] = round(recall_at_10(c, ids, vectors), 4)
        for ef in EFS:
            out[f"source_recall_at_10_ef{ef}"] = round(recall_at_10(c, ids, vectors, ef), 4)
        t0 = time.monotonic()
        inc = wait_backup(c, c.create_backup(f"file://{repo}")["id"])
        out["incremental"] = {
            "changed": changed,
            "bytes_copied": inc["bytes_copied"],
            "full_bytes_copied": full["bytes_copied"],
            "fraction_of_full": round(inc["bytes_copied"] / full["bytes_copied"], 4),
            "seconds": round(time.monotonic() - t0, 2),
        }
    with LocalCluster(work / "dst", nodes=1) as dst, dst.client(timeout=300) as c:
        t0 = time.monotonic()
        c.restore_backup(f"file://{repo}", inc["id"])
        while c.describe_collection("bench").status != "ready":
            time.sleep(0.05)
        restore_s = time.monotonic() - t0
        c.search("bench", vectors[:1], k=10, with_payload=False)
        searchable_s = time.monotonic() - t0
        recall = recall_at_10(c, ids, vectors)
        out["restore"] = {
            "seconds": round(restore_s, 2),
            "vectors_s": round(n / restore_s),
            "mb_s": round(inc["bytes_total"] / restore_s / 1e6, 1),
            "searchable_after_s": round(searchable_s, 2),
            "recall_at_10": round(recall, 4),
            **{f"recall_at_10_ef{ef}": round(recall_at_10(c, ids, vectors, ef), 4) for ef in EFS},
        }
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
