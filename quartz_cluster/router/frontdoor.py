"""What every public call passes through after authentication (DESIGN §12): rate limits per
key and per tenant, the free plan's quotas, and — once answered — its meter record, audit
event and query-history entry, journaled before the answer leaves (metering/journal.py).

Domain code: the servicer's `guarded` wrapper calls `admit` before the method and `finish`
after it; nothing here knows gRPC beyond reading metadata pairs."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from quartz_cluster.audit.event import make_event, parse_peer
from quartz_cluster.auth import keys as auth_keys
from quartz_cluster.auth.access import Principal
from quartz_cluster.billing import plans
from quartz_cluster.errors import InvalidArgument, QuartzError, ResourceExhausted
from quartz_cluster.metering import ledger
from quartz_cluster.metering.shipper import Shipper
from quartz_cluster.observability.metrics import RATE_LIMIT_REFUSALS
from quartz_cluster.router.ratelimit import QuotaExceeded, SharedLimiter

log = logging.getLogger("quartz.frontdoor")
REQUEST_ID_HEADER = "quartz-request-id"
ATTEMPT_HEADER = "quartz-attempt"
REQUEST_ID_CHARS_MAX = 128
AUTH_FAILURES_AUDITED_PER_S = 20  # beyond this a flood of bad keys is counted, not recorded one by one
HTTP_OF = {
    "OK": 200,
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "FAILED_PRECONDITION": 412,
    "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503,
}


class StoredQuotaExceeded(QuotaExceeded):
    """A batch would take a tenant past a storage quota of its plan (HTTP 403)."""

    def __init__(self, tenant: str, quota: str, current: int, limit: int, adds: int, unit: str) -> None:
        self.scope, self.quota, self.current, self.limit = f"tenant/{tenant}", quota, current, limit
        self.period, self.reset_after_s = "", 0.0
        ResourceExhausted.__init__(
            self,
            f"quota {quota} of tenant {tenant} reached: {current} of {limit} {unit} stored, and this "
            f"batch adds up to {adds} more; nothing was written (upgrade the plan or delete points)",
        )


@dataclass(frozen=True, slots=True)
class Op:
    verb: str
    op_class: str  # read | write | manage (plans.OP_CLASSES)
    billable: bool = True  # an API call on the invoice
    resource: str | None = None  # audited, as this kind of object


OPS: dict[str, Op] = {
    "CreateCollection": Op("create_collection", "manage", resource="collections"),
    "DropCollection": Op("drop_collection", "manage", resource="collections"),
    "ListCollections": Op("list_collections", "read"),
    "DescribeCollection": Op("describe_collection", "read"),
    "Upsert": Op("upsert", "write", resource="points"),
    "Delete": Op("delete", "write", resource="points"),
    "Get": Op("get", "read"),
    "Search": Op("search", "read"),
    "Count": Op("count", "read"),
    "Scroll": Op("scroll", "read"),
    # the account itself: rate limited, not billed
    "CreateTenant": Op("create_tenant", "manage", False, "tenants"),
    "UpdateTenant": Op("update_tenant", "manage", False, "tenants"),
    "ListTenants": Op("list_tenants", "manage", False),
    "DeleteTenant": Op("delete_tenant", "manage", False, "tenants"),
    "CreateKey": Op("create_key", "manage", False, "keys"),
    "ListKeys": Op("list_keys", "manage", False),
    "RevokeKey": Op("revoke_key", "manage", False, "keys"),
    "WhoAmI": Op("whoami", "manage", False),
    "GetUsage": Op("get_usage", "manage", False),
    "GetInvoice": Op("get_invoice", "manage", False),
    "BillingHistory": Op("billing_history", "manage", False),
    "QueryHistory": Op("query_history", "manage", False),
    "ListAudit": Op("list_audit", "manage", False),
    "VerifyAudit": Op("verify_audit", "manage", False),
    # backups (admin keys): rate limited, not billed
    "CreateBackup": Op("create_backup", "manage", False, "backups"),
    "GetBackup": Op("get_backup", "manage", False),
    "ListBackups": Op("list_backups", "manage", False),
    "DescribeBackup": Op("describe_backup", "manage", False),
    "DeleteBackup": Op("delete_backup", "manage", False, "backups"),
    "RestoreBackup": Op("restore_backup", "manage", False, "collections"),
    "SetBackupSchedule": Op("set_backup_schedule", "manage", False, "backup-schedules"),
    "ListBackupSchedules": Op("list_backup_schedules", "manage", False),
    "DeleteBackupSchedule": Op("delete_backup_schedule", "manage", False, "backup-schedules"),
}


def cost(method: str, request) -> int:
    """Tokens a call takes from its class's bucket: points written, queries searched, else 1."""
    if method == "Upsert":
        return max(1, len(request.points.ids))
    if method == "Delete":
        return max(1, len(request.ids))
    if method == "Search":
        return max(1, request.queries.count)
    return 1


