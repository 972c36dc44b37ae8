"""gRPC servicer of quartz.v1.Node. Each method: validate, call the domain, build the reply.
Errors are mapped by `rpc.status.rpc`; nothing here knows about storage internals."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psutil

from quartz_cluster import filters, limits, validation
from quartz_cluster.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from quartz_cluster.node.backup_rpcs import NodeBackupRpcs
from quartz_cluster.node.memory import NodeBudget
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.shard import ShardReplica, ShardSpec, scan
from quartz_cluster.node.shard.search import attach_payloads
from quartz_cluster.proto.quartz.v1 import node_pb2, node_pb2_grpc
from quartz_cluster.rpc.status import rpc
from quartz_cluster.topk import merge_hits

METRIC_NAMES = {node_pb2.COSINE: "cosine", node_pb2.L2: "l2", node_pb2.IP: "ip"}
METRIC_ENUMS = {v: k for k, v in METRIC_NAMES.items()}


def spec_from_proto(msg: node_pb2.ShardSpec) -> ShardSpec:
    if msg.metric not in METRIC_NAMES:
        raise InvalidArgument("must be COSINE, L2 or IP", "spec.metric")
    h = msg.hnsw
    return ShardSpec(
        collection_id=validation.name(msg.ref.collection_id, "spec.ref.collection_id"),
        shard=validation.bounded_int(msg.ref.shard, "spec.ref.shard", 0, limits.SHARD_NUMBER_MAX),
        dim=validation.bounded_int(msg.dim, "spec.dim", 1, limits.DIM_MAX),
        metric=METRIC_NAMES[msg.metric],
        **validation.hnsw_params(h.m, h.ef_construction, h.ef, "spec.hnsw"),
    )


def spec_to_proto(spec: ShardSpec) -> node_pb2.ShardSpec:
    return node_pb2.ShardSpec(
        ref=node_pb2.ShardRef(collection_id=spec.collection_id, shard=spec.shard),
        dim=spec.dim,
        metric=METRIC_ENUMS[spec.metric],
        hnsw=node_pb2.HnswParams(m=spec.m, ef_construction=spec.ef_construction, ef=spec.ef),
    )


def search_results(merged: list, plans: list[str], with_payload: bool) -> list[node_pb2.SearchResult]:
    """Merged (ids, scores, payloads) and plans per query, as SearchResults (payloads only when asked)."""
    return [
        node_pb2.SearchResult(ids=i, scores=s, payloads=p if with_payload else [], plan=plan)
        for (i, s, p), plan in zip(merged, plans, strict=True)
    ]


def _session_wait(context) -> float:
    remaining = context.time_remaining()
    return limits.SESSION_WAIT_S_MAX if remaining is None else min(limits.SESSION_WAIT_S_MAX, remaining / 2)


class NodeService(NodeBackupRpcs, node_pb2_grpc.NodeServicer):
    def __init__(self, registry: ShardRegistry) -> None:
        self.registry = registry
        self.process = psutil.Process()
        # in a cluster: (collection_id, shard) -> whether the shard map places a replica here
        self.placed: Callable[[str, int], bool] | None = None
        self.budget: NodeBudget | None = None  # admission control (memory, replicas)

    def _shard(self, ref: node_pb2.ShardRef) -> ShardReplica:
        return self.registry.get(ref.collection_id, ref.shard)

    @rpc
    async def CreateShard(self, request, context):
        spec = spec_from_proto(request.spec)
        if self.placed is not None and not self.placed(spec.collection_id, spec.shard):
            # in a cluster, replicas follow the shard map: one made by hand would belong to no
            # collection, be read by no router and never be dropped
            raise FailedPrecondition(
                f"the shard map places no replica of {spec.collection_id}/{spec.shard} on this node "
                "(in a cluster, shards are created by creating a collection)",
                "spec.ref",
            )
        created = await self.registry.create(spec)
        return node_pb2.CreateShardResponse(created=created)

    @rpc
    async def DropShard(self, request, context):
        dropped = await self.registry.drop(request.ref.collection_id, request.ref.shard)
        return node_pb2.DropShardResponse(dropped=dropped)

    @rpc
    async def Write(self, request, context):
        shard = self._shard(request.ref)
        up = request.upserts
        batch = validation.write_batch(
            up.ids,
            up.vectors.data,
            up.vectors.count,
            up.vectors.dim,
            up.payloads,
            request.delete_ids,
            shard.spec.dim,
        )
        if self.budget is not None and batch.ids:
            # the rows twice (index and RocksDB), the payloads, and the index doubling if it fills up
            extra = 2 * batch.vectors.nbytes + sum(len(b) for b in batch.payload_blobs)
            extra += shard.growth_bytes(len(batch.ids))
            self.budget.check_memory(extra, "this write", "upserts")
        lsn = await shard.write(batch, request.epoch, max(1, request.min_in_sync))
        return node_pb2.WriteResponse(lsn=lsn, epoch=shard.epoch)

    @rpc
    async def Get(self, request, context):
        shard = self._shard(request.ref)
        if len(request.ids) > limits.GET_IDS_MAX:
            raise InvalidArgument(f"{len(request.ids)} ids exceeds {limits.GET_IDS_MAX}", "ids")
        ids = validation.point_ids(request.ids, "ids")
        if request.min_lsn:
            await shard.wait_applied(request.min_lsn, _session_wait(context))
        if request.strong:
            shard.check_strong_read(request.epoch)
        rows = await asyncio.to_thread(shard.get, ids, request.with_vectors, request.with_payload)
        if request.strong:  # the lease may have lapsed while the read waited or ran
            shard.check_strong_read(request.epoch)
        return node_pb2.GetResponse(
            points=[node_pb2.Point(id=pid, vector=vec, payload=pay) for pid, vec, pay in rows]
        )

    @rpc
    async def Search(self, request, context):
        shard = self._shard(request.ref)
        q = request.queries
        if not 1 <= q.count <= limits.QUERIES_PER_REQUEST_MAX:
            raise InvalidArgument(f"must hold 1..{limits.QUERIES_PER_REQUEST_MAX} queries", "queries")
        queries = validation.vectors(q.data, q.count, q.dim, shard.spec.dim, "queries")
        k = validation.bounded_int(request.k, "k", 1, limits.K_MAX)
        ef = validation.bounded_int(request.ef, "ef", 0, limits.EF_MAX)
        validation.search_budget(q.count, k, ef or shard.spec.ef)
        flt = filters.parse(request.filter)
        shards = [shard, *self._also_shards(request)]
        if request.min_lsn:
            await shard.wait_applied(request.min_lsn, _session_wait(context))
        if request.strong:
            shard.check_strong_read(request.epoch)
        # payloads are read after the merge, for the winners only, within the reply budget
        per_shard = await asyncio.to_thread(lambda: [s.search(queries, k, ef, flt, False) for s in shards])
        merged, plans = merge_hits(shard.spec.metric, k, per_shard, len(queries))
        if request.with_payload:
            stores = [s.store for s in shards]
            merged = await asyncio.to_thread(
                attach_payloads, stores, per_shard, merged, validation.ReplyBudget()
            )
        if request.strong:  # the lease may have lapsed while the search waited or ran
            shard.check_strong_read(request.epoch)
        return node_pb2.SearchResponse(
            results=search_results(merged, plans, request.with_payload),
            searched_shards=[s.spec.shard for s in shards],
        )

    async def _read_state(self, request, context) -> ShardReplica:
        """A replica to read from, as Get and Search wait for it: the session's LSN applied, a
        strong read's lease held."""
        shard = self._shard(request.ref)
        if shard.broken:
            raise Unavailable(f"shard {shard.spec.name} is out of service: {shard.broken}")
        if request.min_lsn:
            await shard.wait_applied(request.min_lsn, _session_wait(context))
        if request.strong:
            shard.check_strong_read(request.epoch)
        return shard

    @rpc
    async def Scroll(self, request, context):
        limit = validation.bounded_int(request.limit, "limit", 1, limits.SCROLL_LIMIT_MAX)
        offset = scan.offset_id(request.offset)
        flt = filters.parse(request.filter)
        shard = await self._read_state(request, context)
        page = await asyncio.to_thread(
            scan.scroll,
            shard.state,
            shard.store,
            flt,
            offset,
            limit,
            request.with_vectors,
            request.with_payload,
        )
        if request.strong:  # the lease may have lapsed while the read waited or ran
            shard.check_strong_read(request.epoch)
        return node_pb2.ScrollResponse(
            points=[node_pb2.Point(id=pid, vector=vec, payload=pay) for pid, vec, pay in page.points],
            next_offset=page.next_offset,
        )

    @rpc
    async def CountPoints(self, request, context):
        flt = filters.parse(request.filter)
        shard = await self._read_state(request, context)
        found = await asyncio.to_thread(scan.count, shard.state, shard.store, flt)
        if request.strong:
            shard.check_strong_read(request.epoch)
        return node_pb2.CountPointsResponse(count=found)

    def _also_shards(self, request: node_pb2.SearchRequest) -> list[ShardReplica]:
        also = list(request.also_shards)
        if not also:
            return []
        if request.strong or request.min_lsn:
            raise InvalidArgument("is for eventual reads only: not with strong or min_lsn", "also_shards")
        if len(also) >= limits.SHARDS_PER_COLLECTION_MAX:
            raise InvalidArgument(f"must hold < {limits.SHARDS_PER_COLLECTION_MAX} shards", "also_shards")
        if len(set(also)) != len(also) or request.ref.shard in also:
            raise InvalidArgument("must not repeat a shard", "also_shards")
        found = []
        for i, number in enumerate(also):
            try:
                found.append(self.registry.get(request.ref.collection_id, number))
            except NotFound as exc:
                raise NotFound(str(exc), f"also_shards[{i}]") from None
        return found

    def _stats(self, shard: ShardReplica) -> node_pb2.ShardStats:
        return node_pb2.ShardStats(
            spec=spec_to_proto(shard.spec),
            rss_bytes=self.process.memory_info().rss,
            role=shard.role,
            **shard.stats(),
        )

    @rpc
    async def Stats(self, request, context):
        return self._stats(self._shard(request.ref))

    @rpc
    async def Replicate(self, request, context):
        shard = self._shard(request.ref)
        if (
            len(request.entries)
            > limits.REPLICATION_ENTRIES_PER_CALL_MAX
            + limits.INLINE_CATCHUP_ENTRIES_MAX
            + limits.GROUP_COMMIT_BATCHES_MAX
        ):
            raise InvalidArgument(f"{len(request.entries)} entries in one call is too many", "entries")
        return await shard.append_replicated(request)

    @rpc
    async def InstallSnapshot(self, request_iterator, context):
        """Chunks go to a staging database as they arrive; a complete stream is installed by the
        shard's writer. However the stream ends early (an error, a cancel), the staging is
        aborted: nothing stays locked or waiting (shard/snapshot.py)."""
        first, shard, staging = None, None, None
        try:
            async for chunk in request_iterator:
                if first is None:
                    first = chunk
                    shard = self._shard(chunk.ref)
                    staging = shard.begin_snapshot(chunk.epoch, chunk.lsn, chunk.lsn_epoch, chunk.next_label)
                elif (chunk.ref, chunk.epoch, chunk.lsn) != (first.ref, first.epoch, first.lsn):
                    raise InvalidArgument(
                        "every chunk of a snapshot must name the same shard, epoch, lsn", "chunks"
                    )
                if chunk.keys or chunk.values:
                    await asyncio.to_thread(staging.write, list(chunk.keys), list(chunk.values))
            if first is None:
                raise InvalidArgument("an empty snapshot stream", "chunks")
            return await shard.install_snapshot(staging)
        finally:
            if staging is not None:
                staging.abort()  # a no-op once the writer took it

    @rpc
    async def ListShards(self, request, context):
        return node_pb2.ListShardsResponse(shards=[self._stats(s) for s in self.registry.shards.values()])
