"""API keys: `qz_<key id>_<secret>`. The key id is public (logs, audit, usage); the secret is
shown once, and only its keyed hash (HMAC-SHA256 under the cluster secret, bound to the key id)
is stored. Pure: no I/O."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from quartz_cluster.errors import Unauthenticated

KEY_PREFIX = "qz_"
KEY_ID_HEX_CHARS = 12
SECRET_HEX_CHARS = 40  # 160 bits
_KEY_RE = re.compile(rf"qz_([0-9a-f]{{{KEY_ID_HEX_CHARS}}})_([0-9a-f]{{{SECRET_HEX_CHARS}}})")
KEY_CHARS_MAX = 256  # a longer header value is refused before any parsing


def new_key() -> tuple[str, str, str]:
    """(key id, secret, the key as the user sends it)."""
    key_id = secrets.token_hex(KEY_ID_HEX_CHARS // 2)
    secret = secrets.token_hex(SECRET_HEX_CHARS // 2)
    return key_id, secret, f"{KEY_PREFIX}{key_id}_{secret}"


def parse(key: str) -> tuple[str, str]:
    """(key id, secret) of a key; Unauthenticated if it is not one (the value is never echoed:
    it may be a secret sent by mistake)."""
    m = _KEY_RE.fullmatch(key) if len(key) <= KEY_CHARS_MAX else None
    if m is None:
        raise Unauthenticated(
            f"malformed API key: expected {KEY_PREFIX}<key id>_<secret> "
            f"({KEY_ID_HEX_CHARS} and {SECRET_HEX_CHARS} hex digits)"
        )
    return m.group(1), m.group(2)


def digest(cluster_secret: bytes, key_id: str, secret: str) -> str:
    """The keyed hash stored for a key: HMAC-SHA256 over "<key id>:<secret>"."""
    return hmac.new(cluster_secret, f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def matches(cluster_secret: bytes, key_id: str, secret: str, stored: str) -> bool:
    return hmac.compare_digest(digest(cluster_secret, key_id, secret), stored)


def from_metadata(metadata) -> str | None:
    """The key in gRPC metadata or HTTP headers (pairs of lower-case names and values):
    `authorization: Bearer <key>` or `api-key: <key>`; None when neither is there."""
    for name, value in metadata or ():
        if name == "authorization":
            scheme, _, token = str(value).partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated("authorization must be 'Bearer <API key>'")
            return token.strip()
        if name == "api-key":
            return str(value).strip()
    return None
