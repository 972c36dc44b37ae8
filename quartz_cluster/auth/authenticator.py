"""Who is calling: an API key from gRPC metadata or HTTP headers, checked against the keys in
the router's cached view of etcd (so a revocation reaches every router with the watch, and the
data path never waits on etcd)."""

from __future__ import annotations

import time
from collections.abc import Callable

from quartz_cluster.auth import keys
from quartz_cluster.auth.access import ANONYMOUS, Principal
from quartz_cluster.auth.cluster import ClusterCredentials
from quartz_cluster.coordinator.reconcile import ClusterView
from quartz_cluster.errors import Unauthenticated

MISSING = "missing API key: send 'authorization: Bearer <key>' or 'api-key: <key>'"
UNKNOWN = "unknown or revoked API key"


class Authenticator:
    def __init__(self, credentials: ClusterCredentials | None, view: Callable[[], ClusterView]) -> None:
        self.credentials, self.view = credentials, view

    @property
    def enabled(self) -> bool:
        return self.credentials is not None

    def authenticate(self, metadata, now: float | None = None) -> Principal:
        """The principal of a request's metadata (name, value pairs); Unauthenticated when the
        key is missing, malformed, unknown, revoked or expired. Unknown and wrong-secret answer
        alike, so a caller cannot learn which key ids exist."""
        if self.credentials is None:
            return ANONYMOUS
        key = keys.from_metadata(metadata)
        if key is None:
            raise Unauthenticated(MISSING)
        key_id, secret = keys.parse(key)
        view = self.view()
        rec = view.keys.get(key_id)
        if rec is None or not keys.matches(self.credentials.secret, key_id, secret, rec.hash):
            raise Unauthenticated(UNKNOWN)
        now = time.time() if now is None else now
        if rec.expires_at and now >= rec.expires_at:
            raise Unauthenticated(f"API key {key_id} has expired")
        if rec.tenant not in view.tenants:
            raise Unauthenticated(UNKNOWN)
        return Principal(rec.id, rec.tenant, rec.role, frozenset(rec.collections))