def object_name(method: str, request) -> str:
    for field in ("collection", "name", "id"):
        value = getattr(request, field, None)
        if isinstance(value, str) and value:
            return value
    if method == "CreateCollection":
        return request.config.name
    return ""


def request_id(metadata) -> tuple[str, int]:
    """The caller's request id (the same on every attempt of one call) and attempt number; a
    call without one gets a fresh id (it cannot be told from a retry)."""
    rid, attempt = "", 1
    for k, v in metadata:
        if k == REQUEST_ID_HEADER and isinstance(v, str) and 0 < len(v) <= REQUEST_ID_CHARS_MAX:
            rid = v
        elif k == ATTEMPT_HEADER:
            try:
                attempt = max(1, int(v))
            except (TypeError, ValueError):
                raise InvalidArgument(f"must be a positive integer, got {v!r}", ATTEMPT_HEADER) from None
    return rid or uuid.uuid4().hex, attempt


def _header(metadata, name: str) -> str:
    for k, v in metadata:
        if k == name and isinstance(v, str):
            return v
    return ""


class FrontDoor:
    def __init__(
        self,
        view: Callable[[], object],
        limiter: SharedLimiter,
        shipper: Shipper,
        storage_of: Callable[[str], Awaitable[tuple[int, int]]],
        new_points: Callable[..., Awaitable[int]],
    ) -> None:
        self.view, self.limiter, self.shipper, self.storage_of = view, limiter, shipper, storage_of
        self.new_points = new_points
        self._auth_failures = (0, 0)  # (second, count)

    # ------------------------------------------------------------------ before the call

    def limits_of(self, principal: Principal, op_class: str) -> list[tuple[str, str, object]]:
        """(scope, class, Rate) buckets a call of this principal takes from."""
        tenant = self.view().tenants.get(principal.tenant)
        plan = plans.plan(tenant.plan if tenant else "free")
        out = []
        rate = plan.rates().get(op_class)
        for text in tenant.rate_limits if tenant else ():
            cls, r = _rate(text)
            if cls == op_class:
                rate = r
        if rate is not None:
            out.append((f"tenant/{principal.tenant}", op_class, rate))
        key = self.view().keys.get(principal.key_id)
        for text in key.rate_limits if key else ():
            cls, r = _rate(text)
            if cls == op_class:
                out.append((f"key/{principal.key_id}", op_class, r))
        return out

    def namespace(self, principal: Principal, method: str, request) -> str:
        """The tenant an audited call acts on (an admin may act on another tenant's keys)."""
        if method in ("CreateTenant", "UpdateTenant", "DeleteTenant"):
            return request.name
        if method == "CreateKey":
            return request.tenant or principal.tenant
        if method == "RevokeKey":
            rec = self.view().keys.get(request.id)
            return rec.tenant if rec is not None else principal.tenant
        return principal.tenant

    async def admit(self, principal: Principal, method: str, request, metadata) -> tuple[str, bool, str]:
        """Rate limits and quotas; (request id, whether to meter the call when it succeeds, the
        tenant it acts on). Each refusal counts in quartz_rate_limit_refusals_total{reason}."""
        try:
            return await self._admit(principal, method, request, metadata)
        except QuotaExceeded:  # a plan's quota (calls per day, stored vectors or bytes)
            RATE_LIMIT_REFUSALS.labels("quota").inc()
            raise

    async def take(self, principal: Principal, op_class: str, n: int) -> None:
        """`n` tokens from each of the caller's buckets of `op_class` (its tenant's and its
        key's). An empty one refuses the call (ResourceExhausted), counted in
        quartz_rate_limit_refusals_total{reason="rate"}. Also used by routes that are not
        servicer methods (the dashboard's)."""
        buckets = self.limits_of(principal, op_class)
        if not buckets:
            return
        try:
            await self.limiter.acquire_all([(scope, cls, rate, n) for scope, cls, rate in buckets])
        except ResourceExhausted:
            RATE_LIMIT_REFUSALS.labels("rate").inc()
            raise

    async def _admit(self, principal: Principal, method: str, request, metadata) -> tuple[str, bool, str]:
        op = OPS[method]
        rid, attempt = request_id(metadata)
        await self.take(principal, op.op_class, cost(method, request))
        meter = op.billable and not (attempt > 1 and await self.shipper.counted(rid))
        tenant = self.view().tenants.get(principal.tenant)
        plan = plans.plan(tenant.plan if tenant else "free")
        quotas = plan.quotas()
        if method == "Upsert" and (
            quotas.get(plans.QUOTA_STORED_VECTORS) or quotas.get(plans.QUOTA_STORAGE_BYTES)
        ):
            vectors, nbytes = await self.storage_of(principal.tenant)
            limit = quotas.get(plans.QUOTA_STORED_VECTORS)
            adds = len(request.points.ids)
            if limit and vectors + adds > limit:
                adds = await self.new_points(principal, request.collection, request.points.ids)
                if vectors + adds > limit:
                    raise StoredQuotaExceeded(
                        principal.tenant, plans.QUOTA_STORED_VECTORS, vectors, limit, adds, "vectors"
                    )
            limit = quotas.get(plans.QUOTA_STORAGE_BYTES)
            adds = len(request.points.vectors.data) + sum(len(p) for p in request.points.payloads)
            if limit and nbytes + adds > limit:
                raise StoredQuotaExceeded(
                    principal.tenant, plans.QUOTA_STORAGE_BYTES, nbytes, limit, adds, "bytes"
                )
        if op.billable and meter and quotas.get(plans.QUOTA_CALLS_PER_DAY):
            await self.limiter.acquire_window(
                f"tenant/{principal.tenant}",
                plans.QUOTA_CALLS_PER_DAY,
                quotas[plans.QUOTA_CALLS_PER_DAY],
                "day",
                1,
            )
        return rid, meter, self.namespace(principal, method, request) if op.resource else principal.tenant

    # ------------------------------------------------------------------ after the call

    def finish(
        self,
        principal: Principal,
        method: str,
        request,
        reply,
        error: BaseException | None,
        context,
        metadata,
        received: float,
        rid: str,
        meter: bool,
        namespace: str,
    ) -> None:
        """Journal what the call leaves behind, before its answer is sent."""
        op = OPS[method]
        now = time.time()
        code = "OK" if error is None else getattr(error, "code", "INTERNAL")
        records: list[dict] = []
        if meter and error is None:
            written = 0
            if method == "Upsert":
                written = len(request.points.ids) - len(reply.errors)
            records.append(
                {
                    "k": ledger.METER,
                    "rid": rid,
                    "t": now,
                    "tn": principal.tenant,
                    "key": principal.key_id,
                    "op": op.verb,
                    "n": written,
                }
            )
        if method == "Search":
            records.append(
                {
                    "k": ledger.QUERY,
                    "t": now,
                    "tn": principal.tenant,
                    "key": principal.key_id,
                    "c": request.collection,
                    "kk": request.k,
                    "nq": request.queries.count,
                    "f": bool(request.filter),
                    "ms": round((now - received) * 1000, 3),
                    "st": code,
                }
            )
        if op.resource is not None:
            annotations: dict[str, str | int] = {}
            if method in ("Upsert", "Delete"):
                annotations["quartz/points"] = cost(method, request)
                if reply is not None and error is None:
                    annotations["quartz/point-errors"] = len(reply.errors)
            records.append(
                {
                    "k": ledger.AUDIT,
                    "e": make_event(
                        verb=op.verb,
                        code=HTTP_OF.get(code, 500),
                        reason=code,
                        message="" if error is None else str(error),
                        key_id=principal.key_id,
                        tenant=principal.tenant,
                        role=principal.role,
                        resource=op.resource,
                        namespace=namespace,
                        name=object_name(method, request),
                        source_ips=[_peer(context)],
                        user_agent=_header(metadata, "user-agent"),
                        annotations=annotations,
                        received=received,
                        completed=now,
                    ),
                }
            )
        if records:
            self.shipper.record(records)

    def auth_failed(self, method: str, error: QuartzError, context, metadata, received: float) -> None:
        """An authentication failure, audited (a flood: the first AUTH_FAILURES_AUDITED_PER_S a
        second, then one event with the count of the rest)."""
        second = int(received)
        last, count = self._auth_failures
        count = count + 1 if second == last else 1
        self._auth_failures = (second, count)
        if count > AUTH_FAILURES_AUDITED_PER_S:
            return
        key_id = tenant = ""
        try:  # the public part of the key presented, if it is shaped like one (never the secret)
            key_id = auth_keys.parse(auth_keys.from_metadata(metadata) or "")[0]
            rec = self.view().keys.get(key_id)
            tenant = rec.tenant if rec is not None else ""
        except QuartzError:
            pass
        self.shipper.record(
            [
                {
                    "k": ledger.AUDIT,
                    "e": make_event(
                        verb="authenticate",
                        code=401,
                        key_id=key_id,
                        tenant=tenant,
                        reason=error.code,
                        message=str(error),
                        resource=None,
                        name=OPS[method].verb if method in OPS else method,
                        source_ips=[_peer(context)],
                        user_agent=_header(metadata, "user-agent"),
                        annotations={"quartz/method": method},
                        received=received,
                        completed=time.time(),
                    ),
                }
            ]
        )


@functools.lru_cache(maxsize=4096)
def _rate(text: str):
    return plans.parse_rate(text)


def _peer(context) -> str:
    try:
        return parse_peer(context.peer())
    except Exception:
        return ""
