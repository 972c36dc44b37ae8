"""Cluster credentials: the secret that `quartz up` creates in the cluster dir, and what is
derived from it — the keyed hashes of API keys (auth/keys.py), the member tokens that admit a
process to the internal plane (node RPCs), and etcd's root password. ADR 0013 says why signed
member tokens rather than mutual TLS.

A member token is `qzm1.<member>.<issued unix s>.<HMAC-SHA256 hex>` under the cluster secret.
Every process of the cluster holds the secret (`--cluster-dir D`); a client key never opens the
internal plane, and a token lives TOKEN_TTL_S (a stolen one stops working by itself)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from quartz_cluster.errors import FailedPrecondition, Unauthenticated
from quartz_cluster.meta.store import EtcdAuth

SECRET_FILE = "cluster.secret"  # in the cluster dir; mode 0600
ADMIN_KEY_FILE = "admin.key"  # the bootstrap admin key; mode 0600
SECRET_HEX_CHARS = 64  # 256 bits
ETCD_USER = "root"
MEMBER_METADATA = "quartz-member"  # gRPC metadata carrying the member token
TOKEN_TTL_S = 3600
TOKEN_REFRESH_S = 600  # a caller renews its token this often
TOKEN_CLOCK_SKEW_S = 300  # a token issued up to this far in the future is accepted
VERIFIED_CACHE_MAX = 4096
_TOKEN_RE = re.compile(r"qzm1\.([A-Za-z0-9_-]{1,64})\.([0-9]{1,12})\.([0-9a-f]{64})")


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically (created 0600, never wider)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass(slots=True)
class ClusterCredentials:
    secret: bytes
    _verified: dict[str, float] = field(default_factory=dict, repr=False)  # token -> valid until

    @classmethod
    def load(cls, cluster_dir: str | Path) -> ClusterCredentials:
        path = Path(cluster_dir) / SECRET_FILE
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            raise FailedPrecondition(
                f"{path} does not exist: give the data dir of a `quartz up` cluster (or --no-auth)",
                "cluster_dir",
            ) from None
        if not re.fullmatch(rf"[0-9a-f]{{{SECRET_HEX_CHARS}}}", text):
            raise FailedPrecondition(f"{path} is not a cluster secret", "cluster_dir")
        return cls(bytes.fromhex(text))

    @classmethod
    def create(cls, cluster_dir: str | Path) -> ClusterCredentials:
        """The cluster dir's secret, created (0600) when it has none."""
        path = Path(cluster_dir) / SECRET_FILE
        if not path.exists():
            write_private(path, secrets.token_hex(SECRET_HEX_CHARS // 2) + "\n")
        return cls.load(cluster_dir)

    @property
    def etcd_password(self) -> str:
        return self._derive(b"etcd root password")

    @property
    def etcd_auth(self) -> EtcdAuth:
        return EtcdAuth(ETCD_USER, self.etcd_password)

    def _derive(self, purpose: bytes) -> str:
        return hmac.new(self.secret, purpose, hashlib.sha256).hexdigest()

    def member_token(self, member: str, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        body = f"qzm1.{member}.{issued}"
        return f"{body}.{self._derive(body.encode())}"

    def verify_member(self, token: str | None, now: float | None = None) -> str:
        """The member a token names; Unauthenticated unless it is signed by this cluster's secret
        and current."""
        now = time.time() if now is None else now
        if token is None:
            raise Unauthenticated("the internal API admits cluster members only (no member token)")
        until = self._verified.get(token)
        if until is not None and now < until:
            return token.split(".", 2)[1]
        m = _TOKEN_RE.fullmatch(token) if len(token) < 256 else None
        if m is None:
            raise Unauthenticated("the internal API admits cluster members only (malformed member token)")
        member, issued = m.group(1), int(m.group(2))
        body = f"qzm1.{member}.{issued}"
        if not hmac.compare_digest(self._derive(body.encode()), m.group(3)):
            raise Unauthenticated("the internal API admits cluster members only (bad member token)")
        if not issued - TOKEN_CLOCK_SKEW_S <= now < issued + TOKEN_TTL_S:
            raise Unauthenticated("the internal API admits cluster members only (expired member token)")
        if len(self._verified) >= VERIFIED_CACHE_MAX:
            self._verified.clear()
        self._verified[token] = issued + TOKEN_TTL_S
        return member


class MemberIdentity:
    """A member's current token as gRPC metadata, renewed every TOKEN_REFRESH_S."""

    def __init__(self, credentials: ClusterCredentials, member: str) -> None:
        self.credentials, self.member = credentials, member
        self._issued, self._metadata = 0.0, ()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        now = time.time()
        if now - self._issued >= TOKEN_REFRESH_S:
            self._issued = now
            self._metadata = ((MEMBER_METADATA, self.credentials.member_token(self.member, now)),)
        return self._metadata


def load_optional(cluster_dir: str | None, no_auth: bool, role: str) -> ClusterCredentials | None:
    """A process's credentials from --cluster-dir; None with --no-auth. Neither is an error:
    auth is on by default, and a process must not silently start open."""
    if no_auth:
        return None
    if not cluster_dir:
        raise FailedPrecondition(
            f"quartz {role} needs --cluster-dir D (the data dir of `quartz up`, which holds the cluster "
            "secret) or --no-auth",
            "cluster_dir",
        )
    return ClusterCredentials.load(cluster_dir)
