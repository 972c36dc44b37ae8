"""`quartz router`: the public endpoint. Stateless: several may run against one cluster."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

from quartz_cluster import logs, observability
from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity
from quartz_cluster.meta import schema
from quartz_cluster.meta.store import EtcdStore
from quartz_cluster.observability import ObservabilitySettings, tracing
from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc
from quartz_cluster.router.service import NodePool, QuartzService
from quartz_cluster.router.shardmap import ShardMap
from quartz_cluster.rpc import decode
from quartz_cluster.rpc.server import build_server, set_serving, write_info_file
from quartz_cluster.stallwatch import StallWatch

log = logging.getLogger("quartz.router")
SERVICE = quartz_pb2.DESCRIPTOR.services_by_name["Quartz"].full_name
STOP_GRACE_S = 5.0
MAP_LOAD_TIMEOUT_S = 60.0


@dataclass(slots=True)
class RouterSettings:
    etcd: str
    listen: str = "127.0.0.1:7000"
    info_file: str | None = None  # where to write {"address", "pid"} once serving
    credentials: ClusterCredentials | None = None  # None: --no-auth (every caller is an admin)
    tls: tuple[bytes, bytes] | None = None  # (certificate chain, private key) PEM for clients
    tls_files: tuple[str, str] | None = None  # the same, as file paths (for the HTTP gateway)
    router_id: str = "router"
    http_listen: str | None = None  # serve the HTTP gateway here too (port 0 picks a free one)
    journal_dir: str | None = None  # the metering journal (auth on); metering/journal.py
    journal_fsync: bool = False  # fsync each record: survives losing the machine, not only the process
    observability: ObservabilitySettings | None = None  # trace export (metrics: /metrics on the HTTP port)


async def serve(settings: RouterSettings) -> None:
    t0 = time.monotonic()
    observability.start("router", settings.router_id, settings.observability)
    shardmap = ShardMap()
    creds = settings.credentials
    etcd_auth = creds.etcd_auth if creds else None
    watch_store, store = EtcdStore(settings.etcd, etcd_auth), EtcdStore(settings.etcd, etcd_auth)
    nodes = NodePool(MemberIdentity(creds, settings.router_id) if creds else None)
    service = QuartzService(shardmap, store, nodes, creds)
    stop = asyncio.Event()
    shipping = None
    if creds is not None:
        from quartz_cluster.metering.journal import Journal
        from quartz_cluster.metering.shipper import Shipper
        from quartz_cluster.router.frontdoor import FrontDoor
        from quartz_cluster.router.ratelimit import SharedLimiter

        if not settings.journal_dir:
            raise SystemExit("quartz router: a router with auth needs --journal-dir (or --cluster-dir)")
        journal = Journal(settings.journal_dir, settings.journal_fsync)
        shipper = Shipper(journal, EtcdStore(settings.etcd, etcd_auth), settings.router_id)
        limiter = SharedLimiter(EtcdStore(settings.etcd, etcd_auth))
        service.frontdoor = FrontDoor(
            lambda: shardmap.view, limiter, shipper, service.tenant_storage, service.new_points
        )
        shipping = asyncio.create_task(shipper.run(stop))
    server, port, health = build_server(
        settings.listen,
        lambda s: decode.register(s, quartz_pb2_grpc.add_QuartzServicer_to_server, service),
        [SERVICE],
        tls=settings.tls,
    )
    await set_serving(health, [SERVICE], False)
    await server.start()
    StallWatch().start()  # logs any stall that could cost a lease
    follower = asyncio.create_task(watch_store.follow(schema.ROOT, shardmap.update, stop))
    await asyncio.wait_for(shardmap.loaded.wait(), MAP_LOAD_TIMEOUT_S)
    address = f"{settings.listen.rsplit(':', 1)[0]}:{port}"
    http = None
    if settings.http_listen:
        from quartz_cluster.gateway.server import HttpGateway

        http = HttpGateway(service, shardmap.loaded.is_set, settings.http_listen, settings.tls_files)
        http.start()
    if settings.info_file:
        write_info_file(settings.info_file, {"address": address, "http": http.address if http else None})
    await set_serving(health, [SERVICE], True)
    log.info(
        "router ready",
        extra={
            "address": address,
            "http": http.address if http else None,
            "auth": creds is not None,
            "startup_s": round(time.monotonic() - t0, 3),
        },
    )

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await set_serving(health, [SERVICE], False)
    if http is not None:
        await http.stop()
    await server.stop(STOP_GRACE_S)
    await follower
    if shipping is not None:
        await shipping
        try:  # the tokens this router holds go back to the buckets
            await asyncio.wait_for(service.frontdoor.limiter.close(), STOP_GRACE_S)
        except Exception as exc:
            log.warning("rate-limit tokens not returned at stop", extra={"error": repr(exc)})
        try:  # what the last calls journaled; a restart ships it otherwise
            await asyncio.wait_for(service.frontdoor.shipper.flush(), STOP_GRACE_S)
        except Exception as exc:
            log.warning("usage not shipped at stop; it stays in the journal", extra={"error": repr(exc)})
    await nodes.close()
    await watch_store.close()
    await store.close()
    tracing.shutdown()
    log.info("stopped")


def run(settings: RouterSettings, log_level: str = "info") -> int:
    logs.configure(log_level, role="router")
    asyncio.run(serve(settings))
    return 0
