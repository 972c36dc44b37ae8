"""Serve the gateway with uvicorn on the router's own event loop (the servicer's state — shard
map, node channels, coalescer — is shared, not copied)."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn

from quartz_cluster.gateway.app import build_app
from quartz_cluster.gateway.observe import ObservedApp

HTTP_KEEPALIVE_S = 30
HTTP_CONNECTIONS_MAX = 1024
HTTP_BACKLOG = 512


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # the router owns SIGTERM / SIGINT
        yield


class HttpGateway:
    def __init__(self, service, ready, listen: str, tls_files: tuple[str, str] | None = None) -> None:
        host, _, port = listen.rpartition(":")
        # proto IPPROTO_TCP, not 0: asyncio turns TCP_NODELAY on only for such sockets' connections;
        # without it every reply waited ~40 ms for the client's delayed ACK (docs/BENCHMARKS.md)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host or "127.0.0.1", int(port)))
        self.sock.listen(HTTP_BACKLOG)
        self.sock.setblocking(False)
        self.address = f"{host or '127.0.0.1'}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            ObservedApp(build_app(service, ready)),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=HTTP_KEEPALIVE_S,
            limit_concurrency=HTTP_CONNECTIONS_MAX,
            ssl_certfile=tls_files[0] if tls_files else None,
            ssl_keyfile=tls_files[1] if tls_files else None,
            server_header=False,
        )
        self.server = _Server(config)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
