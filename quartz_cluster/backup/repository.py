"""Where backups live: a directory (`file:///DIR`) or an S3 prefix (`s3://BUCKET/PREFIX`), behind
one small interface so every other module runs the same code for both (ADR 17).

Layout of a repository:
  objects/<sha256>               file contents, content-addressed: a file already present is
                                 never copied again (what makes backups incremental)
  backups/<id>/parts/<cid>-<n>   one shard's part of a backup, as its node reported it
  backups/<id>/manifest.json     written last: a backup without it is not complete

Writes are atomic: a file repository writes a temp file, fsyncs and renames it; S3 makes an
object visible only once its upload (multipart for big objects) completes. S3 credentials and
endpoint come from the standard AWS settings (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL_S3, ...).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

from quartz_cluster.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

COPY_CHUNK_BYTES = 4 << 20
MULTIPART_THRESHOLD_BYTES = 16 << 20  # S3 objects above this are uploaded in parts
MULTIPART_CHUNK_BYTES = 16 << 20
S3_CONCURRENCY = 4  # parts of one object in flight
URL_CHARS_MAX = 1024


class RepositoryError(FailedPrecondition):
    """The repository cannot be read or written (missing, unwritable, unreachable)."""


class RepositoryFull(ResourceExhausted):
    """The repository has no space left."""


def _failure(exc: Exception, url: str, key: str, doing: str) -> Exception:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return RepositoryFull(f"backup repository {url} is full: no space left {doing} {key}")
    reason = f"{type(exc).__name__}: {exc}"
    return RepositoryError(f"backup repository {url}: {doing} {key} failed ({reason})", "repository")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(COPY_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def object_key(sha256: str) -> str:
    return f"objects/{sha256}"


class Repository:
    url: str

    def put_bytes(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def put_file(self, key: str, path: str) -> None:
        raise NotImplementedError

    def get_bytes(self, key: str) -> bytes:
        raise NotImplementedError

    def get_file(self, key: str, path: str) -> str:
        """Download to path; returns the sha256 of what was written."""
        raise NotImplementedError

    def read_chunks(self, key: str) -> Iterator[bytes]:
        raise NotImplementedError

    def size(self, key: str) -> int | None:
        """The object's size, None if it does not exist."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Keys under prefix (recursively), sorted."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def put_new_file(self, path: str) -> tuple[str, int]:
        """Store a file whose hash is not known yet as objects/<sha256>; returns (sha256, bytes
        copied: 0 if the object was already there)."""
        digest = sha256_file(path)
        size = os.path.getsize(path)
        if self.size(object_key(digest)) == size:
            return digest, 0
        self.put_file(object_key(digest), path)
        return digest, size

    def check_writable(self) -> None:
        """Write and remove a probe object: a target that cannot take a backup fails before one
        starts, with the reason."""
        key = f"tmp/probe-{uuid.uuid4().hex}"
        self.put_bytes(key, b"quartz")
        self.delete(key)

    def sha256(self, key: str) -> str:
        h = hashlib.sha256()
        for chunk in self.read_chunks(key):
            h.update(chunk)
        return h.hexdigest()


