"""A backup's manifest and its shard parts (JSON, in the repository; ADR 17).

A part is what one shard's primary cut and copied:
  {"collection_id", "shard", "lsn", "epoch", "count", "history", "node", "seconds",
   "files": [{"path": "db/000012.sst", "object": SHA256, "size": N}, ...],   the RocksDB cut
   "index": {"lsn": C, "files": [...]} | null,   the HNSW checkpoint restore starts from
   "log": [{"path": "log/<from>-<to>.seg", ...}],  an incremental part: the log entries since
                                                 its base (files + index, cut at an earlier LSN)
   "bytes_copied": N}                            what this part copied (the rest was present)

The manifest lists the backed-up collections (schemas and their parts), the tenants they
belong to, and totals; it is the last object a backup writes.
"""

from __future__ import annotations

import re
import time
import uuid

import orjson

from quartz_cluster.errors import FailedPrecondition, InvalidArgument

FORMAT = 1
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_PATH_RE = re.compile(r"(db|ckpt|log)/(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}")


def new_backup_id(now: float | None = None, prefix: str = "") -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    return f"{prefix}{stamp}-{uuid.uuid4().hex[:6]}"


def check_id(value: str, field: str = "id") -> str:
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidArgument(f"{value!r} is not a backup id", field)
    return value


def manifest_key(backup_id: str) -> str:
    return f"backups/{backup_id}/manifest.json"


def part_key(backup_id: str, collection_id: str, shard: int) -> str:
    return f"backups/{backup_id}/parts/{collection_id}-{shard}.json"


def part_files(part: dict) -> list[dict]:
    """Every file a part needs: its RocksDB cut and its index checkpoint."""
    return [*part["files"], *(part["index"]["files"] if part.get("index") else []), *part.get("log", [])]


def check_part(part: object, where: str) -> dict:
    """A part as read back (from a node or the repository); FailedPrecondition naming what is wrong.
    Paths are checked so a crafted manifest cannot write outside a restore's directory."""
    try:
        assert isinstance(part, dict)
        for name in ("collection_id", "history"):
            assert isinstance(part[name], str)
        assert _ID_RE.fullmatch(part["collection_id"]), "collection_id"
        for name in ("shard", "lsn", "epoch", "count", "bytes_copied"):
            assert isinstance(part[name], int) and part[name] >= 0
        files = part_files(part)
        for f in files:
            assert isinstance(f["path"], str) and _PATH_RE.fullmatch(f["path"]), f"path {f.get('path')!r}"
            assert isinstance(f["object"], str) and _SHA_RE.fullmatch(f["object"]), (
                f"object {f.get('object')!r}"
            )
            assert isinstance(f["size"], int) and f["size"] >= 0
        assert len({f["path"] for f in files}) == len(files), "a path twice"
    except (AssertionError, KeyError, TypeError) as exc:
        raise FailedPrecondition(f"{where} is not a valid backup part ({exc})", "manifest") from None
    return part


def part_bytes(part: dict) -> int:
    return sum(f["size"] for f in part_files(part))


def encode(obj: dict) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)


def decode_manifest(raw: bytes, where: str) -> dict:
    try:
        manifest = orjson.loads(raw)
        assert isinstance(manifest, dict) and manifest.get("format") == FORMAT, "unknown format"
        check_id(manifest["id"])
        assert isinstance(manifest["collections"], list)
        for coll in manifest["collections"]:
            assert isinstance(coll["name"], str) and isinstance(coll["shards"], int)
            assert isinstance(coll["id"], str) and _ID_RE.fullmatch(coll["id"]), "collection id"
            assert len(coll["parts"]) == coll["shards"], "a shard without its part"
            for i, part in enumerate(coll["parts"]):
                check_part(part, f"{where}: {coll['name']} shard {i}")
    except FailedPrecondition:
        raise
    except (AssertionError, KeyError, TypeError, ValueError, InvalidArgument) as exc:
        raise FailedPrecondition(f"{where} is not a valid backup manifest ({exc})", "manifest") from None
    return manifest


def totals(collections: list[dict]) -> dict:
    parts = [p for c in collections for p in c["parts"]]
    return {
        "shards": len(parts),
        "vectors": sum(p["count"] for p in parts),
        "bytes": sum(part_bytes(p) for p in parts),
        "bytes_copied": sum(p["bytes_copied"] for p in parts),
        "objects": len({f["object"] for p in parts for f in part_files(p)}),
    }


def referenced_objects(manifest: dict) -> set[str]:
    return {f["object"] for c in manifest["collections"] for p in c["parts"] for f in part_files(p)}
