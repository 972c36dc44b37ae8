"""gRPC servicer of the public quartz.v1.Quartz API. Each method validates the whole request
first (nothing is sent to a node for a bad request), routes by shard from the cached map,
fans out with a deadline and a cap on in-flight calls, and merges."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass

import grpc
import numpy as np
import orjson

from quartz_cluster import capacity, filters, limits, validation
from quartz_cluster.audit import store as audit_store
from quartz_cluster.auth import access, admin
from quartz_cluster.auth.access import Action, Principal
from quartz_cluster.auth.authenticator import Authenticator
from quartz_cluster.auth.cluster import ClusterCredentials
from quartz_cluster.backup import catalog
from quartz_cluster.billing import invoice, plans
from quartz_cluster.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QuartzError,
    Unavailable,
    echo,
)
from quartz_cluster.meta import schema
from quartz_cluster.meta.schema import CollectionRecord
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.metering import keys as usage_keys
from quartz_cluster.metering import ledger, usage
from quartz_cluster.node.service import METRIC_ENUMS, METRIC_NAMES, search_results
from quartz_cluster.node.shard import scan
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2, quartz_pb2_grpc
from quartz_cluster.router.backup_rpcs import BackupRpcs
from quartz_cluster.router.coalesce import Coalescer
from quartz_cluster.router.guard import guarded
from quartz_cluster.router.hedging import HedgeBudget, Latencies, hedged, size_class
from quartz_cluster.router.routing import split_by_shard
from quartz_cluster.router.shardmap import ReadGroup, ShardMap
from quartz_cluster.rpc.channels import NodeChannels
from quartz_cluster.rpc.status import STATUS, error_from_rpc, rpc
from quartz_cluster.topk import merge_hits

DEADLINE_MARGIN_S = 0.05
QUERY_HISTORY_DEFAULT, QUERY_HISTORY_LIMIT_MAX = 100, ledger.QUERY_HISTORY_MAX
AUDIT_TAIL_DEFAULT, AUDIT_TAIL_MAX = 100, 10_000
CALL_TIMEOUT_S_MIN = 0.01  # a node call is not started with less time than this left
# a read falls through to the next replica on these (NOT_FOUND: that replica was just moved away)
EVENTUAL = (quartz_pb2.EVENTUAL, quartz_pb2.READ_CONSISTENCY_UNSPECIFIED)
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.CANCELLED,  # the replica is shutting down
)


def billing_month(month: str) -> str:
    """A YYYY-MM month (UTC); this month if empty."""
    if not month:
        return usage_keys.month_of(time.time())
    if not re.fullmatch(r"20[0-9]{2}-(0[1-9]|1[0-2])", month):
        raise InvalidArgument(f"must be YYYY-MM, got {echo(month)}", "month")
    return month


def required_in_sync(consistency: int, replication_factor: int) -> int:
    """write_consistency -> how many in-sync replicas a write needs (DESIGN §5)."""
    if consistency == quartz_pb2.ONE:
        return 1
    if consistency == quartz_pb2.ALL:
        return replication_factor
    return replication_factor // 2 + 1  # majority, the default


class NodePool(NodeChannels):
    """Node channels plus a cap on the calls this router has in flight to nodes."""

    def __init__(self, identity=None) -> None:
        super().__init__(identity)
        self.inflight = asyncio.Semaphore(limits.FANOUT_INFLIGHT_MAX)


def _timeout(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    budget = limits.ROUTER_CALL_TIMEOUT_S if remaining is None else remaining
    return max(0.01, budget - DEADLINE_MARGIN_S)


def collection_info(coll: CollectionRecord, shardmap: ShardMap) -> quartz_pb2.CollectionInfo:
    shards = shardmap.shards(coll)
    return quartz_pb2.CollectionInfo(
        config=quartz_pb2.CollectionConfig(
            name=coll.name,
            dim=coll.dim,
            metric=METRIC_ENUMS[coll.metric],
            shards=coll.shards,
            replication_factor=coll.replication_factor,
            hnsw=node_pb2.HnswParams(m=coll.m, ef_construction=coll.ef_construction, ef=coll.ef),
        ),
        id=coll.id,
        ready=shardmap.ready(coll),
        shards=[
            quartz_pb2.ShardInfo(
                shard=s,
                epoch=r.epoch,
                primary=r.primary,
                replicas=list(r.replicas),
                in_sync=[quartz_pb2.InSyncReplica(node=i.node, incarnation=i.incarnation) for i in r.in_sync],
            )
            for s, r in sorted(shards.items())
        ],
        restore=catalog.restore_source(coll),
        status=catalog.restore_status(coll, shardmap.view, shardmap.ready(coll)),
    )


def key_info(rec) -> quartz_pb2.ApiKeyInfo:
    return quartz_pb2.ApiKeyInfo(
        id=rec.id,
        tenant=rec.tenant,
        role=rec.role,
        collections=list(rec.collections),
        created_at=rec.created_at,
        expires_at=rec.expires_at,
        description=rec.description,
        rate_limits=list(rec.rate_limits),
    )


def tenant_info(rec) -> quartz_pb2.Tenant:
    return quartz_pb2.Tenant(
        name=rec.name,
        created_at=rec.created_at,
        plan=rec.plan,
        stripe_customer=rec.stripe_customer,
        webhook_url=rec.webhook_url,
        rate_limits=list(rec.rate_limits),
    )


@dataclass(frozen=True, slots=True)
class SearchShape:
    """What the searches coalesced together share: all but their query vectors."""

    coll: CollectionRecord
    k: int
    ef: int
    filter: str
    with_payload: bool
    dim: int

    def request(self, shards: list[int], queries: node_pb2.Vectors) -> node_pb2.SearchRequest:
        """A node request for these shards of the collection (the first in ref, the rest after)."""
        return node_pb2.SearchRequest(
            ref=node_pb2.ShardRef(collection_id=self.coll.id, shard=shards[0]),
            also_shards=shards[1:],
            queries=queries,
            k=self.k,
            ef=self.ef,
            filter=self.filter,
            with_payload=self.with_payload,
        )

    @property
    def key(self) -> tuple:
        """Searches with equal keys may share node calls."""
        return (self.coll.id, self.k, self.ef, self.filter, self.with_payload, self.dim)

    def merge(self, replies: list, count: int) -> tuple[list, list[str]]:
        """replies[i][q]: a node's SearchResult for query q -> per query (ids, scores, payloads), plan."""
        return merge_hits(self.coll.metric, self.k, replies, count)


