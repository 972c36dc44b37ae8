"""Ships a router's journal to etcd exactly once (ADR 0016).

Usage: each pass reads records after the journal's cursor, folds them into hourly documents
and writes, in ONE etcd transaction, the documents (compare-and-swap on each), the request ids
they counted and the new cursor. A pass that dies before the transaction leaves nothing; one
that dies after it left the cursor past its records: nothing is counted twice by a restart.

Retries: the SDK sends one request id per call, the same on each attempt, and the attempt
number. A call is metered when it is answered; if its router dies before the answer reaches
the client, the client retries, maybe on another router. So (1) a router meters a retried call
(attempt > 1) only if no journal has counted its id (its own recent ids, then the ids shipped
to etcd in the last RID_WINDOW_S); (2) a router restarting ships the records it journaled
before it died only after checking them against the ids other routers shipped meanwhile.

Audit: audit events in the journal become hash-chained records (audit/chain.py) of this
journal's chain, written with the chain's head and cursor in one transaction: a pass repeated
after a crash rewrites the same records with the same sequence numbers."""

from __future__ import annotations

import asyncio
import collections
import logging
import time

import orjson

from quartz_cluster.audit.chain import Chain
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.metering import keys, ledger
from quartz_cluster.metering.journal import READ_RECORDS_MAX, Cursor, Journal

log = logging.getLogger("quartz.metering")
SHIP_INTERVAL_S = 0.5
RID_WINDOW_S = 300.0  # a retry later than this after the first attempt may be counted twice
RID_GC_INTERVAL_S = 30.0
RECOVERY_WAIT_S = 2 * SHIP_INTERVAL_S  # let live routers ship the retries they took meanwhile
TXN_PUTS_MAX = 120  # etcd refuses a transaction of more than 128 operations (--max-txn-ops)
AUDIT_BATCH_MAX = 100
CAS_ATTEMPTS_MAX = 20
MEMORY_RIDS_MAX = 1_000_000
# a tenant's query history is rewritten at most this often per router (each write is a new etcd
# revision of a document of up to QUERY_HISTORY_MAX entries: kept small and rare)
QUERY_SHIP_INTERVAL_S = 5.0
COUNTED_TIMEOUT_S = 0.25


