"""One shard's part of a backup, on the node that holds its primary, and its restore on a node
that will hold a replica (ADR 17).

Cut: a job of the shard's writer (no write, append, checkpoint or install meanwhile) takes a
RocksDB checkpoint (hard links of the immutable SST files after a flush) and hard links of the
newest index checkpoint into a staging directory. Every write acknowledged before the job ran
was applied by then (a primary acknowledges after applying), and a RocksDB checkpoint is one
consistent state: every batch is in it whole or not at all. The job takes milliseconds, so
writes pause only that long; the copy runs afterwards, outside the writer.

Copy: each file is named in the repository by its SHA-256 and copied only if that object is
not there yet. SST files never change, so after the first backup only the files RocksDB wrote
since are copied; their hashes are remembered per node (`HashCache`) so unchanged files are
not even re-read. The index checkpoint is large and rewritten whenever the node checkpoints;
an incremental backup reuses its parent's index instead when the cut's log still reaches back
to it (a restore loads it and replays the log, as a node restart does).

Restore: every file is downloaded into a staging directory and its SHA-256 checked; a file
whose content does not match its object refuses the restore, naming the object.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass

import orjson
import rocksdict

from quartz_cluster.backup import manifest
from quartz_cluster.backup.repository import Repository, object_key
from quartz_cluster.errors import FailedPrecondition
from quartz_cluster.node.shard.storage import K_EPOCH

CACHE_FILE = "backup-hashes.json"
LOG_FRACTION_MAX = 0.25  # log segments beyond this fraction of the base's bytes: cut a new base
LOG_READ_ENTRIES = 256
STAGING_PREFIX = "backup-staging-"
FRESH_CHECKPOINT_FRACTION = 4  # cut a fresh index checkpoint if this fraction of its interval was written


class CorruptObject(FailedPrecondition):
    """An object's content does not match its name (SHA-256)."""


@dataclass(slots=True)
class Cut:
    dir: str
    lsn: int
    epoch: int
    count: int
    history: str
    index_lsn: int  # 0: no index checkpoint in the cut
    reuse_index: dict | None  # the parent's index, still reachable through the cut's log
    segment: str = ""  # log mode: the file of log entries after the parent's cut (in dir/log)
    parent: dict | None = None  # log mode: the part whose base and segments this one extends


def _identity(db_path: str) -> str:
    try:
        with open(os.path.join(db_path, "IDENTITY")) as f:
            return f.read().strip()
    except OSError:
        return ""


