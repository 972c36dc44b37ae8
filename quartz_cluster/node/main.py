"""`quartz node`: serve the shards under a data dir until SIGTERM/SIGINT.

On start the node binds its port (0 = any free port), opens every shard (checkpoint + log
replay), writes DATA_DIR/node.json with its address and pid, then reports SERVING on the
health service. On SIGTERM it reports NOT_SERVING, stops accepting RPCs after a grace period,
checkpoints every shard and exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass

from threadpoolctl import threadpool_limits

from quartz_cluster import logs, observability, validation
from quartz_cluster.auth.cluster import ClusterCredentials
from quartz_cluster.node.membership import ClusterMember
from quartz_cluster.node.memory import NodeBudget, raise_fd_limit
from quartz_cluster.node.metrics import node_collector
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.service import NodeService
from quartz_cluster.node.shard import ShardOptions
from quartz_cluster.observability import ObservabilitySettings, tracing
from quartz_cluster.proto.quartz.v1 import node_pb2, node_pb2_grpc
from quartz_cluster.rpc import decode
from quartz_cluster.rpc.guard import MemberGuard
from quartz_cluster.rpc.server import build_server, set_serving, write_info_file
from quartz_cluster.stallwatch import StallWatch

log = logging.getLogger("quartz.node")
SERVICE = node_pb2.DESCRIPTOR.services_by_name["Node"].full_name
STOP_GRACE_S = 5.0


@dataclass(slots=True)
class NodeSettings:
    node_id: str
    data_dir: str
    listen: str = "127.0.0.1:0"
    advertise: str | None = None  # the address registered in etcd; None: the bound listen address
    commit_mode: str = "group"
    checkpoint_every_points: int = 50_000
    threads: int = os.cpu_count() or 1
    etcd: str | None = None  # host:port[,host:port...]; None: standalone (no cluster)
    lease_ttl_s: int = 3
    log_retention_entries: int = 10_000
    memory_bytes_max: int | None = None  # admission control; None: a share of the machine's memory
    credentials: ClusterCredentials | None = None  # None: --no-auth (the internal API is open)
    observability: ObservabilitySettings | None = None  # metrics port, trace export

    def __post_init__(self) -> None:
        # the id is a segment of etcd keys (/quartz/replicas/<cid>/<shard>/<node>): no "/"
        validation.name(self.node_id, "node_id")


def _write_node_file(settings: NodeSettings, address: str, listen: str, metrics: str | None) -> None:
    info = {"id": settings.node_id, "address": address, "listen": listen, "metrics": metrics}
    write_info_file(os.path.join(settings.data_dir, "node.json"), info)


async def serve(settings: NodeSettings) -> None:
    t0 = time.monotonic()
    os.makedirs(settings.data_dir, exist_ok=True)
    registry = ShardRegistry(
        settings.data_dir,
        ShardOptions(
            commit_mode=settings.commit_mode,
            checkpoint_every_points=settings.checkpoint_every_points,
            threads=settings.threads,
            log_retention_entries=settings.log_retention_entries,
        ),
    )
    budget = NodeBudget(settings.node_id, settings.memory_bytes_max, raise_fd_limit())
    registry.budget = budget
    service = NodeService(registry)
    service.node_id = settings.node_id  # named in backup parts
    service.budget = budget
    metrics_address = observability.start(
        "node",
        settings.node_id,
        settings.observability,
        node_collector(registry, budget, settings.data_dir),
    )
    server, port, health = build_server(
        settings.listen,
        lambda s: decode.register(s, node_pb2_grpc.add_NodeServicer_to_server, service),
        [SERVICE],
        interceptors=[MemberGuard(settings.credentials)] if settings.credentials else [],
        reflect=False,  # the internal service is not advertised
    )
    await set_serving(health, [SERVICE], False)
    await server.start()
    StallWatch().start()  # logs any stall that could cost a lease
    await registry.open_all()
    host = settings.listen.rsplit(":", 1)[0]
    listen = f"{host}:{port}"
    address = settings.advertise or listen
    member = None
    if settings.etcd:
        member = ClusterMember(
            settings.node_id,
            settings.etcd,
            address,
            uuid.uuid4().hex,
            registry,
            settings.lease_ttl_s,
            settings.credentials,
        )
        await member.start()
        service.placed = member.placed
    _write_node_file(settings, address, listen, metrics_address)
    await set_serving(health, [SERVICE], True)
    log.info(
        "node ready",
        extra={
            "address": address,
            "listen": listen,
            "metrics": metrics_address,
            "shards": len(registry.shards),
            "startup_s": round(time.monotonic() - t0, 3),
        },
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await set_serving(health, [SERVICE], False)
    if member is not None:
        await member.stop()  # revoke the lease first: the cluster reacts at once, not after the TTL
    await server.stop(STOP_GRACE_S)
    await registry.close()
    tracing.shutdown()
    log.info("stopped")


# numpy's BLAS (OpenBLAS) starts a thread per core for each matrix product of the exact plan,
# and its threads spin while they wait. The node already searches on a pool of threads, and
# nodes share machines: three nodes on two cores each spinning two BLAS threads made a filtered
# search through the cluster 5x slower (57 ms against 12 ms with one thread; docs/BENCHMARKS.md).
BLAS_THREADS = 1


def run(settings: NodeSettings, log_level: str = "info") -> int:
    logs.configure(log_level, node=settings.node_id)
    threadpool_limits(limits=BLAS_THREADS, user_api="blas")
    asyncio.run(serve(settings))
    return 0
