"""A thin synchronous client of the internal Node service, for tools, tests and benchmarks.
(Applications use the router's public API and `QuartzClient`.)"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import grpc
import numpy as np
import orjson

from quartz_cluster.auth.cluster import MemberIdentity
from quartz_cluster.node.service import METRIC_ENUMS
from quartz_cluster.proto.quartz.v1 import node_pb2, node_pb2_grpc
from quartz_cluster.rpc.guard import MemberStub
from quartz_cluster.rpc.server import CHANNEL_OPTIONS

DEFAULT_TIMEOUT_S = 30.0


def pack(vectors: np.ndarray) -> node_pb2.Vectors:
    arr = np.ascontiguousarray(vectors, dtype="<f4")
    if arr.ndim == 1:
        arr = arr[None, :]
    return node_pb2.Vectors(data=arr.tobytes(), count=arr.shape[0], dim=arr.shape[1])


@dataclass(slots=True)
class Hit:
    id: str
    score: float
    payload: dict | None


class NodeClient:
    """A blocking client of one node's internal API (tests, benchmarks, the chaos checker).
    `identity`: the member token to call a node of a secured cluster with (None: a standalone or
    --no-auth node)."""

    def __init__(
        self, address: str, timeout_s: float = DEFAULT_TIMEOUT_S, identity: MemberIdentity | None = None
    ) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.identity = identity
        self._connect(address)

    def _connect(self, address: str) -> None:
        self.channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
        stub = node_pb2_grpc.NodeStub(self.channel)
        self.stub = stub if self.identity is None else MemberStub(stub, self.identity)

    def close(self) -> None:
        self.channel.close()

    def reconnect(self, address: str) -> None:
        """Point at a (restarted) node's new address."""
        self.channel.close()
        self.address = address
        self._connect(address)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    @staticmethod
    def ref(collection_id: str, shard: int = 0) -> node_pb2.ShardRef:
        return node_pb2.ShardRef(collection_id=collection_id, shard=shard)

    def create_shard(
        self,
        collection_id: str,
        shard: int,
        dim: int,
        metric: str = "cosine",
        m: int = 0,
        ef_construction: int = 0,
        ef: int = 0,
    ) -> bool:
        spec = node_pb2.ShardSpec(
            ref=self.ref(collection_id, shard),
            dim=dim,
            metric=METRIC_ENUMS[metric],
            hnsw=node_pb2.HnswParams(m=m, ef_construction=ef_construction, ef=ef),
        )
        return self.stub.CreateShard(node_pb2.CreateShardRequest(spec=spec), timeout=self.timeout_s).created

    def drop_shard(self, collection_id: str, shard: int = 0) -> bool:
        req = node_pb2.DropShardRequest(ref=self.ref(collection_id, shard))
        return self.stub.DropShard(req, timeout=self.timeout_s).dropped

    def upsert(
        self,
        collection_id: str,
        shard: int,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict] | None = None,
        delete_ids: Sequence[str] = (),
    ) -> int:
        blobs = [orjson.dumps(p) for p in payloads] if payloads is not None else []
        req = node_pb2.WriteRequest(
            ref=self.ref(collection_id, shard),
            upserts=node_pb2.PointBatch(
                ids=list(ids), vectors=pack(vectors) if len(ids) else None, payloads=blobs
            ),
            delete_ids=list(delete_ids),
        )
        return self.stub.Write(req, timeout=self.timeout_s).lsn

    def delete(self, collection_id: str, shard: int, ids: Sequence[str]) -> int:
        req = node_pb2.WriteRequest(ref=self.ref(collection_id, shard), delete_ids=list(ids))
        return self.stub.Write(req, timeout=self.timeout_s).lsn

    def get(
        self,
        collection_id: str,
        shard: int,
        ids: Sequence[str],
        with_vectors: bool = True,
        with_payload: bool = True,
    ) -> dict[str, tuple[np.ndarray | None, dict | None]]:
        req = node_pb2.GetRequest(
            ref=self.ref(collection_id, shard),
            ids=list(ids),
            with_vectors=with_vectors,
            with_payload=with_payload,
        )
        resp = self.stub.Get(req, timeout=self.timeout_s)
        return {
            p.id: (
                np.frombuffer(p.vector, dtype="<f4") if with_vectors else None,
                orjson.loads(p.payload) if with_payload and p.payload else ({} if with_payload else None),
            )
            for p in resp.points
        }

    def search_request(
        self,
        collection_id: str,
        shard: int,
        queries: np.ndarray,
        k: int = 10,
        ef: int = 0,
        filter: dict | str | None = None,
        with_payload: bool = False,
    ) -> node_pb2.SearchRequest:
        flt = filter if isinstance(filter, str) else (orjson.dumps(filter).decode() if filter else "")
        return node_pb2.SearchRequest(
            ref=self.ref(collection_id, shard),
            queries=pack(queries),
            k=k,
            ef=ef,
            filter=flt,
            with_payload=with_payload,
        )

    def search_raw(self, *args, **kwargs) -> node_pb2.SearchResponse:
        """The node's reply as it is; arguments as search_request's."""
        return self.stub.Search(self.search_request(*args, **kwargs), timeout=self.timeout_s)

    def search(
        self,
        collection_id: str,
        shard: int,
        queries: np.ndarray,
        k: int = 10,
        ef: int = 0,
        filter: dict | str | None = None,
        with_payload: bool = False,
    ) -> list[list[Hit]]:
        resp = self.search_raw(collection_id, shard, queries, k, ef, filter, with_payload)
        return [
            [
                Hit(pid, score, orjson.loads(r.payloads[i]) if with_payload and r.payloads[i] else None)
                for i, (pid, score) in enumerate(zip(r.ids, r.scores, strict=True))
            ]
            for r in resp.results
        ]

    def stats(self, collection_id: str, shard: int = 0) -> node_pb2.ShardStats:
        return self.stub.Stats(
            node_pb2.StatsRequest(ref=self.ref(collection_id, shard)), timeout=self.timeout_s
        )
