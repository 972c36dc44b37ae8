"""The audit log as stored in etcd (metering/keys.py): read its tail and verify its chains."""

from __future__ import annotations

import orjson

from quartz_cluster.audit import chain as chains
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.metering import keys

PAGE_RECORDS = 1000
SCAN_RECORDS_MAX = 200_000  # records a tail or a verify reads at most per chain


async def heads(store: EtcdStore) -> dict[str, chains.Head]:
    out = {}
    for kv in await store.range(keys.AUDIT_HEADS, keys.prefix_end(keys.AUDIT_HEADS)):
        doc = orjson.loads(kv.value)
        out[kv.key[len(keys.AUDIT_HEADS) :].decode()] = chains.Head(doc["seq"], doc["hash"])
    return out


def _records(kvs) -> list[dict]:
    out = []
    for kv in kvs:
        try:
            out.append(orjson.loads(kv.value))
        except orjson.JSONDecodeError:
            continue
    return out


async def tail(
    store: EtcdStore,
    limit: int,
    tenant: str | None = None,
    since: float | None = None,
    verb: str | None = None,
) -> list[dict]:
    """The latest `limit` records matching, oldest first (chains merged by event time)."""
    found: list[dict] = []
    for chain_id, head in (await heads(store)).items():
        end, scanned, mine = head.seq, 0, []
        while end > 0 and len(mine) < limit and scanned < SCAN_RECORDS_MAX:
            start = max(0, end - PAGE_RECORDS)
            kvs = await store.range(
                keys.audit_record_key(chain_id, start), keys.audit_record_key(chain_id, end)
            )
            page = _records(kvs)
            scanned += end - start
            end = start
            older = False
            for rec in reversed(page):
                ev = rec.get("event", {})
                if (
                    since is not None
                    and ev.get("stageTimestamp", "")
                    and not chains.matches(ev, since_ts=since)
                ):
                    older = True
                    continue
                if chains.matches(ev, tenant=tenant, since_ts=since, verb=verb):
                    mine.append(rec)
            if older:
                break
        found.extend(mine[:limit])
    found.sort(
        key=lambda r: (r.get("event", {}).get("stageTimestamp", ""), r.get("chain", ""), r.get("seq", 0))
    )
    return found[-limit:]


async def verify(store: EtcdStore) -> chains.Report:
    """Every chain checked record by record against its head (audit/chain.py)."""
    hs = await heads(store)
    by_chain: dict[str, list] = {}
    for kv in await store.range(keys.AUDIT_RECORDS, keys.prefix_end(keys.AUDIT_RECORDS)):
        chain_id, seq = kv.key[len(keys.AUDIT_RECORDS) :].decode().rsplit("/", 1)
        try:
            rec = orjson.loads(kv.value)
        except orjson.JSONDecodeError:
            rec = {"damaged": True}
        by_chain.setdefault(chain_id, []).append((f"{chain_id}:{seq}", rec))
    return chains.verify(by_chain, {c: (h.seq, h.hash) for c, h in hs.items()})


async def append_one(store: EtcdStore, event: dict, writer: str) -> str:
    """Record one event from a process that has no journal (the CLI's etcd-level commands, such
    as `quartz drain`): a chain of its own, one record and its head, in one transaction."""
    import uuid

    chain = chains.Chain(f"{writer}-{uuid.uuid4().hex[:12]}")
    rec = chain.append(event)
    head = chain.head
    await store.client()
    t = store.txn
    await store.transaction(
        compare=[],
        success=[
            t.put(keys.audit_record_key(chain.chain_id, rec["seq"]), orjson.dumps(rec)),
            t.put(
                keys.audit_head_key(chain.chain_id),
                orjson.dumps({"seq": head.seq, "hash": head.hash, "cursor": None}),
            ),
        ],
    )
    return chain.chain_id