class FileRepository(Repository):
    def __init__(self, url: str, root: str) -> None:
        self.url, self.root = url, root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *key.split("/"))

    def _atomic(self, key: str, write) -> None:
        path = self._path(key)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(os.path.dirname(path), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise _failure(exc, self.url, key, "writing") from None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda f: f.write(data))

    def put_file(self, key: str, path: str) -> None:
        def copy(f) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, COPY_CHUNK_BYTES)

        self._atomic(key, copy)

    def put_new_file(self, path: str) -> tuple[str, int]:
        """One pass: copy to a temp file while hashing, then rename it to its object name."""
        h = hashlib.sha256()
        tmp_key = f"tmp/{uuid.uuid4().hex}"

        def copy(f) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(COPY_CHUNK_BYTES):
                    h.update(chunk)
                    f.write(chunk)

        self._atomic(tmp_key, copy)
        digest = h.hexdigest()
        size = os.path.getsize(self._path(tmp_key))
        if self.size(object_key(digest)) == size:
            self.delete(tmp_key)
            return digest, 0
        final = self._path(object_key(digest))
        try:
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(self._path(tmp_key), final)
            dfd = os.open(os.path.dirname(final), os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            raise _failure(exc, self.url, object_key(digest), "writing") from None
        return digest, size

    def get_bytes(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFound(f"{key} is not in backup repository {self.url}", "repository") from None
        except OSError as exc:
            raise _failure(exc, self.url, key, "reading") from None

    def get_file(self, key: str, path: str) -> str:
        h = hashlib.sha256()
        with open(path, "wb") as out:
            for chunk in self.read_chunks(key):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        return h.hexdigest()

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            with open(self._path(key), "rb") as f:
                while chunk := f.read(COPY_CHUNK_BYTES):
                    yield chunk
        except FileNotFoundError:
            raise NotFound(f"{key} is not in backup repository {self.url}", "repository") from None
        except OSError as exc:
            raise _failure(exc, self.url, key, "reading") from None

    def size(self, key: str) -> int | None:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix else self.root
        out: list[str] = []
        if not os.path.isdir(base):
            return out
        for dirpath, _, files in os.walk(base):
            for name in files:
                if ".tmp-" in name:
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), self.root)
                out.append(rel.replace(os.sep, "/"))
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            os.remove(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _failure(exc, self.url, key, "deleting") from None


class S3Repository(Repository):
    def __init__(self, url: str, bucket: str, prefix: str) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.url, self.bucket, self.prefix = url, bucket, prefix.strip("/")
        self.client = boto3.client(
            "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10)
        )
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD_BYTES,
            multipart_chunksize=MULTIPART_CHUNK_BYTES,
            max_concurrency=S3_CONCURRENCY,
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _wrap(self, exc: Exception, key: str, doing: str) -> Exception:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                return NotFound(f"{key} is not in backup repository {self.url}", "repository")
            if code == "NoSuchBucket":
                return RepositoryError(f"backup repository {self.url}: no bucket {self.bucket}", "repository")
        return _failure(exc, self.url, key, doing)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._wrap(exc, key, "writing") from None

    def put_file(self, key: str, path: str) -> None:
        try:
            self.client.upload_file(path, self.bucket, self._key(key), Config=self.transfer)
        except Exception as exc:
            raise self._wrap(exc, key, "writing") from None

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            raise self._wrap(exc, key, "reading") from None

    def get_file(self, key: str, path: str) -> str:
        try:
            self.client.download_file(self.bucket, self._key(key), path, Config=self.transfer)
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        except Exception as exc:
            raise self._wrap(exc, key, "reading") from None
        return sha256_file(path)

    def read_chunks(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            while chunk := body.read(COPY_CHUNK_BYTES):
                yield chunk
        except Exception as exc:
            raise self._wrap(exc, key, "reading") from None

    def size(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except Exception as exc:
            err = self._wrap(exc, key, "reading")
            if isinstance(err, NotFound):
                return None
            raise err from None

    def list(self, prefix: str) -> list[str]:
        out: list[str] = []
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                out.extend(o["Key"][strip:] for o in page.get("Contents", ()))
        except Exception as exc:
            raise self._wrap(exc, prefix, "listing") from None
        return sorted(out)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._wrap(exc, key, "deleting") from None


def open_repository(url: str) -> Repository:
    """A repository from its URL; InvalidArgument naming `repository` if the URL is not one."""
    if not url or len(url) > URL_CHARS_MAX:
        raise InvalidArgument(
            f"must be file:///DIR or s3://BUCKET/PREFIX (1..{URL_CHARS_MAX} chars)", "repository"
        )
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise InvalidArgument(f"{url!r}: a file repository is file:///ABSOLUTE/DIR", "repository")
        return FileRepository(url, os.path.normpath(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidArgument(f"{url!r}: an S3 repository is s3://BUCKET/PREFIX", "repository")
        return S3Repository(url, parsed.netloc, parsed.path)
    raise InvalidArgument(f"{url!r}: must be file:///DIR or s3://BUCKET/PREFIX", "repository")