class QuartzService(BackupRpcs, quartz_pb2_grpc.QuartzServicer):
    def __init__(
        self,
        shardmap: ShardMap,
        store: EtcdStore,
        nodes: NodePool,
        credentials: ClusterCredentials | None = None,
    ) -> None:
        self.shardmap, self.store, self.nodes = shardmap, store, nodes
        self.credentials = credentials
        self.auth = Authenticator(credentials, lambda: self.shardmap.view)
        self.latencies = Latencies()
        self.hedges_sent = 0
        self.hedge_budget = HedgeBudget()
        self.searches = Coalescer()
        self.frontdoor = None  # set by router/main.py when auth is on (router/frontdoor.py)

    def _collection(
        self, principal: Principal, name: str, action: Action, field: str = "collection"
    ) -> CollectionRecord:
        """A collection of the caller's tenant, once the caller may do `action` on it. Another
        tenant's collection is not looked at: it answers NOT_FOUND like an absent one."""
        access.authorize(principal, action, name)
        return self.shardmap.collection(principal.tenant, name, field)

    async def _call(self, address: str, method: str, request, timeout_s: float):
        async with self.nodes.inflight:
            return await getattr(self.nodes.stub(address), method)(request, timeout=timeout_s)

    # ------------------------------------------------------------------ collections

    @rpc
    @guarded
    async def CreateCollection(self, request, context, principal):
        c = request.config
        access.authorize(principal, Action.MANAGE, c.name)
        tenant = principal.tenant
        if c.metric not in METRIC_NAMES:
            raise InvalidArgument("must be COSINE, L2 or IP", "config.metric")
        live = len(self.shardmap.view.nodes)
        cfg = validation.collection_config(
            c.name,
            c.dim,
            METRIC_NAMES[c.metric],
            c.shards,
            c.replication_factor or max(1, min(limits.DEFAULT_REPLICATION_FACTOR, live)),
            c.hnsw.m,
            c.hnsw.ef_construction,
            c.hnsw.ef,
        )
        if cfg.replication_factor > live:
            raise FailedPrecondition(
                f"{cfg.replication_factor} replicas need as many live nodes; {live} are live",
                "config.replication_factor",
            )
        view = self.shardmap.view
        existing = view.collections.get(schema.qualified(tenant, cfg.name))
        if existing is not None and existing.id not in view.tombstones:
            raise AlreadyExists(f"collection {echo(cfg.name)} already exists", "config.name")
        capacity.check_create(view, tenant, cfg.shards, cfg.replication_factor, cfg.dim, cfg.m)
        record = CollectionRecord(id=uuid.uuid4().hex, tenant=tenant, **vars_of(cfg))
        key = schema.collection_key(tenant, cfg.name)
        await self.store.client()
        t = self.store.txn
        ok, _ = await self.store.transaction(
            compare=[t.create(key) == 0], success=[t.put(key, record.to_json())]
        )
        if not ok:
            raise AlreadyExists(f"collection {echo(cfg.name)} already exists", "config.name")
        deadline = asyncio.get_running_loop().time() + min(_timeout(context), limits.CREATE_WAIT_S_MAX)
        while True:
            coll = self.shardmap.view.collections.get(record.qualified)
            if coll is not None and coll.id == record.id and (not request.wait or self.shardmap.ready(coll)):
                return collection_info(coll, self.shardmap)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                if coll is not None and coll.id == record.id:
                    return collection_info(coll, self.shardmap)  # created, not yet ready
                return collection_info(record, self.shardmap)
            await self.shardmap.wait_change(min(left, 1.0))

    @rpc
    @guarded
    async def DropCollection(self, request, context, principal):
        validation.name(request.name, "name")
        access.authorize(principal, Action.MANAGE, request.name)
        kv = await self.store.get(schema.collection_key(principal.tenant, request.name))
        if kv is None:
            raise NotFound(f"collection {echo(request.name)} does not exist", "name")
        coll = CollectionRecord.from_json(kv.value)
        t = self.store.txn
        ok, _ = await self.store.transaction(
            compare=[t.mod(kv.key) == kv.mod_revision],
            success=[
                t.delete(kv.key),
                t.put(schema.tombstone_key(coll.id), schema.Tombstone(coll.name, coll.id).to_json()),
            ],
        )
        if not ok:
            raise FailedPrecondition(f"collection {echo(request.name)} changed concurrently; retry", "name")
        await self.shardmap.wait_revision(await self.store.revision(), _timeout(context))
        return quartz_pb2.DropCollectionResponse(dropped=True)

    @rpc
    @guarded
    async def ListCollections(self, request, context, principal):
        access.authorize(principal, Action.READ)
        view = self.shardmap.view
        colls = [
            c
            for c in view.collections.values()
            if c.tenant == principal.tenant
            and c.id not in view.tombstones
            and access.visible(principal, c.name)
        ]
        return quartz_pb2.ListCollectionsResponse(
            collections=[collection_info(c, self.shardmap) for c in sorted(colls, key=lambda c: c.name)]
        )

    @rpc
    @guarded
    async def DescribeCollection(self, request, context, principal):
        return collection_info(self._collection(principal, request.name, Action.READ, "name"), self.shardmap)

    # ------------------------------------------------------------------ writes

    async def _write(
        self, coll: CollectionRecord, ids: list[str], make_request, timeout_s: float, consistency: int
    ) -> quartz_pb2.WriteResult:
        groups = split_by_shard(ids, coll.shards)
        errors: list[quartz_pb2.PointError] = []
        failed: set[int] = set()
        positions: list[quartz_pb2.ShardPosition] = []

        async def one(shard: int, idx: np.ndarray) -> None:
            try:
                route = self.shardmap.primary(coll, shard)
                need = required_in_sync(consistency, coll.replication_factor)
                if len(route.record.in_sync) < need:
                    raise Unavailable(
                        f"shard {shard} has {len(route.record.in_sync)} in-sync replicas; "
                        f"the write_consistency needs {need}",
                        "write_consistency",
                    )
                req = make_request(node_pb2.ShardRef(collection_id=coll.id, shard=shard), idx)
                req.epoch, req.min_in_sync = route.record.epoch, need
                resp = await self._call(route.address, "Write", req, timeout_s)
                positions.append(quartz_pb2.ShardPosition(shard=shard, epoch=resp.epoch, lsn=resp.lsn))
            except (QuartzError, grpc.RpcError) as exc:
                if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    # validated already: a node refuses only for fencing (a new primary or epoch);
                    # the client retries once this router's map has caught up
                    exc = Unavailable(f"shard {shard}: {exc.details()}")
                err = exc if isinstance(exc, QuartzError) else error_from_rpc(exc, f"shard {shard}: ")
                failed.add(shard)
                errors.extend(
                    quartz_pb2.PointError(index=int(i), code=err.code, message=str(err)) for i in idx
                )

        await asyncio.gather(*(one(s, idx) for s, idx in groups.items()))
        errors.sort(key=lambda e: e.index)
        return quartz_pb2.WriteResult(
            errors=errors,
            positions=sorted(positions, key=lambda p: p.shard),
            shards=quartz_pb2.ShardsAnswered(total=len(groups), answered=len(groups) - len(failed)),
        )

    @rpc
    @guarded
    async def Upsert(self, request, context, principal):
        coll = self._collection(principal, request.collection, Action.WRITE)
        p = request.points
        batch = validation.write_batch(
            p.ids, p.vectors.data, p.vectors.count, p.vectors.dim, p.payloads, [], coll.dim
        )
        blobs = batch.payload_blobs

        def make(ref, idx):
            return node_pb2.WriteRequest(
                ref=ref,
                upserts=node_pb2.PointBatch(
                    ids=[batch.ids[i] for i in idx],
                    vectors=node_pb2.Vectors(data=batch.vectors[idx].tobytes(), count=len(idx), dim=coll.dim),
                    payloads=[blobs[i] for i in idx],
                ),
            )

        return await self._write(coll, batch.ids, make, _timeout(context), request.write_consistency)

    @rpc
    @guarded
    async def Delete(self, request, context, principal):
        """By ids, or every point matching `filter` (exactly one of the two)."""
        coll = self._collection(principal, request.collection, Action.WRITE)
        if request.filter:
            if request.ids:
                raise InvalidArgument("give ids or a filter, not both", "filter")
            if filters.parse(request.filter) is None:
                raise InvalidArgument(
                    "has no condition: it would delete every point (drop the collection instead)", "filter"
                )
            timeout_s = _timeout(context)
            return await self._delete_matching(coll, request.filter, timeout_s, request.write_consistency)
        if not 1 <= len(request.ids) <= limits.BATCH_POINTS_MAX:
            raise InvalidArgument(f"must hold 1..{limits.BATCH_POINTS_MAX} ids (or give a filter)", "ids")
        ids = validation.point_ids(request.ids, "ids")
        return await self._write(
            coll,
            ids,
            lambda ref, idx: node_pb2.WriteRequest(ref=ref, delete_ids=[ids[i] for i in idx]),
            _timeout(context),
            request.write_consistency,
        )

    async def _delete_matching(
        self, coll: CollectionRecord, flt: str, timeout_s: float, consistency: int
    ) -> quartz_pb2.WriteResult:
        """Delete by filter: each shard in parallel, its matching ids read from its primary a page
        (SCROLL_LIMIT_MAX) at a time and deleted through the write path. Not atomic across shards
        or pages: a failure raises (the points deleted so far stay deleted) and a retry deletes the
        rest. One WriteResult: no point errors, the last position written on each shard."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        positions: dict[int, quartz_pb2.ShardPosition] = {}

        def left_s() -> float:
            return max(CALL_TIMEOUT_S_MIN, deadline - asyncio.get_running_loop().time())

        async def one(shard: int) -> None:
            offset = ""
            while True:
                req = node_pb2.ScrollRequest(
                    ref=node_pb2.ShardRef(collection_id=coll.id, shard=shard),
                    filter=flt,
                    offset=offset,
                    limit=limits.SCROLL_LIMIT_MAX,
                )
                page = await self._read(coll, shard, quartz_pb2.STRONG, "Scroll", req, left_s())
                ids = [p.id for p in page.points]
                if ids:
                    result = await self._write(
                        coll,
                        ids,
                        lambda ref, idx, ids=ids: node_pb2.WriteRequest(
                            ref=ref, delete_ids=[ids[i] for i in idx]
                        ),
                        left_s(),
                        consistency,
                    )
                    if result.errors:
                        raise _error_of(
                            result.errors[0].code,
                            f"{len(result.errors)} matching points not deleted (retry to delete them): "
                            f"{result.errors[0].message}",
                        )
                    for p in result.positions:
                        positions[p.shard] = p
                if not page.next_offset:
                    return
                offset = page.next_offset

        outcomes = await asyncio.gather(*(one(s) for s in range(coll.shards)), return_exceptions=True)
        answered = _answered(list(enumerate(outcomes)), False)
        return quartz_pb2.WriteResult(
            positions=[positions[s] for s in sorted(positions)],
            shards=answered,
        )

    # ------------------------------------------------------------------ reads

    async def _read(
        self,
        coll: CollectionRecord,
        shard: int,
        consistency: int,
        method: str,
        req,
        timeout_s: float,
        session: dict[int, int] | None = None,
        avoid: str | None = None,
    ):
        """Call one replica of the shard, falling through to the next on UNAVAILABLE. A session read
        carries the LSN the client last wrote there: a replica that has not applied it says so,
        and the next one (at worst the primary, which always has it) answers. The replica at
        `avoid` (one that just failed or is slow) is tried last."""
        last: grpc.RpcError | None = None
        if consistency == quartz_pb2.SESSION and session and shard in session:
            req.min_lsn = session[shard]
        routes = self.shardmap.read_routes(coll, shard, consistency == quartz_pb2.STRONG)
        if avoid is not None:
            routes.sort(key=lambda r: r.address == avoid)  # stable: the others keep their order
        if consistency == quartz_pb2.STRONG and method in ("Get", "Search", "Scroll", "CountPoints"):
            # the node refuses unless it is that epoch's primary with a live lease
            req.strong, req.epoch = True, routes[0].record.epoch
        if consistency in EVENTUAL and len(routes) >= 2 and routes[1].address != avoid:
            self.hedge_budget.read()
            # Hedge: a second replica is asked when the first is slower than its recent p95.
            first, second = routes[0].address, routes[1].address
            try:
                result, sent = await hedged(
                    lambda: self._timed_call(first, method, req, timeout_s),
                    lambda: self._timed_call(second, method, req, timeout_s),
                    self.latencies.hedge_delay_s(_latency_key(first, req)),
                    self.hedge_budget.take,
                )
                self.hedges_sent += sent
                return result
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise error_from_rpc(exc, f"shard {shard}: ") from None
                # the replicas not tried yet: the second too, unless the hedge went out
                last, routes = exc, routes[2:] if getattr(exc, "hedge_sent", False) else routes[1:]
        for route in routes:
            try:
                return await self._timed_call(route.address, method, req, timeout_s)
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE:
                    raise error_from_rpc(exc, f"shard {shard}: ") from None
                last = exc
        assert last is not None
        raise error_from_rpc(last, f"shard {shard}: ")

    async def _timed_call(self, address: str, method: str, request, timeout_s: float):
        key = _latency_key(address, request)
        t0 = time.monotonic()
        try:
            result = await self._call(address, method, request, timeout_s)
        except asyncio.CancelledError:
            # the loser of a hedge took at least this long: without it the p95 would be computed
            # over fast calls only, fall, and fire ever more hedges
            self.latencies.record(key, time.monotonic() - t0)
            raise
        self.latencies.record(key, time.monotonic() - t0)
        return result

    @rpc
    @guarded
    async def Get(self, request, context, principal):
        coll = self._collection(principal, request.collection, Action.READ)
        if len(request.ids) > limits.GET_IDS_MAX:
            raise InvalidArgument(f"{len(request.ids)} ids exceeds {limits.GET_IDS_MAX}", "ids")
        ids = validation.point_ids(request.ids, "ids")
        groups = split_by_shard(ids, coll.shards)
        timeout_s = _timeout(context)
        session = {p.shard: p.lsn for p in request.session}

        async def one(shard: int, idx: np.ndarray):
            req = node_pb2.GetRequest(
                ref=node_pb2.ShardRef(collection_id=coll.id, shard=shard),
                ids=[ids[i] for i in idx],
                with_vectors=request.with_vectors,
                with_payload=request.with_payload,
            )
            return (await self._read(coll, shard, request.consistency, "Get", req, timeout_s, session)).points

        shards = list(groups)
        replies = await asyncio.gather(*(one(s, groups[s]) for s in shards), return_exceptions=True)
        answered = _answered(list(zip(shards, replies, strict=True)), request.allow_partial)
        found = {p.id: p for r in replies if not isinstance(r, BaseException) for p in r}
        return quartz_pb2.GetPointsResponse(
            points=[found[pid] for pid in ids if pid in found], shards=answered
        )

    @rpc
    @guarded
    async def Search(self, request, context, principal):
        coll = self._collection(principal, request.collection, Action.READ)
        q = request.queries
        if not 1 <= q.count <= limits.QUERIES_PER_REQUEST_MAX:
            raise InvalidArgument(f"must hold 1..{limits.QUERIES_PER_REQUEST_MAX} queries", "queries")
        validation.vectors(q.data, q.count, q.dim, coll.dim, "queries")
        k = validation.bounded_int(request.k, "k", 1, limits.K_MAX)
        validation.bounded_int(request.ef, "ef", 0, limits.EF_MAX)
        validation.search_budget(q.count, k, request.ef or coll.ef)
        filters.parse(request.filter)
        timeout_s = _timeout(context)
        shape = SearchShape(coll, k, request.ef, request.filter, request.with_payload, q.dim)
        if request.consistency in EVENTUAL:
            # coalesced with concurrent searches of the same shape: one node call per node for all
            loop = asyncio.get_running_loop()
            merged, plans, _, failures = await self.searches.submit(
                shape.key,
                (q.data, q.count, loop.time() + timeout_s),
                q.count,
                lambda items: self._search_eventual(shape, items),
            )
        else:
            merged, plans, _, failures = await self._search_per_shard(
                shape, q, request.consistency, {p.shard: p.lsn for p in request.session}, timeout_s
            )
        shards = _answered(failures, request.allow_partial, coll.shards)
        if request.with_payload:  # each node kept to the budget; their merged top-k must too
            validation.ReplyBudget().take(sum(len(b) for _, _, payloads in merged for b in payloads))
        return quartz_pb2.SearchPointsResponse(
            results=search_results(merged, plans, request.with_payload), shards=shards
        )

    async def _search_per_shard(
        self, shape: SearchShape, q: node_pb2.Vectors, consistency: int, session: dict, timeout_s: float
    ) -> tuple[list, list[str], int, list[tuple[int, QuartzError]]]:
        """Strong and session searches: one call per shard (each shard's primary, or a replica
        that has applied the session's LSN there)."""

        async def one(shard: int):
            return await self._read(
                shape.coll, shard, consistency, "Search", shape.request([shard], q), timeout_s, session
            )

        replies = await asyncio.gather(*(one(s) for s in range(shape.coll.shards)), return_exceptions=True)
        ok = [r for r in replies if not isinstance(r, BaseException)]
        failures = [(s, r) for s, r in enumerate(replies) if isinstance(r, BaseException)]
        for _, f in failures:
            if not isinstance(f, QuartzError):
                raise f
        merged, plans = shape.merge([rep.results for rep in ok], q.count)
        return merged, plans, len(ok), failures

    async def _search_eventual(self, shape: SearchShape, items: list[tuple[bytes, int, float]]) -> list:
        """One round of coalesced eventual searches: the queries of several requests go to as few
        nodes as hold every shard, one call per node (a node searches its shards and merges them).
        A node that fails, or is slower than its recent p95, is replaced shard by shard by the
        other replicas while time is left. Each request gets (its merged hits, plans, shards
        answered, failures). The round's deadline is the latest of the requests' (each item
        carries its absolute deadline: time spent queued counts); every call, fallbacks
        included, gets only the time left until it."""
        deadline = max(i[2] for i in items)
        count = sum(i[1] for i in items)
        queries = node_pb2.Vectors(data=b"".join(i[0] for i in items), count=count, dim=shape.dim)
        groups, missing = self.shardmap.read_plan(shape.coll)
        outcomes = await asyncio.gather(*(self._search_group(shape, g, queries, deadline) for g in groups))
        answered, results, failures = 0, [], sorted(missing.items())
        # merged in shard order, so that equal scores rank the same whichever replicas answered
        for shards, outcome in sorted((o for group in outcomes for o in group), key=lambda o: o[0][0]):
            if isinstance(outcome, QuartzError):
                failures.extend((s, outcome) for s in shards)
            else:
                answered += len(shards)
                results.append(outcome.results)
        merged, plans = shape.merge(results, count)
        out, at = [], 0
        for _, n, _ in items:
            out.append((merged[at : at + n], plans[at : at + n], answered, failures))
            at += n
        return out

    async def _search_group(
        self, shape: SearchShape, group: ReadGroup, queries: node_pb2.Vectors, deadline: float
    ) -> list[tuple[list[int], object]]:
        """[(shards, SearchResponse or QuartzError)] for the group's shards."""
        loop = asyncio.get_running_loop()
        req = shape.request(group.shards, queries)

        def left_s() -> float:
            return deadline - loop.time()

        async def on_node() -> list[tuple[list[int], object]]:
            reply = await self._timed_call(group.address, "Search", req, max(CALL_TIMEOUT_S_MIN, left_s()))
            if len(group.shards) > 1 and list(reply.searched_shards) != group.shards:
                # a node that does not know also_shards searched ref's shard only
                raise Unavailable(f"{group.address} did not search shards {group.shards} in one call")
            _check_answers(reply, queries.count, group.address)
            return [(group.shards, reply)]

        async def elsewhere(strict: bool) -> list[tuple[list[int], object]]:
            """Each shard from its other replicas (the group's node last). strict: raise the
            first failure (a hedge: the node's own answer may still come)."""

            async def one(shard: int) -> tuple[list[int], object]:
                if left_s() < CALL_TIMEOUT_S_MIN:
                    raise Unavailable(f"shard {shard}: no time left to try another replica", "shards")
                reply = await self._read(
                    shape.coll,
                    shard,
                    quartz_pb2.EVENTUAL,
                    "Search",
                    shape.request([shard], queries),
                    left_s(),
                    avoid=group.address,
                )
                _check_answers(reply, queries.count, f"shard {shard}")
                return [shard], reply

            # every call ends before this returns: none is left running behind a failed hedge
            done = await asyncio.gather(*(one(s) for s in group.shards), return_exceptions=True)
            for result in done:
                if isinstance(result, BaseException) and (strict or not isinstance(result, QuartzError)):
                    raise result
            return [
                r if not isinstance(r, QuartzError) else ([s], r)
                for s, r in zip(group.shards, done, strict=True)
            ]

        try:
            if not group.hedgeable:
                return await on_node()
            self.hedge_budget.read()
            # hedge: when the node is slower than its recent p95, its shards' other replicas too
            result, sent = await hedged(
                on_node,
                lambda: elsewhere(strict=True),
                self.latencies.hedge_delay_s(_latency_key(group.address, req)),
                self.hedge_budget.take,
            )
            self.hedges_sent += sent
            return result
        except grpc.RpcError as exc:
            if exc.code() not in RETRYABLE:
                err = error_from_rpc(exc, f"shards {group.shards}: ")
                return [(group.shards, err)]
        except QuartzError:
            pass  # the node's answer was unusable, or the hedge failed too
        return await elsewhere(strict=False)

    @rpc
    @guarded
    async def Scroll(self, request, context, principal):
        """A page of the collection's points matching `filter`, in id order from `offset`
        (inclusive): each shard's page from `offset`, merged (node/shard/scan.py merge_pages)."""
        coll = self._collection(principal, request.collection, Action.READ)
        limit = scan.page_limit(request.limit)
        offset = scan.offset_id(request.offset)
        filters.parse(request.filter)
        timeout_s = _timeout(context)

        async def one(shard: int) -> node_pb2.ScrollResponse:
            # `limit` per shard is enough: a shard's next_offset names its next point, so the
            # merge knows where every shard's page ends
            req = node_pb2.ScrollRequest(
                ref=node_pb2.ShardRef(collection_id=coll.id, shard=shard),
                filter=request.filter,
                offset=offset,
                limit=limit,
                with_vectors=request.with_vectors,
                with_payload=request.with_payload,
            )
            return await self._read(coll, shard, request.consistency, "Scroll", req, timeout_s)

        replies = await asyncio.gather(*(one(s) for s in range(coll.shards)), return_exceptions=True)
        answered = _answered(list(enumerate(replies)), False)
        points, next_offset = scan.merge_pages(
            [(r.points, r.next_offset) for r in replies], limit, limits.SCROLL_REPLY_BYTES_MAX
        )
        return quartz_pb2.ScrollPointsResponse(points=points, next_offset=next_offset, shards=answered)

    @rpc
    @guarded
    async def Count(self, request, context, principal):
        coll = self._collection(principal, request.collection, Action.READ)
        filters.parse(request.filter)
        timeout_s = _timeout(context)

        async def one(shard: int) -> int:
            # the primary's count: only committed writes (a follower may hold a few not yet committed)
            ref = node_pb2.ShardRef(collection_id=coll.id, shard=shard)
            if request.filter:
                req = node_pb2.CountPointsRequest(ref=ref, filter=request.filter)
                return (await self._read(coll, shard, quartz_pb2.STRONG, "CountPoints", req, timeout_s)).count
            req = node_pb2.StatsRequest(ref=ref)
            return (await self._read(coll, shard, quartz_pb2.STRONG, "Stats", req, timeout_s)).count

        counts = await asyncio.gather(*(one(s) for s in range(coll.shards)), return_exceptions=True)
        answered = _answered(list(enumerate(counts)), request.allow_partial)
        return quartz_pb2.CountResponse(
            count=sum(n for n in counts if not isinstance(n, BaseException)), shards=answered
        )

    # ------------------------------------------------------------------ tenants and keys

    def _credentials(self) -> ClusterCredentials:
        if self.credentials is None:
            raise FailedPrecondition("this router runs with --no-auth: there are no API keys to manage")
        return self.credentials

    @rpc
    @guarded
    async def CreateTenant(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        self._credentials()
        rec = await admin.create_tenant(
            self.store,
            request.name,
            limits=tuple(request.rate_limits),
            plan=request.plan or "free",
            stripe_customer=request.stripe_customer,
            webhook_url=request.webhook_url,
            webhook_secret=request.webhook_secret,
        )
        await self._caught_up(context)
        return tenant_info(rec)

    @rpc
    @guarded
    async def UpdateTenant(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        self._credentials()
        has = request.HasField
        rec = await admin.update_tenant(
            self.store,
            request.name,
            limits=() if request.clear_rate_limits else (tuple(request.rate_limits) or None),
            plan=request.plan if has("plan") else None,
            stripe_customer=request.stripe_customer if has("stripe_customer") else None,
            webhook_url=request.webhook_url if has("webhook_url") else None,
            webhook_secret=request.webhook_secret if has("webhook_secret") else None,
        )
        await self._caught_up(context)
        return tenant_info(rec)

    @rpc
    @guarded
    async def ListTenants(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        tenants = sorted(self.shardmap.view.tenants.values(), key=lambda t: t.name)
        return quartz_pb2.ListTenantsResponse(tenants=[tenant_info(t) for t in tenants])

    @rpc
    @guarded
    async def DeleteTenant(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        self._credentials()
        revoked = await admin.delete_tenant(self.store, request.name)
        await self._caught_up(context)
        return quartz_pb2.DeleteTenantResponse(deleted=True, keys_revoked=revoked)

    @rpc
    @guarded
    async def CreateKey(self, request, context, principal):
        credentials = self._credentials()
        tenant = request.tenant or principal.tenant
        validation.name(tenant, "tenant")
        role = access.role(request.role or access.READ_WRITE)
        access.authorize_key_grant(principal, tenant, role, frozenset(request.collections))
        rec, key = await admin.create_key(
            self.store,
            credentials,
            tenant,
            role,
            list(request.collections),
            request.expires_in_s,
            request.description,
            limits=tuple(request.rate_limits),
        )
        await self._caught_up(context)
        return quartz_pb2.CreateKeyResponse(info=key_info(rec), key=key)

    @rpc
    @guarded
    async def ListKeys(self, request, context, principal):
        tenant = request.tenant or principal.tenant
        access.authorize_tenant(principal, tenant)
        recs = sorted(
            (k for k in self.shardmap.view.keys.values() if k.tenant == tenant),
            key=lambda k: (k.created_at, k.id),
        )
        return quartz_pb2.ListKeysResponse(keys=[key_info(k) for k in recs])

    @rpc
    @guarded
    async def RevokeKey(self, request, context, principal):
        self._credentials()
        validation.name(request.id, "id")
        rec = self.shardmap.view.keys.get(request.id)
        if rec is None or (principal.role != access.ADMIN and rec.tenant != principal.tenant):
            raise NotFound(f"API key {echo(request.id)} does not exist", "id")
        access.authorize_tenant(principal, rec.tenant)
        if principal.role != access.ADMIN and rec.role == access.ADMIN:
            raise PermissionDenied(f"{principal.describe()} may not revoke admin keys", "id")
        now = time.time()
        if rec.role == access.ADMIN and not any(
            k.role == access.ADMIN and k.id != rec.id and (not k.expires_at or k.expires_at > now)
            for k in self.shardmap.view.keys.values()
        ):
            raise FailedPrecondition(
                f"API key {rec.id} is the last admin key: revoking it would lock every administrator "
                "out; create another admin key first",
                "id",
            )
        await admin.revoke_key(self.store, request.id)
        await self._caught_up(context)
        return quartz_pb2.RevokeKeyResponse(revoked=True)

    @rpc
    @guarded
    async def WhoAmI(self, request, context, principal):
        rec = self.shardmap.view.keys.get(principal.key_id)
        if rec is None:  # --no-auth
            return quartz_pb2.ApiKeyInfo(id=principal.key_id, tenant=principal.tenant, role=principal.role)
        return key_info(rec)

    # ------------------------------------------------------------------ usage, billing, audit

    def _tenant_of(self, principal: Principal, tenant: str, billing: bool = False) -> schema.TenantRecord:
        """The tenant a usage or billing call is about: any key reads its own tenant's usage;
        invoices need a tenant admin; another tenant's anything needs an admin key."""
        tenant = tenant or principal.tenant
        validation.name(tenant, "tenant")
        if principal.role != access.ADMIN:
            if tenant != principal.tenant:
                raise PermissionDenied(
                    f"{principal.describe()} may only read its own tenant's usage", "tenant"
                )
            if billing:
                access.authorize_tenant(principal, tenant)
        rec = self.shardmap.view.tenants.get(tenant)
        if rec is None:
            raise NotFound(f"tenant {echo(tenant)} does not exist", "tenant")
        return rec

    @rpc
    @guarded
    async def GetUsage(self, request, context, principal):
        rec = self._tenant_of(principal, request.tenant)
        month = billing_month(request.month)
        u = await usage.month_usage(self.store, rec.name, month)
        total = u.calls
        calls_today = 0
        plan = plans.plan(rec.plan)
        if self.frontdoor is not None and plans.QUOTA_CALLS_PER_DAY in plan.quotas():
            calls_today = await self.frontdoor.limiter.window_usage(
                f"tenant/{rec.name}", plans.QUOTA_CALLS_PER_DAY, "day"
            )
        return quartz_pb2.UsageResponse(
            tenant=rec.name,
            month=month,
            plan=rec.plan,
            days=[
                quartz_pb2.UsageDay(
                    day=d.day,
                    calls=d.calls.total_calls,
                    calls_by_operation=d.calls.by_operation(),
                    vectors_written=d.calls.total_vectors,
                    vector_months=u.months(d.vector_seconds),
                    gb_months=usage.gb_months(d.byte_seconds, month),
                )
                for d in u.days.values()
            ],
            calls=total.total_calls,
            calls_by_operation=total.by_operation(),
            calls_by_key=u.calls_by_key(),
            vectors_written=total.total_vectors,
            vector_months=u.months(sum(d.vector_seconds for d in u.days.values())),
            gb_months=usage.gb_months(sum(d.byte_seconds for d in u.days.values()), month),
            stored_vectors=u.stored_vectors,
            stored_bytes=u.stored_bytes,
            stored_at=u.stored_at,
            calls_today=calls_today,
        )

    @rpc
    @guarded
    async def GetInvoice(self, request, context, principal):
        rec = self._tenant_of(principal, request.tenant, billing=True)
        month = billing_month(request.month)
        u = await usage.month_usage(self.store, rec.name, month)
        bill = invoice.invoice(rec.name, plans.plan(rec.plan), month, u.usage(), rec.stripe_customer)
        return quartz_pb2.InvoiceResponse(json=orjson.dumps(bill.to_json()).decode(), html=bill.to_html())

    @rpc
    @guarded
    async def BillingHistory(self, request, context, principal):
        rec = self._tenant_of(principal, request.tenant, billing=True)
        out = []
        for month in await usage.months_with_usage(self.store, rec.name):
            u = await usage.month_usage(self.store, rec.name, month)
            bill = invoice.invoice(rec.name, plans.plan(rec.plan), month, u.usage())
            out.append(quartz_pb2.InvoiceSummary(month=month, total=f"{bill.total:.2f}", plan=rec.plan))
        return quartz_pb2.BillingHistoryResponse(invoices=out)

    @rpc
    @guarded
    async def QueryHistory(self, request, context, principal):
        rec = self._tenant_of(principal, request.tenant)
        limit = validation.bounded_int(
            request.limit or QUERY_HISTORY_DEFAULT, "limit", 1, QUERY_HISTORY_LIMIT_MAX
        )
        rows = await usage.query_history(self.store, rec.name, limit)
        return quartz_pb2.QueryHistoryResponse(
            queries=[quartz_pb2.QueryRecord(**ledger.query_view(r)) for r in rows]
        )

    @rpc
    @guarded
    async def ListAudit(self, request, context, principal):
        if request.tenant:
            validation.name(request.tenant, "tenant")
        if principal.role == access.ADMIN:
            tenant = request.tenant or None
        else:  # a tenant admin reads its own tenant's events only
            access.authorize_tenant(principal, request.tenant or principal.tenant)
            if principal.role != access.TENANT_ADMIN:
                raise PermissionDenied(f"{principal.describe()} may not read the audit log", "tenant")
            tenant = principal.tenant
        limit = validation.bounded_int(request.limit or AUDIT_TAIL_DEFAULT, "limit", 1, AUDIT_TAIL_MAX)
        if request.verb and not re.fullmatch(r"[a-z][a-z0-9_]{0,63}", request.verb):
            raise InvalidArgument("must be an operation name such as upsert", "verb")
        if self.frontdoor is not None:
            await self.frontdoor.shipper.flush()  # read-your-writes for this router's own events
        records = await audit_store.tail(
            self.store, limit, tenant, request.since or None, request.verb or None
        )
        return quartz_pb2.AuditResponse(records=[orjson.dumps(r).decode() for r in records])

    @rpc
    @guarded
    async def VerifyAudit(self, request, context, principal):
        access.authorize(principal, Action.CLUSTER)
        if self.frontdoor is not None:
            await self.frontdoor.shipper.flush()
        report = await audit_store.verify(self.store)
        return quartz_pb2.VerifyAuditResponse(
            ok=report.ok,
            records=report.records,
            chains=report.chains,
            problems=[str(p) for p in report.problems],
        )

    async def tenant_storage(self, tenant: str) -> tuple[int, int]:
        """(vectors, bytes) a tenant stores now, from its shards' primaries (quota checks)."""
        view = self.shardmap.view
        colls = [c for c in view.collections.values() if c.tenant == tenant and c.id not in view.tombstones]

        async def one(coll: CollectionRecord, shard: int) -> tuple[int, int]:
            req = node_pb2.StatsRequest(ref=node_pb2.ShardRef(collection_id=coll.id, shard=shard))
            st = await self._read(coll, shard, quartz_pb2.STRONG, "Stats", req, limits.ROUTER_CALL_TIMEOUT_S)
            return st.count, st.storage_bytes

        found = await asyncio.gather(*(one(c, s) for c in colls for s in range(c.shards)))
        return sum(v for v, _ in found), sum(b for _, b in found)

    async def new_points(self, principal: Principal, collection: str, ids) -> int:
        """How many of `ids` the collection does not hold yet (a storage quota counts only
        those: overwriting a point stores nothing new)."""
        req = quartz_pb2.GetPointsRequest(collection=collection, ids=list(ids), consistency=quartz_pb2.STRONG)
        get = QuartzService.Get.__wrapped__.__wrapped__  # under @rpc and @guarded: the method itself
        found = await get(self, req, _Internal(), principal)
        return len(set(ids)) - len(found.points)

    async def _caught_up(self, context) -> None:
        """Read-your-writes for a change this router made in etcd: its cached view includes it."""
        await self.shardmap.wait_revision(await self.store.revision(), _timeout(context))


class _Internal:
    """The context of a call the router makes to its own methods (quota checks)."""

    def time_remaining(self) -> float:
        return limits.ROUTER_CALL_TIMEOUT_S

    def invocation_metadata(self) -> tuple:
        return ()


def _answered(
    outcomes: list[tuple[int, object]], allow_partial: bool, total: int | None = None
) -> quartz_pb2.ShardsAnswered:
    """The fan-out accounting of a read from (shard, reply or exception) pairs (`total` given:
    the pairs are the failures only). A failure other than UNAVAILABLE (a bad filter, a missing
    collection: the same on every shard) is raised as is; UNAVAILABLE shards are listed when the
    read allows a partial answer, and otherwise raised as one error naming every one of them."""
    failed = sorted((s, e) for s, e in outcomes if isinstance(e, BaseException))
    for _, exc in failed:
        if not isinstance(exc, QuartzError):
            raise exc
        if exc.code != "UNAVAILABLE":
            raise exc
    if failed and not allow_partial:
        if len(failed) == 1:
            raise failed[0][1]
        names = ", ".join(str(s) for s, _ in failed)
        first = failed[0][1]
        raise Unavailable(f"shards {names} did not answer (allow_partial answers without them): {first}")
    total = len(outcomes) if total is None else total
    return quartz_pb2.ShardsAnswered(
        total=total,
        answered=total - len(failed),
        failed=[quartz_pb2.ShardFailure(shard=s, code=e.code, message=str(e)) for s, e in failed],
    )


def _error_of(code: str, message: str) -> QuartzError:
    """The domain error of a status name (a PointError's code); UNAVAILABLE when unknown."""
    for cls in STATUS:
        if cls.code == code and cls.__base__ is QuartzError:
            return cls(message)
    return Unavailable(message)


def _check_answers(reply: node_pb2.SearchResponse, queries: int, source: str) -> None:
    """A reply must answer every query of the call: a short one would shift the results of the
    requests coalesced into it onto each other."""
    if len(reply.results) != queries:
        raise Unavailable(f"{source} answered {len(reply.results)} of {queries} queries")


def _latency_key(address: str, request) -> tuple[str, str, int]:
    """Hedging compares a call with recent calls to the same replica of the same kind and size."""
    if isinstance(request, node_pb2.SearchRequest):
        return address, "search", size_class(request.queries.count * (1 + len(request.also_shards)))
    if isinstance(request, node_pb2.GetRequest):
        return address, "get", size_class(len(request.ids))
    return address, type(request).__name__, 1


def vars_of(cfg: validation.CollectionConfig) -> dict:
    return {f: getattr(cfg, f) for f in cfg.__slots__}
