"""What the coordinator leader does for billing (DESIGN §12), on its own loop beside the shard
map: sample each tenant's stored vectors and bytes and integrate them into vector-seconds and
byte-seconds per hour; send usage alerts at 80 % and 100 % of a free plan's quotas; send each
paid tenant's hourly charge to Stripe as a meter event.

Every etcd write compares the leader key's create revision, so a deposed leader writes
nothing; every write is a compare-and-swap, so nothing is integrated or sent twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import grpc
import orjson

from quartz_cluster.billing import invoice, plans, webhooks
from quartz_cluster.billing.stripe_meter import Pending, StripeMeter
from quartz_cluster.meta import schema
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.metering import keys
from quartz_cluster.proto.quartz.v1 import node_pb2
from quartz_cluster.router.ratelimit import SharedLimiter

log = logging.getLogger("quartz.billing")
STATS_TIMEOUT_S = 2.0
HOUR_S = 3600
STRIPE_HOURS_PER_PASS_MAX = 48  # a long outage is caught up over several passes
ALERT_ATTEMPTS = 5


@dataclass(slots=True)
class BillingSettings:
    sample_s: float = 60.0  # storage sampling (and alert, Stripe) interval
    stripe_api_key: str | None = None  # None: usage is not sent to Stripe
    stripe_api_base: str | None = None  # another Stripe API endpoint (tests: a local stand-in)


def split_by_hour(t0: float, t1: float) -> list[tuple[str, float]]:
    """[(hour, seconds of [t0, t1) in it)] (pure)."""
    out = []
    t = t0
    while t < t1:
        end = min(t1, (int(t) // HOUR_S + 1) * HOUR_S)
        out.append((keys.hour_of(t), end - t))
        t = end
    return out


class Billing:
    def __init__(self, store: EtcdStore, channels, settings: BillingSettings, leader_revision) -> None:
        self.store, self.channels, self.settings = store, channels, settings
        self.leader_revision = leader_revision  # () -> create revision of our leader key, or None
        self.stripe = (
            StripeMeter(settings.stripe_api_key, settings.stripe_api_base)
            if settings.stripe_api_key
            else None
        )
        self.deliveries: set[asyncio.Task] = set()  # one per pending alert (bounded by the alerts)
        self.limits = SharedLimiter(store)  # only to read the daily call counters

    def _fence(self) -> list:
        rev = self.leader_revision()
        if rev is None:
            raise RuntimeError("not the leader")
        return [self.store.txn.create(schema.LEADER) == rev]

    async def run(self, view_of, deposed: asyncio.Event) -> None:
        while not deposed.is_set():
            view = view_of()
            if view is not None:
                for step in (self.sample, self.alerts, self.send_stripe):
                    try:
                        await step(view)
                    except Exception as exc:
                        log.warning("billing step failed", extra={"step": step.__name__, "error": repr(exc)})
            try:
                await asyncio.wait_for(deposed.wait(), self.settings.sample_s)
            except TimeoutError:
                pass

    # ------------------------------------------------------------------ storage

    async def storage(self, view) -> dict[str, tuple[int, int]]:
        """(vectors, bytes) per tenant now, from each shard's primary; a tenant with a shard
        that did not answer is left out (its last sample goes on counting)."""
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        failed: set[str] = set()

        async def one(coll, shard, rec):
            node = view.nodes.get(rec.primary)
            if node is None:
                failed.add(coll.tenant)
                return
            req = node_pb2.StatsRequest(ref=node_pb2.ShardRef(collection_id=coll.id, shard=shard))
            try:
                st = await self.channels.stub(node.address).Stats(req, timeout=STATS_TIMEOUT_S)
            except grpc.RpcError:
                failed.add(coll.tenant)
                return
            t = totals[coll.tenant]
            t[0] += st.count
            t[1] += st.storage_bytes

        calls = []
        for tenant in view.tenants:
            totals[tenant]  # a tenant without collections stores 0
        for coll in view.collections.values():
            if coll.id in view.tombstones:
                continue
            shards = view.shards.get(coll.id, {})
            if len(shards) < coll.shards:
                failed.add(coll.tenant)
            calls.extend(one(coll, s, rec) for s, (rec, _) in shards.items())
        await asyncio.gather(*calls)
        return {t: (v[0], v[1]) for t, v in totals.items() if t not in failed}

    async def sample(self, view, now: float | None = None) -> None:
        figures = await self.storage(view)
        now = time.time() if now is None else now
        for tenant, (vectors, nbytes) in figures.items():
            await self._integrate(tenant, vectors, nbytes, now)

    async def _integrate(self, tenant: str, vectors: int, nbytes: int, now: float) -> None:
        """Add what the previous sample stored, over the time since it, to the hours it spans;
        then record this sample. One transaction, compared on the previous sample."""
        t = self.store.txn
        skey = keys.stored_key(tenant)
        kv = await self.store.get(skey)
        compare = [*self._fence(), t.mod(skey) == kv.mod_revision if kv else t.create(skey) == 0]
        success = [t.put(skey, orjson.dumps({"vectors": vectors, "bytes": nbytes, "at": now}))]
        if kv is not None:
            prev = orjson.loads(kv.value)
            for hour, seconds in split_by_hour(prev["at"], now):
                hkey = keys.storage_key(tenant, hour)
                hkv = await self.store.get(hkey)
                doc = orjson.loads(hkv.value) if hkv else {"vector_seconds": 0.0, "byte_seconds": 0.0}
                doc["vector_seconds"] += prev["vectors"] * seconds
                doc["byte_seconds"] += prev["bytes"] * seconds
                compare.append(t.mod(hkey) == hkv.mod_revision if hkv else t.create(hkey) == 0)
                success.append(t.put(hkey, orjson.dumps(doc)))
        ok, _ = await self.store.transaction(compare=compare, success=success)
        if not ok:
            log.info("storage sample raced; next pass", extra={"tenant": tenant})

    # ------------------------------------------------------------------ usage alerts

    async def alerts(self, view, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for tenant in view.tenants.values():
            plan = plans.plan(tenant.plan)
            quotas = plan.quotas()
            if not quotas or not tenant.webhook_url:
                continue
            figures = await self._figures(tenant.name)
            for quota, percent in webhooks.thresholds_crossed(quotas, figures):
                period = webhooks.period_of(quota, now)
                akey = keys.alert_key(tenant.name, quota, period, percent)
                body = webhooks.alert_body(
                    tenant.name, quota, period, percent, quotas[quota], figures[quota], now
                )
                t = self.store.txn
                doc = {"state": "pending", "body": body.decode()}
                ok, _ = await self.store.transaction(
                    compare=[*self._fence(), t.create(akey) == 0], success=[t.put(akey, orjson.dumps(doc))]
                )
                if ok:
                    log.info("usage alert", extra={"tenant": tenant.name, "quota": quota, "percent": percent})
        await self._deliver_pending(view)

    async def _figures(self, tenant: str) -> dict[str, float]:
        kv = await self.store.get(keys.stored_key(tenant))
        stored = orjson.loads(kv.value) if kv else {"vectors": 0, "bytes": 0}
        from quartz_cluster.router.ratelimit import _window_count, window_key, window_label

        wkv = await self.store.get(window_key(f"tenant/{tenant}", plans.QUOTA_CALLS_PER_DAY, "day"))
        calls = _window_count(wkv.value if wkv else None, window_label("day", time.time()))
        return {
            plans.QUOTA_STORED_VECTORS: stored["vectors"],
            plans.QUOTA_STORAGE_BYTES: stored["bytes"],
            plans.QUOTA_CALLS_PER_DAY: calls,
        }

    async def _deliver_pending(self, view) -> None:
        """Alerts not yet delivered: sent (again, with the same id) by a background task each."""
        if self.deliveries:
            return  # the previous pass's deliveries are still trying
        for kv in await self.store.range(keys.ALERTS, keys.prefix_end(keys.ALERTS)):
            doc = orjson.loads(kv.value)
            if doc.get("state") != "pending":
                continue
            tenant = kv.key[len(keys.ALERTS) :].decode().split("/", 1)[0]
            rec = view.tenants.get(tenant)
            if rec is None or not rec.webhook_url:
                continue
            task = asyncio.create_task(self._deliver(kv, doc, rec))
            self.deliveries.add(task)
            task.add_done_callback(self.deliveries.discard)

    async def _deliver(self, kv, doc: dict, rec: schema.TenantRecord) -> None:
        body = doc["body"].encode()
        alert = orjson.loads(body)["id"]
        ok = await webhooks.deliver(
            rec.webhook_url, rec.webhook_secret.encode(), body, alert, attempts=ALERT_ATTEMPTS
        )
        if ok:
            t = self.store.txn
            done = orjson.dumps({**doc, "state": "delivered", "delivered_at": time.time()})
            await self.store.transaction(
                compare=[t.mod(kv.key) == kv.mod_revision], success=[t.put(kv.key, done)]
            )
        else:
            log.warning(
                "usage alert not delivered; retrying next pass", extra={"tenant": rec.name, "alert": alert}
            )

    # ------------------------------------------------------------------ Stripe

    async def send_stripe(self, view, now: float | None = None) -> None:
        """Each paid tenant's complete hours since its cursor, one meter event per hour with
        usage; the cursor moves past what was sent (a failure is retried next pass)."""
        if self.stripe is None:
            return
        now = time.time() if now is None else now
        current = keys.hour_of(now)
        for tenant in view.tenants.values():
            plan = plans.plan(tenant.plan)
            if not tenant.stripe_customer or plan.price_call_usd == 0:
                continue
            ckey = keys.stripe_key(tenant.name)
            ckv = await self.store.get(ckey)
            last = orjson.loads(ckv.value)["hour"] if ckv else ""
            hours = await self._hour_usage(tenant.name, last, current)
            pending = [
                Pending(
                    tenant.name, tenant.stripe_customer, hour, invoice.hour_charge_microusd(plan, u, hour[:7])
                )
                for hour, u in hours
            ][:STRIPE_HOURS_PER_PASS_MAX]
            if not pending:
                continue
            sent = await asyncio.to_thread(self.stripe.send_pending, [p for p in pending if p.value > 0])
            # the cursor passes the sent hours and the zero-charge hours before the first unsent one
            unsent = {p.hour for p in pending if p.value > 0} - {p.hour for p in sent}
            done = [p.hour for p in pending if not unsent or p.hour < min(unsent)]
            if not done:
                continue
            t = self.store.txn
            await self.store.transaction(
                compare=[*self._fence(), t.mod(ckey) == ckv.mod_revision if ckv else t.create(ckey) == 0],
                success=[t.put(ckey, orjson.dumps({"hour": done[-1], "at": now}))],
            )

    async def _hour_usage(self, tenant: str, after: str, before: str) -> list[tuple[str, invoice.Usage]]:
        """(hour, usage) for hours with usage, after `after` and before `before` (hour strings)."""
        from quartz_cluster.metering.ledger import CallsHour

        by_hour: dict[str, list] = defaultdict(lambda: [0, 0, 0.0, 0.0])
        for root, is_calls in ((keys.calls_key(tenant, ""), True), (keys.storage_key(tenant, ""), False)):
            for kv in await self.store.range(root, keys.prefix_end(root)):
                hour = kv.key.decode().rsplit("/", 1)[1]
                if not (after < hour < before):
                    continue
                u = by_hour[hour]
                if is_calls:
                    doc = CallsHour.from_json(kv.value)
                    u[0] += doc.total_calls
                    u[1] += doc.total_vectors
                else:
                    doc = orjson.loads(kv.value)
                    u[2] += doc["vector_seconds"]
                    u[3] += doc["byte_seconds"]
        return [(h, invoice.Usage(int(u[0]), int(u[1]), u[2], u[3])) for h, u in sorted(by_hour.items())]
