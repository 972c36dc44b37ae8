"""One function wires a gRPC server: message limits, health, reflection, services."""

from __future__ import annotations

import os

import grpc
import orjson
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quartz_cluster import limits

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", limits.MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", limits.MESSAGE_BYTES_MAX),
    ("grpc.so_reuseport", 0),
]
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", limits.MESSAGE_BYTES_MAX),
    ("grpc.max_send_message_length", limits.MESSAGE_BYTES_MAX),
]


def build_server(
    listen: str,
    register,
    service_names: list[str],
    interceptors=(),
    reflect: bool = True,
    tls: tuple[bytes, bytes] | None = None,
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Create a grpc.aio server on `listen` (port 0 picks a free port). `register(server)` adds
    the services. Reflection lists `service_names` when `reflect` (the public service only: the
    internal one is not advertised). `tls`: (certificate chain, private key) PEM to serve TLS.
    Returns the server, the bound port and its health servicer (NOT_SERVING until the caller
    marks it ready)."""
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=list(interceptors))
    register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if reflect:
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
    if tls is not None:
        port = server.add_secure_port(listen, grpc.ssl_server_credentials([(tls[1], tls[0])]))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    return server, port, health_servicer


async def set_serving(health_servicer, service_names: list[str], serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ["", *service_names]:
        await health_servicer.set(name, status)


def write_info_file(path: str, info: dict) -> None:
    """Announce a serving process to whoever started it: `info` plus this pid as JSON, written
    atomically (the parent polls for the file and checks the pid)."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps({**info, "pid": os.getpid()}))
    os.replace(tmp, path)
