"""Who may read the dashboard's cluster-wide routes (/v1/admin/cluster, /v1/admin/latency): a
cluster admin only (Action.CLUSTER, as for tenants and audit verification).

These routes are not servicer methods (no gRPC twin: see docs/dashboard.md), so they pass the
same checks as one here, in the same order as router/guard.py's `guarded`: the key is
authenticated by the router's Authenticator (a failure audited by the front door, like any
other), the call takes a token from the caller's "manage" rate limits, then the role is
checked. Nothing is metered or audited on success: both routes only read, as ListTenants does.
A refusal by the rate limits counts in quartz_rate_limit_refusals_total{reason="rate"}
(FrontDoor.take), as the front door's own do."""

from __future__ import annotations

import time

from quartz_cluster.auth import access
from quartz_cluster.auth.access import Action, Principal
from quartz_cluster.errors import PermissionDenied, QuartzError

OP_CLASS = "manage"  # the rate-limit class of administrative calls (router/frontdoor.py OPS)


async def cluster_admin(service, metadata, context, method: str, what: str) -> Principal:
    """The caller's principal, once it is authenticated, admitted by its rate limits and an
    admin. `method`: the name audit records use for a failed authentication; `what`: what the
    route shows, for the refusal's message."""
    door = service.frontdoor
    received = time.time()
    try:
        principal = service.auth.authenticate(metadata)
    except QuartzError as exc:
        if door is not None:
            door.auth_failed(method, exc, context, metadata, received)
        raise
    if door is not None:
        await door.take(principal, OP_CLASS, 1)
    try:
        access.authorize(principal, Action.CLUSTER)
    except PermissionDenied:
        raise PermissionDenied(
            f"{principal.describe()} may not read {what}: it needs a cluster admin key (role admin)"
        ) from None
    return principal
