"""`quartz backup verify`: re-read every object a backup lists and check its SHA-256 and size.
Runs where the repository is reachable; needs no cluster (a restore drill after total loss
starts here)."""

from __future__ import annotations

from collections.abc import Callable

from quartz_cluster.backup import manifest
from quartz_cluster.backup.catalog import read_manifest
from quartz_cluster.backup.repository import Repository, object_key
from quartz_cluster.errors import QuartzError


def verify(repo: Repository, backup_id: str, progress: Callable[[int], None] | None = None) -> dict:
    """{"backup", "objects", "bytes", "ok", "problems": [{"object", "file", "problem"}]}: each
    distinct object is read once; a problem names the object and the first file that uses it."""
    m = read_manifest(repo, backup_id)
    uses: dict[str, tuple[dict, str]] = {}
    for coll in m["collections"]:
        for part in coll["parts"]:
            for f in manifest.part_files(part):
                where = f"{coll['tenant']}/{coll['name']} shard {part['shard']} {f['path']}"
                uses.setdefault(f["object"], (f, where))
    problems = []
    total = 0
    for digest, (f, where) in uses.items():
        key = object_key(digest)
        try:
            size = repo.size(key)
            if size is None:
                problem = "missing"
            elif size != f["size"]:
                problem = f"{size} bytes, the manifest says {f['size']}"
            else:
                got = repo.sha256(key)
                problem = "" if got == digest else f"corrupt: its content hashes to {got}"
        except QuartzError as exc:
            problem = f"unreadable: {exc}"
        if problem:
            problems.append({"object": key, "file": where, "problem": problem})
        total += f["size"]
        if progress is not None:
            progress(f["size"])
    return {
        "backup": backup_id,
        "objects": len(uses),
        "bytes": total,
        "ok": not problems,
        "problems": problems,
    }


def total_bytes(repo: Repository, backup_id: str) -> int:
    m = read_manifest(repo, backup_id)
    seen: dict[str, int] = {}
    for coll in m["collections"]:
        for part in coll["parts"]:
            for f in manifest.part_files(part):
                seen[f["object"]] = f["size"]
    return sum(seen.values())