class Shipper:
    def __init__(self, journal: Journal, store: EtcdStore, writer: str, interval_s: float = SHIP_INTERVAL_S):
        self.journal, self.store, self.interval_s = journal, store, interval_s
        self.chain_id = f"{writer}-{journal.id}"
        self.recover_until = journal.end  # records written before this process started
        self.started = time.monotonic()
        self.recent: collections.OrderedDict[str, float] = collections.OrderedDict()
        for rec, _ in journal.read(Cursor(0, 0), limit=10**9, kinds=(ledger.METER,)):
            if rec.get("k") == ledger.METER:
                self._remember(rec["rid"], rec["t"])
        self.meter_cursor: Cursor | None = None
        self.audit_cursor: Cursor | None = None
        self._audit_scanned: Cursor | None = None  # read past, no audit event there (not persisted)
        self.shipped = 0  # meter records shipped by this process
        self.audited = 0
        self.pending_queries: dict[str, collections.deque] = {}  # tenant -> latest searches to ship
        self.queries_shipped_at: dict[str, float] = {}  # tenant -> monotonic time of its last write
        self.passes = asyncio.Lock()  # one shipping pass at a time (the loop, or a flush)

    # ------------------------------------------------------------------ retried calls

    def _remember(self, rid: str, t: float) -> None:
        self.recent[rid] = t
        self.recent.move_to_end(rid)
        cutoff = time.time() - RID_WINDOW_S
        while self.recent and (
            len(self.recent) > MEMORY_RIDS_MAX or next(iter(self.recent.values())) < cutoff
        ):
            self.recent.popitem(last=False)

    def record(self, records: list[dict]) -> None:
        """Journal records before the call is answered (meter records' ids remembered)."""
        self.journal.append(records)
        for r in records:
            if r.get("k") == ledger.METER:
                self._remember(r["rid"], r["t"])

    async def counted(self, rid: str) -> bool:
        """Whether a call with this request id has been metered already (by this router, or
        shipped by any in the last RID_WINDOW_S): asked for retried calls only. The data path
        does not wait on etcd: if etcd does not answer within COUNTED_TIMEOUT_S the call is
        metered (a retry may then count twice; logged)."""
        if rid in self.recent:
            return True
        try:
            return rid in await asyncio.wait_for(self._shipped_rids({rid}, time.time()), COUNTED_TIMEOUT_S)
        except Exception as exc:
            log.warning("retried call metered without the shipped-ids check", extra={"error": repr(exc)})
            return False

    async def _shipped_rids(self, rids: set[str], oldest_t: float) -> set[str]:
        """Those of `rids` that some journal has shipped since `oldest_t` - RID_WINDOW_S."""
        found: set[str] = set()
        start_minute = keys.minute_of(oldest_t - RID_WINDOW_S).encode()
        for bucket in sorted({keys.rid_bucket(r) for r in rids}):
            prefix = keys.rids_prefix(bucket)
            for kv in await self.store.range(prefix + start_minute, keys.prefix_end(prefix)):
                found.update(rids.intersection(kv.value.decode().split()))
        return found

    # ------------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.sleep(0)
        last_gc = 0.0
        while not stop.is_set():
            try:
                await self.flush()
                if time.monotonic() - last_gc > RID_GC_INTERVAL_S:
                    await self.gc()
                    last_gc = time.monotonic()
                if self.meter_cursor and self.audit_cursor:
                    self.journal.prune(min(self.meter_cursor, self.audit_cursor))
            except Exception as exc:  # etcd away: keep the journal, try again
                log.warning("shipping usage failed; retrying", extra={"error": repr(exc)})
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def flush(self) -> None:
        """Ship everything journaled so far (the loop; ListAudit and VerifyAudit; shutdown)."""
        async with self.passes:
            while await self.ship_usage():
                pass
            while await self.ship_audit():
                pass

    async def _cursor(self, key: bytes) -> tuple[Cursor, int]:
        kv = await self.store.get(key)
        return (Cursor.from_obj(orjson.loads(kv.value)) if kv else Cursor(0, 0)), (
            kv.mod_revision if kv else 0
        )

    async def ship_usage(self) -> bool:
        """One pass; True if records are left that it did not take (call again at once)."""
        key = keys.cursor_key(self.journal.id)
        cursor, rev = await self._cursor(key)
        self.meter_cursor = cursor
        entries = self.journal.read(cursor, kinds=(ledger.METER, ledger.QUERY))
        recovering = cursor < self.recover_until
        if recovering:
            entries = [e for e in entries if e[1] <= self.recover_until]
            if not entries:
                self.recover_until = cursor
                return True
        if not entries:
            return False
        records = [r for r, _ in entries]
        skip: frozenset[str] = frozenset()
        if recovering:
            # records from before a crash: another router may have counted their retries
            await asyncio.sleep(max(0.0, RECOVERY_WAIT_S - (time.monotonic() - self.started)))
            meters = {r["rid"]: r["t"] for r in records if r.get("k") == ledger.METER}
            if meters:
                skip = frozenset(await self._shipped_rids(set(meters), min(meters.values())))
                if skip:
                    log.info("retried calls already counted elsewhere", extra={"calls": len(skip)})
        # cut where the transaction would grow past etcd's limit
        batch = ledger.aggregate(records, skip, keys_max=TXN_PUTS_MAX - 1)
        end = entries[max(batch.consumed, 1) - 1][1]
        more = batch.consumed < len(entries) or len(entries) >= READ_RECORDS_MAX
        for tenant, queries in batch.queries.items():
            self.pending_queries.setdefault(
                tenant, collections.deque(maxlen=ledger.QUERY_HISTORY_MAX)
            ).extend(queries)
        now = time.monotonic()
        room = TXN_PUTS_MAX - 1 - len(batch.hours) - len(batch.rids)
        due = [
            t
            for t, q in self.pending_queries.items()
            if q and now - self.queries_shipped_at.get(t, 0.0) >= QUERY_SHIP_INTERVAL_S
        ][: max(0, room)]
        for attempt in range(CAS_ATTEMPTS_MAX):
            t = self.store.txn
            compare = [t.mod(key) == rev] if rev else [t.create(key) == 0]
            success = [t.put(key, orjson.dumps(end.to_obj()))]
            for (tenant, hour), inc in batch.hours.items():
                doc_key = keys.calls_key(tenant, hour)
                kv = await self.store.get(doc_key)
                doc = ledger.CallsHour.from_json(kv.value if kv else None)
                doc.add(inc)
                compare.append(t.mod(doc_key) == kv.mod_revision if kv else t.create(doc_key) == 0)
                success.append(t.put(doc_key, doc.to_json()))
            for n, ((bucket, minute), rids) in enumerate(batch.rids.items()):
                rk = keys.rids_key(
                    bucket, minute, self.journal.id, end.segment * 10**10 + end.offset * 100 + n
                )
                success.append(t.put(rk, " ".join(rids).encode()))
            for tenant in due:
                qk = keys.queries_key(tenant, self.journal.id)
                kv = await self.store.get(qk)
                merged = ledger.merge_queries(kv.value if kv else None, list(self.pending_queries[tenant]))
                success.append(t.put(qk, merged))
            ok, _ = await self.store.transaction(compare=compare, success=success)
            if ok:
                self.meter_cursor = end
                self.shipped += batch.metered
                for tenant in due:
                    self.pending_queries[tenant].clear()
                    self.queries_shipped_at[tenant] = now
                return more
            cursor2, rev = await self._cursor(key)
            if cursor2 != cursor:  # another process ships this journal: never two
                raise RuntimeError(f"journal {self.journal.id} cursor moved under this router")
            await asyncio.sleep(0.01 * (attempt + 1))
        raise RuntimeError("usage documents kept changing; will retry")

    async def ship_audit(self) -> bool:
        head_key = keys.audit_head_key(self.chain_id)
        kv = await self.store.get(head_key)
        head = orjson.loads(kv.value) if kv else {"seq": 0, "hash": "", "cursor": None}
        cursor = Cursor.from_obj(head["cursor"]) if head["cursor"] else Cursor(0, 0)
        self.audit_cursor = cursor
        scan = max(cursor, self._audit_scanned) if self._audit_scanned else cursor
        entries = self.journal.read(scan, limit=5000, kinds=(ledger.AUDIT,))
        events, end, more = [], scan, len(entries) >= 5000
        for r, after in entries:
            if r.get("k") == ledger.AUDIT:
                if len(events) == AUDIT_BATCH_MAX:
                    more = True
                    break
                events.append(r["e"])
            end = after
        if end == scan:
            return False
        if not events and end.segment == cursor.segment:
            self._audit_scanned = end  # nothing to write: persist the cursor with the next event
            return False
        chain = Chain(self.chain_id, head["seq"], head["hash"])
        t = self.store.txn
        success = []
        for e in events:
            rec = chain.append(e)
            success.append(t.put(keys.audit_record_key(self.chain_id, rec["seq"]), orjson.dumps(rec)))
        seq, last = chain.head
        success.append(t.put(head_key, orjson.dumps({"seq": seq, "hash": last, "cursor": end.to_obj()})))
        compare = [t.mod(head_key) == kv.mod_revision] if kv else [t.create(head_key) == 0]
        ok, _ = await self.store.transaction(compare=compare, success=success)
        if not ok:
            raise RuntimeError(f"audit chain {self.chain_id} head moved under this router")
        self.audit_cursor = self._audit_scanned = end
        self.audited += len(events)
        return more

    async def gc(self) -> None:
        """Forget request ids older than the retry window."""
        cutoff = keys.minute_of(time.time() - RID_WINDOW_S - 120).encode()
        for bucket in "0123456789abcdef":
            prefix = keys.rids_prefix(bucket)
            await self.store.delete_range(prefix, prefix + cutoff)