def clean_staging(shard_path: str) -> None:
    """Remove staging directories a crashed backup left behind."""
    for path in glob.glob(os.path.join(shard_path, STAGING_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)


def _log_segment(store, parent: dict, applied: int, history: str, path: str) -> bool:
    """Write the log entries after the parent's cut up to `applied` to `path` (each a 4-byte
    length and a LogEntry), if the log still holds them and they stay small next to the parent's
    base. False: take a new base instead."""
    if parent.get("history") != history or parent["lsn"] > applied:
        return False
    start = parent["lsn"]
    if start < applied and (start < store.log_start or store.entry_epoch(start + 1) < 0):
        return False
    base_bytes = sum(f["size"] for f in parent["files"])
    budget = LOG_FRACTION_MAX * base_bytes - sum(f["size"] for f in parent.get("log", []))
    written, lsn = 0, start
    with open(path, "wb") as out:
        while lsn < applied:
            raws = store.read_log(lsn + 1, LOG_READ_ENTRIES, upto=applied)
            if not raws:
                return False
            for raw in raws:
                out.write(len(raw).to_bytes(4, "big"))
                out.write(raw)
                written += 4 + len(raw)
            lsn += len(raws)
            if written > budget:
                return False
    return True


def read_segment(path: str):
    """The serialized LogEntry records of a segment file, in order."""
    with open(path, "rb") as f:
        while head := f.read(4):
            n = int.from_bytes(head, "big")
            raw = f.read(n)
            if len(raw) != n:
                raise CorruptObject(f"log segment {os.path.basename(path)} is truncated", "backup")
            yield raw


def cut(replica, parent: dict | None) -> Cut:
    """Blocking; run inside a writer job of `replica` (a ShardReplica). With a parent whose cut
    the log still reaches back to, the cut is the log entries since it (a segment: what changed,
    nothing else); otherwise a new base (RocksDB checkpoint and index checkpoint)."""
    store, checkpoints = replica.store, replica.checkpoints
    applied = replica.state.applied_lsn
    history = store.history().hex()
    if parent is not None and parent.get("files"):
        staging = os.path.join(replica.path, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
        os.makedirs(os.path.join(staging, "log"))
        name = f"{parent['lsn']:020d}-{applied:020d}.seg"
        if _log_segment(store, parent, applied, history, os.path.join(staging, "log", name)):
            if applied == parent["lsn"]:
                os.remove(os.path.join(staging, "log", name))
                name = ""
            return Cut(
                dir=staging,
                lsn=applied,
                epoch=max(store.meta(K_EPOCH), store.last_epoch, replica.epoch),
                count=len(replica.state.label_of),
                history=history,
                index_lsn=0,
                reuse_index=None,
                segment=name,
                parent=parent,
            )
        shutil.rmtree(staging, ignore_errors=True)
    every = replica.options.checkpoint_every_points
    stale = checkpoints.lsn == 0 or replica.points_since_checkpoint >= max(
        1, every // FRESH_CHECKPOINT_FRACTION
    )
    reusable = parent is not None and _parent_index_reachable(store, parent, applied, store.history().hex())
    if applied and stale and not reusable:
        replica._checkpoint()  # restore loads an index instead of rebuilding it from rows
    staging = os.path.join(replica.path, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    index_lsn = 0
    reuse = parent["index"] if parent and _parent_index_reachable(store, parent, applied, history) else None
    try:
        os.makedirs(os.path.join(staging, "ckpt"))
        rocksdict.Checkpoint(store.db).create_checkpoint(os.path.join(staging, "db"))
        if reuse is None and checkpoints.lsn and checkpoints.lsn <= applied:
            base = os.path.join(checkpoints.dir, f"ckpt-{checkpoints.lsn:020d}")
            for ext in (".hnsw", ".state"):
                os.link(base + ext, os.path.join(staging, "ckpt", os.path.basename(base) + ext))
            index_lsn = checkpoints.lsn
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # (a cut lost to a cancelled call: removed on restart)
        raise
    return Cut(
        dir=staging,
        lsn=applied,
        epoch=max(store.meta(K_EPOCH), store.last_epoch, replica.epoch),
        count=len(replica.state.label_of),
        history=history,
        index_lsn=index_lsn,
        reuse_index=reuse,
    )


def _parent_index_reachable(store, parent: dict, applied: int, history: str) -> bool:
    """The parent's index checkpoint can start this cut's restore: same history, not after the
    cut, and the log holds every entry after it up to the cut."""
    index = parent.get("index")
    if not index or parent.get("history") != history or index["lsn"] > applied:
        return False
    lsn = index["lsn"]
    return lsn == applied or (lsn >= store.log_start and store.entry_epoch(lsn + 1) >= 0)


class HashCache:
    """SHA-256 of files already hashed, keyed by (database identity, name, size, mtime): SST
    files never change once written, so a hit is never stale. Kept in the shard directory."""

    def __init__(self, shard_path: str) -> None:
        self.path = os.path.join(shard_path, CACHE_FILE)
        self.lock = threading.Lock()
        try:
            with open(self.path, "rb") as f:
                self.entries: dict[str, str] = orjson.loads(f.read())
        except (OSError, ValueError):
            self.entries = {}
        self.used: dict[str, str] = {}

    @staticmethod
    def _key(identity: str, path: str) -> str:
        st = os.stat(path)
        return f"{identity}/{os.path.basename(path)}/{st.st_size}/{st.st_mtime_ns}"

    def known(self, identity: str, path: str) -> str | None:
        key = self._key(identity, path)
        with self.lock:
            found = self.entries.get(key)
            if found is not None:
                self.used[key] = found
        return found

    def remember(self, identity: str, path: str, digest: str) -> None:
        with self.lock:
            self.used[self._key(identity, path)] = digest

    def save(self) -> None:
        """Keep only what this backup used (the files of the current database)."""
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(self.used))
        os.replace(tmp, self.path)


def copy_cut(
    c: Cut, replica_path: str, db_path: str, repo: Repository, node: str, ref: tuple[str, int]
) -> dict:
    """Copy the cut's files that the repository lacks; returns the shard's part. Blocking."""
    t0 = time.monotonic()
    cache = HashCache(replica_path)
    identity = _identity(db_path)
    copied = 0

    def one(sub: str, name: str, use_cache: bool) -> dict:
        nonlocal copied
        path = os.path.join(c.dir, sub, name)
        size = os.path.getsize(path)
        known = cache.known(identity, path) if use_cache and name.endswith(".sst") else None
        if known is not None and repo.size(object_key(known)) == size:
            return {"path": f"{sub}/{name}", "object": known, "size": size}
        digest, n = repo.put_new_file(path)  # hashed while copied (one read of the file)
        if use_cache and name.endswith(".sst"):
            cache.remember(identity, path, digest)
        copied += n
        return {"path": f"{sub}/{name}", "object": digest, "size": size}

    log: list[dict] = []
    if c.parent is not None:  # log mode: the parent's base and segments, and this segment
        files, index = c.parent["files"], c.parent["index"]
        log = list(c.parent.get("log", []))
        if c.segment:
            log.append(one("log", c.segment, False))
    else:
        files = [one("db", n, True) for n in sorted(os.listdir(os.path.join(c.dir, "db")))]
        index = c.reuse_index
        if index is None and c.index_lsn:
            ckpt = sorted(os.listdir(os.path.join(c.dir, "ckpt")))
            index = {"lsn": c.index_lsn, "files": [one("ckpt", n, False) for n in ckpt]}
    with contextlib.suppress(OSError):
        cache.save()
    part = {
        "collection_id": ref[0],
        "shard": ref[1],
        "lsn": c.lsn,
        "epoch": c.epoch,
        "count": c.count,
        "history": c.history,
        "node": node,
        "files": files,
        "index": index,
        "log": log,
        "bytes_copied": copied,
        "seconds": round(time.monotonic() - t0, 3),
    }
    return manifest.check_part(part, f"shard {ref[0]}/{ref[1]}")


async def backup_replica(replica, repo: Repository, node: str, parent: dict | None, check) -> dict:
    """Cut (a writer job; `check()` raises unless this replica may serve it, checked inside the
    job) and copy (outside it). The staging directory is removed whatever happens."""

    async def job() -> Cut:
        check()
        return await asyncio.to_thread(cut, replica, parent)

    c = await replica.exclusive("backup", job)
    try:
        ref = (replica.spec.collection_id, replica.spec.shard)
        return await asyncio.to_thread(copy_cut, c, replica.path, replica.store.db_path, repo, node, ref)
    finally:
        await asyncio.to_thread(shutil.rmtree, c.dir, True)


def download_part(part: dict, repo: Repository, into: str, progress=None) -> None:
    """Fetch every file of a part into `into` (db/ and ckpt/), checking each one's SHA-256.
    Blocking. CorruptObject names the first object whose content is not what its name says."""
    for sub in ("db", "ckpt", "log"):
        os.makedirs(os.path.join(into, sub), exist_ok=True)
    for f in manifest.part_files(part):
        key = object_key(f["object"])
        got = repo.get_file(key, os.path.join(into, *f["path"].split("/")))
        if got != f["object"]:
            raise CorruptObject(
                f"backup object {key} ({f['path']} of shard {part['collection_id']}/{part['shard']}) "
                f"is corrupt: its content hashes to {got}",
                "backup",
            )
        if progress is not None:
            progress(f["size"])
    if part.get("log"):
        append_segments(part, into)


def append_segments(part: dict, into: str) -> None:
    """Put the part's log segments into the downloaded base as its log tail: opening the replica
    then applies them (rows and index) as it applies any tail beyond applied_lsn (checkpoint.py)."""
    from quartz_cluster.node.shard.storage import K_LAST_EPOCH, K_LOG_END, log_key, open_db, u64, write_synced
    from quartz_cluster.proto.quartz.v1 import node_pb2

    db = open_db(os.path.join(into, "db"))
    try:
        last_lsn = last_epoch = 0
        for f in part["log"]:
            wb = rocksdict.WriteBatch(raw_mode=True)
            for raw in read_segment(os.path.join(into, *f["path"].split("/"))):
                entry = node_pb2.LogEntry.FromString(raw)
                wb.put(log_key(entry.lsn), raw)
                last_lsn, last_epoch = entry.lsn, entry.epoch
            db.write(wb)
        if last_lsn:
            if last_lsn != part["lsn"]:
                raise CorruptObject(
                    f"the log segments of shard {part['shard']} end at {last_lsn}, not {part['lsn']}",
                    "backup",
                )
            wb = rocksdict.WriteBatch(raw_mode=True)
            wb.put(K_LOG_END, u64(last_lsn))
            wb.put(K_LAST_EPOCH, u64(last_epoch))
            write_synced(db, wb)
    finally:
        db.close()
    shutil.rmtree(os.path.join(into, "log"), ignore_errors=True)
