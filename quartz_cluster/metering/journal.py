"""The router's local journal: an append-only file of records (one JSON object per line) written
before a call is acknowledged, so a SIGKILLed router loses none of them (the kernel keeps what
write(2) returned; `fsync=True` also survives losing the machine). Shippers read it from a
cursor and prune what every shipper has passed.

Segments are files `<n:08d>.ndjson`; a cursor is (segment, byte offset). A torn last line (a
crash inside write(2)) is cut off when the journal is opened again. One process at a time: the
directory is locked (flock), so two routers cannot share a journal by mistake."""

from __future__ import annotations

import fcntl
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

SEGMENT_BYTES_MAX = 16 * 2**20  # a new segment starts past this size
READ_RECORDS_MAX = 5000  # records per read() call
ID_FILE = "JOURNAL_ID"
LOCK_FILE = "LOCK"


SKIPPED: dict = {"k": ""}  # read(kinds=...): records passed over up to this entry's cursor


class JournalLocked(RuntimeError):
    pass


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    segment: int = 1
    offset: int = 0

    def to_obj(self) -> dict:
        return {"segment": self.segment, "offset": self.offset}

    @classmethod
    def from_obj(cls, obj: dict | None) -> Cursor:
        if not obj:
            return cls()
        return cls(int(obj["segment"]), int(obj["offset"]))


class Journal:
    def __init__(self, directory: str | Path, fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalLocked(f"journal {self.dir} is in use by another process") from None
        id_path = self.dir / ID_FILE
        if not id_path.exists():
            tmp = id_path.with_suffix(".tmp")
            tmp.write_text(uuid.uuid4().hex[:12])
            os.replace(tmp, id_path)
        self.id = id_path.read_text().strip()  # names this journal's cursors and audit chain in etcd
        self.fsync = fsync
        segments = self.segments()
        self.segment = segments[-1] if segments else 1
        path = self._path(self.segment)
        self._trim_torn_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.size = os.fstat(self._fd).st_size

    def _path(self, segment: int) -> Path:
        return self.dir / f"{segment:08d}.ndjson"

    def segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.ndjson") if p.stem.isdigit())

    @staticmethod
    def _trim_torn_tail(path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with open(path, "r+b") as f:
                f.truncate(end)

    def append(self, records: list[dict]) -> None:
        """Write records durably (one write(2) for all of them) before the call is answered."""
        for r in records:
            if next(iter(r), None) != "k":  # read(kinds=...) finds the kind at a fixed offset
                raise ValueError("a journal record's first key must be 'k'")
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        if self.size + len(data) > SEGMENT_BYTES_MAX and self.size > 0:
            os.close(self._fd)
            self.segment += 1
            self._fd = os.open(self._path(self.segment), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self.size = 0
        os.write(self._fd, data)
        self.size += len(data)
        if self.fsync:
            os.fsync(self._fd)

    @property
    def end(self) -> Cursor:
        return Cursor(self.segment, self.size)

    def read(
        self, cursor: Cursor, limit: int = READ_RECORDS_MAX, kinds: tuple[str, ...] = ()
    ) -> list[tuple[dict, Cursor]]:
        """Up to `limit` whole records after `cursor`, each with the cursor just after it.
        kinds: only records whose "k" is one of these are decoded and returned (the others are
        passed over without parsing; records are written with "k" first); the last entry is
        then a `SKIPPED` marker when records were passed over after the last one returned, so
        the caller's cursor still moves past them."""
        out: list[tuple[dict, Cursor]] = []
        wanted = {k.encode() for k in kinds}
        for s in self.segments():
            if s < cursor.segment:
                continue
            off = cursor.offset if s == cursor.segment else 0
            with open(self._path(s), "rb") as f:
                f.seek(off)
                data = f.read()
            pos = 0
            while len(out) < limit:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    break
                if not wanted or data[pos + 6 : pos + 7] in wanted:
                    out.append((orjson.loads(data[pos:nl]), Cursor(s, off + nl + 1)))
                elif out and out[-1][0] is SKIPPED:
                    out[-1] = (SKIPPED, Cursor(s, off + nl + 1))
                else:
                    out.append((SKIPPED, Cursor(s, off + nl + 1)))
                pos = nl + 1
            if len(out) >= limit:
                break
        return out

    def prune(self, cursor: Cursor) -> None:
        """Delete segments every shipper has passed (those before `cursor`'s)."""
        for s in self.segments():
            if s < cursor.segment and s != self.segment:
                self._path(s).unlink(missing_ok=True)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock_fd)
