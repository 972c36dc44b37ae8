"""AsyncQuartzClient: the asyncio Python SDK; mirrors QuartzClient method for method."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from quartz_cluster.client import _common as c
from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc
from quartz_cluster.rpc.server import CHANNEL_OPTIONS


class AsyncQuartzClient:
    def __init__(
        self,
        address: str = "127.0.0.1:7000",
        api_key: str | None = None,
        timeout: float = 10.0,
        tls: bool = False,
        ca_cert: str | bytes | None = None,
        data_dir: str | None = None,
    ) -> None:
        """api_key: else $QUARTZ_API_KEY, else the admin key of the `quartz up` data dir
        (`data_dir`, else $QUARTZ_DATA_DIR, else .quartz/cluster). tls / ca_cert: connect with
        TLS, trusting the system's roots or the CA certificate given (PEM bytes or a path)."""
        self.address, self.timeout = address, timeout
        self._metadata = c.metadata(c.find_api_key(api_key, data_dir))
        self.session = c.Session()
        creds = c.channel_credentials(tls, ca_cert)
        if creds is None:
            self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.secure_channel(address, creds, options=CHANNEL_OPTIONS)
        self._stub = quartz_pb2_grpc.QuartzStub(self._channel)
        self._connected = False  # a call reached the router once: UNAVAILABLE is worth retrying

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncQuartzClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: str, request, timeout: float | None = None):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        backoff = c.RETRY_BACKOFF_S_FIRST
        rid, attempt = c.request_id(), 0  # one id for every attempt: metered once (DESIGN §12)
        while True:
            attempt += 1
            remaining = deadline - loop.time()
            try:
                reply = await getattr(self._stub, method)(
                    request,
                    timeout=max(remaining, 0.001),
                    metadata=c.call_metadata(self._metadata, rid, attempt),
                )
                self._connected = True
                return reply
            except grpc.RpcError as exc:
                self._connected = self._connected or not c.unreachable(exc)
                wait_s = c.rate_limit_wait_s(exc)
                if wait_s is not None:  # rate limited: wait as told, within the deadline
                    if deadline - loop.time() <= wait_s:
                        raise c.to_error(exc, self.address, self._connected) from None
                    await asyncio.sleep(wait_s)
                    continue
                if not c.retryable(exc, self._connected) or deadline - loop.time() <= backoff:
                    raise c.to_error(exc, self.address, self._connected) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, c.RETRY_BACKOFF_S_MAX)

    async def _write(self, method: str, collection: str, request, timeout: float | None = None) -> None:
        """A write, retrying the points whose shard was UNAVAILABLE until the deadline (safe: ids
        are idempotent); PartialWriteError names what is still not written after it."""
        now = asyncio.get_running_loop().time
        deadline = now() + (timeout or self.timeout)
        backoff = c.RETRY_BACKOFF_S_FIRST
        while True:
            result = await self._call(method, request, max(deadline - now(), 0.001))
            self.session.record(collection, result)
            retry = c.retry_subset(request, result)
            if retry is None or deadline - now() <= backoff:
                c.check_write(result, c.write_ids(request))
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, c.RETRY_BACKOFF_S_MAX)
            request = retry

    async def create_collection(
        self,
        name: str,
        dim: int,
        metric: str = "cosine",
        shards: int = 1,
        replication_factor: int | None = None,
        m: int | None = None,
        ef_construction: int | None = None,
        ef: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> c.CollectionInfo:
        req = c.create_collection_request(
            name, dim, metric, shards, replication_factor, m, ef_construction, ef, wait
        )
        return c.parse_collection(await self._call("CreateCollection", req, timeout))

    async def drop_collection(self, name: str) -> bool:
        self.session.forget(name)
        return (await self._call("DropCollection", quartz_pb2.DropCollectionRequest(name=name))).dropped

    async def list_collections(self) -> list[c.CollectionInfo]:
        resp = await self._call("ListCollections", quartz_pb2.ListCollectionsRequest())
        return [c.parse_collection(i) for i in resp.collections]

    async def describe_collection(self, name: str) -> c.CollectionInfo:
        req = quartz_pb2.DescribeCollectionRequest(name=name)
        return c.parse_collection(await self._call("DescribeCollection", req))

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str | int],
        vectors: Any,
        payloads: Sequence[dict] | None = None,
        write_consistency: str = "majority",
        timeout: float | None = None,
    ) -> None:
        req = c.upsert_request(collection, ids, vectors, payloads, write_consistency)
        await self._write("Upsert", collection, req, timeout)

    async def delete(
        self,
        collection: str,
        ids: Sequence[str | int] | None = None,
        write_consistency: str = "majority",
        filter: dict | str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Delete points by id, or every point matching `filter` (exactly one of the two). A
        delete by filter is not atomic: if it fails, the points deleted so far stay deleted, and
        calling it again deletes the rest."""
        req = c.delete_request(collection, ids, write_consistency, filter)
        await self._write("Delete", collection, req, timeout)

    async def get(
        self,
        collection: str,
        ids: Sequence[str | int],
        with_vectors: bool = True,
        with_payload: bool = True,
        consistency: str = "eventual",
        allow_partial: bool = False,
    ) -> c.Results:
        """The points found, in request order (a list; `.shards` says which shards answered).
        allow_partial: answer without the shards that are down (`.shards.failed` names them)
        instead of raising Unavailable."""
        req = c.get_request(collection, ids, with_vectors, with_payload, consistency, allow_partial)
        self.session.attach(collection, req, consistency)
        return c.parse_points(await self._call("Get", req), with_vectors, with_payload)

    async def search(
        self,
        collection: str,
        query: Any,
        k: int = 10,
        filter: dict | str | None = None,
        ef: int | None = None,
        consistency: str = "eventual",
        with_payload: bool = True,
        allow_partial: bool = False,
        timeout: float | None = None,
    ):
        req, single = c.search_request(
            collection, query, k, filter, ef, consistency, with_payload, allow_partial
        )
        self.session.attach(collection, req, consistency)
        return c.parse_hits(await self._call("Search", req, timeout), single, with_payload)

    async def count(
        self, collection: str, filter: dict | str | None = None, allow_partial: bool = False
    ) -> c.Count:
        """The number of points (matching `filter`, if given): an int; `.shards` says which shards
        answered. allow_partial: count the shards that answer (`.shards.failed` names the others)
        instead of raising."""
        if isinstance(filter, bool):  # count(name, True): allow_partial given by position (before filter)
            filter, allow_partial = None, filter
        return c.parse_count(await self._call("Count", c.count_request(collection, allow_partial, filter)))

    async def scroll(
        self,
        collection: str,
        filter: dict | str | None = None,
        limit: int = 100,
        offset: str | int | None = None,
        with_vectors: bool = False,
        with_payload: bool = True,
        consistency: str = "eventual",
        timeout: float | None = None,
    ) -> c.ScrollPage:
        """One page of the points matching `filter`, in id order from `offset` (inclusive), with
        `.next_offset` (None after the last page); as QuartzClient.scroll."""
        req = c.scroll_request(collection, filter, limit, offset, with_vectors, with_payload, consistency)
        return c.parse_scroll(await self._call("Scroll", req, timeout), with_vectors, with_payload)

    async def scroll_all(
        self,
        collection: str,
        filter: dict | str | None = None,
        page_size: int = 1000,
        with_vectors: bool = False,
        with_payload: bool = True,
        consistency: str = "eventual",
        offset: str | int | None = None,
    ) -> AsyncIterator[c.Point]:
        """Every point matching `filter`, in id order, a page at a time: `async for p in ...`."""
        while True:
            page = await self.scroll(
                collection, filter, page_size, offset, with_vectors, with_payload, consistency
            )
            for point in page:
                yield point
            if page.next_offset is None:
                return
            offset = page.next_offset

    # tenants and API keys (DESIGN §11): an admin key manages tenants and every key; a
    # tenant-admin key its own tenant's keys
    async def create_tenant(
        self,
        name: str,
        plan: str = "free",
        stripe_customer: str = "",
        webhook_url: str = "",
        webhook_secret: str = "",
        rate_limits: Sequence[str] = (),
    ) -> c.Tenant:
        """A tenant on `plan` (free | paid; docs/billing.md); rate_limits override the plan's,
        e.g. ["read=100/s:burst=200"]."""
        req = c.tenant_request(name, plan, stripe_customer, webhook_url, webhook_secret, rate_limits)
        return c.parse_tenant(await self._call("CreateTenant", req))

    async def update_tenant(
        self,
        name: str,
        plan: str | None = None,
        stripe_customer: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        rate_limits: Sequence[str] | None = None,
    ) -> c.Tenant:
        """Change what is given (None: unchanged; rate_limits=[]: back to the plan's)."""
        req = c.tenant_request(
            name, plan, stripe_customer, webhook_url, webhook_secret, rate_limits, update=True
        )
        return c.parse_tenant(await self._call("UpdateTenant", req))

    async def list_tenants(self) -> list[c.Tenant]:
        resp = await self._call("ListTenants", quartz_pb2.ListTenantsRequest())
        return [c.parse_tenant(t) for t in resp.tenants]

    async def delete_tenant(self, name: str) -> int:
        """Delete a tenant that owns no collection; returns how many of its keys were revoked."""
        req = quartz_pb2.DeleteTenantRequest(name=c.text(name, "name"))
        return (await self._call("DeleteTenant", req)).keys_revoked

    async def create_key(
        self,
        tenant: str | None = None,
        role: str = "read-write",
        collections: Sequence[str] = (),
        expires_in_s: int = 0,
        description: str = "",
        rate_limits: Sequence[str] = (),
    ) -> tuple[str, c.KeyInfo]:
        """A new API key: (the key, shown only now, and its info). tenant: default the caller's.
        rate_limits: the key's own limits, e.g. ["read=100/s"] (the tenant's apply too)."""
        req = c.create_key_request(tenant, role, collections, expires_in_s, description, rate_limits)
        resp = await self._call("CreateKey", req)
        return resp.key, c.parse_key(resp.info)

    async def list_keys(self, tenant: str | None = None) -> list[c.KeyInfo]:
        req = quartz_pb2.ListKeysRequest(tenant=c.text(tenant or "", "tenant"))
        return [c.parse_key(k) for k in (await self._call("ListKeys", req)).keys]

    async def revoke_key(self, key_id: str) -> bool:
        req = quartz_pb2.RevokeKeyRequest(id=c.text(key_id, "key_id"))
        return (await self._call("RevokeKey", req)).revoked

    async def whoami(self) -> c.KeyInfo:
        """The key this client sends (its id, tenant, role and scope)."""
        return c.parse_key(await self._call("WhoAmI", quartz_pb2.WhoAmIRequest()))

    # usage, billing, audit (DESIGN §12; docs/billing.md)
    async def usage(self, tenant: str | None = None, month: str | None = None) -> dict:
        """A tenant's usage in a month (YYYY-MM, UTC; default this month): per day and in all."""
        return c.message_dict(await self._call("GetUsage", c.usage_request(tenant, month)))

    async def invoice(
        self, tenant: str | None = None, month: str | None = None, html: bool = False
    ) -> dict | str:
        """The invoice of a month: its lines, allowances and total (html=True: as an HTML page)."""
        import orjson

        resp = await self._call("GetInvoice", c.invoice_request(tenant, month))
        return resp.html if html else orjson.loads(resp.json)

    async def billing_history(self, tenant: str | None = None) -> list[dict]:
        req = quartz_pb2.BillingHistoryRequest(tenant=c.text(tenant or "", "tenant"))
        return c.message_dict(await self._call("BillingHistory", req)).get("invoices", [])

    async def query_history(self, tenant: str | None = None, limit: int = 100) -> list[dict]:
        """The latest searches (time, collection, k, filter present, latency, status), newest first."""
        req = quartz_pb2.QueryHistoryRequest(
            tenant=c.text(tenant or "", "tenant"), limit=c.uint(limit, "limit", 1, 10_000)
        )
        return c.message_dict(await self._call("QueryHistory", req)).get("queries", [])

    async def audit(
        self, tenant: str | None = None, since: float | None = None, limit: int = 100, verb: str | None = None
    ) -> list[dict]:
        """The latest audit records (oldest first): {chain, seq, prev, hash, event}."""
        import orjson

        resp = await self._call("ListAudit", c.audit_request(tenant, since, limit, verb))
        return [orjson.loads(r) for r in resp.records]

    async def verify_audit(self) -> dict:
        """Check every audit chain: {ok, records, chains, problems} (each problem names its record)."""
        return c.message_dict(await self._call("VerifyAudit", quartz_pb2.VerifyAuditRequest()))

    # ------------------------------------------------------------------ backups (admin keys)

    async def create_backup(self, repository: str, collections: Sequence[str] = ()) -> dict:
        """Ask for a backup (file:///DIR or s3://BUCKET/PREFIX); the coordinator runs it.
        Returns the job; poll `backup(id)` until its state is complete or failed."""
        return c.message_dict(await self._call("CreateBackup", c.backup_request(repository, collections)))

    async def backup(self, backup_id: str, repository: str = "") -> dict:
        req = quartz_pb2.GetBackupRequest(
            id=c.text(backup_id, "id"), repository=c.text(repository, "repository")
        )
        return c.message_dict(await self._call("GetBackup", req))

    async def list_backups(self, repository: str = "") -> list[dict]:
        req = quartz_pb2.ListBackupsRequest(repository=c.text(repository, "repository"))
        return [c.message_dict(b) for b in (await self._call("ListBackups", req)).backups]

    async def describe_backup(self, backup_id: str, repository: str = "") -> dict:
        """The backup's manifest (schemas, per-shard epoch/LSN, files with sizes and checksums)."""
        import orjson

        req = quartz_pb2.DescribeBackupRequest(
            id=c.text(backup_id, "id"), repository=c.text(repository, "repository")
        )
        return orjson.loads((await self._call("DescribeBackup", req)).manifest)

    async def delete_backup(self, backup_id: str, repository: str = "") -> bool:
        req = quartz_pb2.DeleteBackupRequest(
            id=c.text(backup_id, "id"), repository=c.text(repository, "repository")
        )
        return (await self._call("DeleteBackup", req)).deleted

    async def restore_backup(
        self,
        repository: str,
        backup_id: str,
        collections: Sequence[str] = (),
        as_name: str = "",
        replication_factor: int = 0,
        tenant: str = "",
    ) -> list[c.CollectionInfo]:
        """Create the backup's collections (or those named; one under `as_name`), filled from the
        backup. They are ready once every replica is restored: see describe_collection().status."""
        req = c.restore_request(repository, backup_id, collections, as_name, replication_factor, tenant)
        return [c.parse_collection(i) for i in (await self._call("RestoreBackup", req)).collections]

    async def set_backup_schedule(
        self, name: str, repository: str, interval_s: int, keep: int, collections: Sequence[str] = ()
    ) -> dict:
        req = c.schedule_request(name, repository, interval_s, keep, collections)
        return c.message_dict(await self._call("SetBackupSchedule", req))

    async def list_backup_schedules(self) -> list[dict]:
        resp = await self._call("ListBackupSchedules", quartz_pb2.ListBackupSchedulesRequest())
        return [c.message_dict(s) for s in resp.schedules]

    async def delete_backup_schedule(self, name: str) -> bool:
        req = quartz_pb2.DeleteBackupScheduleRequest(name=c.text(name, "name"))
        return (await self._call("DeleteBackupSchedule", req)).deleted
