"""A fault-injecting network for chaos runs: a TCP proxy (a "front") in front of each node's
port, which the node advertises in etcd instead of its own, so the router, the coordinators and
the other nodes reach it only through the front.

Partitions are rules "bytes sent by A to B are held": on every connection between A and B (either
side may have opened it) the proxy stops forwarding that direction; the kernel buffers fill and
the sender's calls hang until their deadlines, as behind a real network partition (nothing is
refused, which would be a kinder fault). Cutting both directions is two rules; one rule alone
is a one-way partition: B's requests reach A and are applied but the replies never come back,
the case that makes a write "maybe applied". When the rule is lifted the held bytes flow again,
like TCP retransmits after a partition heals, so late requests (from an old epoch, say) reach
their target.

Who opened a connection is found from /proc: the client's socket (its local port is the peer
port the front sees) is looked up in /proc/net/tcp and its inode in the candidate processes'
fd tables. Linux only; the processes are our own children. etcd is not fronted: a node keeps its
lease through a partition (losing etcd is the etcd scenarios' fault)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger("quartz.chaos.net")

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 10.0  # for the thread-safe control calls from the chaos schedule


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """The inode of the established loopback socket local_port -> remote_port, from /proc."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, remote = cols[1], cols[2]
                    if int(local.rsplit(":", 1)[1], 16) == local_port and (
                        int(remote.rsplit(":", 1)[1], 16) == remote_port
                    ):
                        return cols[9]
        except OSError:
            continue
    return None


def owner_of(local_port: int, remote_port: int, candidates: dict[int, str]) -> str | None:
    """Which candidate process (pid -> name) holds the socket local_port -> remote_port."""
    inode = _socket_inode(local_port, remote_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid, name in candidates.items():
        fd_dir = f"/proc/{pid}/fd"
        with contextlib.suppress(OSError):
            for fd in os.listdir(fd_dir):
                with contextlib.suppress(OSError):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        return name
    return None


class Network:
    """The fronts and the rules, served by an event loop on a thread of its own."""

    def __init__(self, processes: Callable[[], dict[int, str]]) -> None:
        self.processes = processes  # pid -> name of every process that may open connections
        self.blocked: set[tuple[str, str]] = set()  # (sender, receiver)
        self._changed: asyncio.Condition | None = None
        self._servers: dict[str, asyncio.AbstractServer] = {}
        self._tasks: set[asyncio.Task] = set()  # one per proxied connection
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-net", daemon=True)
        self._thread.start()
        self._call(self._init())
        self.connections = 0

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _init(self) -> None:
        self._changed = asyncio.Condition()

    # -- control (called from the chaos schedule's thread) --------------------------------

    def front(self, name: str, upstream: Callable[[], str | None]) -> str:
        """Open a front for node `name` forwarding to upstream() (its current listen address,
        looked up per connection: a restarted node listens on a new port); returns its address."""
        return self._call(self._open_front(name, upstream))

    def cut(self, rules: set[tuple[str, str]]) -> None:
        self._call(self._set(self.blocked | rules))

    def heal(self, rules: set[tuple[str, str]] | None = None) -> None:
        self._call(self._set(set() if rules is None else self.blocked - rules))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CALL_TIMEOUT_S)

    # -- the event loop's side ---------------------------------------------------------------

    async def _set(self, rules: set[tuple[str, str]]) -> None:
        async with self._changed:
            self.blocked = rules
            self._changed.notify_all()
        log.info("partition rules", extra={"blocked": sorted(f"{a}->{b}" for a, b in rules)})

    async def _close(self) -> None:
        for server in self._servers.values():
            server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _open_front(self, name: str, upstream: Callable[[], str | None]) -> str:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            self._tasks.add(task)
            try:
                await self._serve(name, upstream, reader, writer)
            finally:
                self._tasks.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self._servers[name] = server
        host, port = server.sockets[0].getsockname()[:2]
        return f"{host}:{port}"

    async def _serve(self, node: str, upstream, c_reader, c_writer) -> None:
        self.connections += 1
        peer_port = c_writer.get_extra_info("peername")[1]
        front_port = c_writer.get_extra_info("sockname")[1]
        client = await asyncio.to_thread(owner_of, peer_port, front_port, self.processes())
        # A node registers in etcd a moment before it says where it listens: wait for that.
        deadline = asyncio.get_running_loop().time() + CONNECT_TIMEOUT_S
        while (address := upstream()) is None and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        if address is None:
            c_writer.close()
            return
        host, port = address.rsplit(":", 1)
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT_S
            )
        except (TimeoutError, OSError):
            c_writer.close()  # the node is down: the client sees a refused/closed connection
            return
        await asyncio.gather(
            self._pump(c_reader, u_writer, client, node),
            self._pump(u_reader, c_writer, node, client),
            return_exceptions=True,
        )

    async def _pump(self, reader, writer, sender: str | None, receiver: str | None) -> None:
        try:
            while True:
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    break
                if sender is not None and receiver is not None:
                    async with self._changed:
                        await self._changed.wait_for(lambda: (sender, receiver) not in self.blocked)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def partition_rules(node: str, others: list[str], direction: str) -> set[tuple[str, str]]:
    """Rules cutting `node` off from `others`: "both" ways, "in" (nothing reaches the node from
    them; its own messages get through) or "out" (nothing it sends reaches them)."""
    if direction not in ("both", "in", "out"):
        raise ValueError(f"direction must be both, in or out, not {direction!r}")
    rules: set[tuple[str, str]] = set()
    for o in others:
        if direction in ("both", "in"):
            rules.add((o, node))
        if direction in ("both", "out"):
            rules.add((node, o))
    return rules
