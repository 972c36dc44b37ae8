"""The chaos harness's fault-injecting network: held bytes, one-way cuts, and healing, over real
loopback sockets (the test process plays the client, a thread an echo server)."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from quartz_cluster.chaos.netproxy import Network, owner_of, partition_rules

pytestmark = pytest.mark.integration
QUIET_S = 0.5  # how long "nothing arrives" is watched; a slow machine can only make it pass later


def test_partition_rules():
    assert partition_rules("n1", ["n2", "r1"], "both") == {
        ("n1", "n2"),
        ("n2", "n1"),
        ("n1", "r1"),
        ("r1", "n1"),
    }
    assert partition_rules("n1", ["n2"], "in") == {("n2", "n1")}
    assert partition_rules("n1", ["n2"], "out") == {("n1", "n2")}
    with pytest.raises(ValueError, match="direction"):
        partition_rules("n1", ["n2"], "sideways")


class Echo:
    """Echoes every byte back and remembers what it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received = bytearray()
        self.got = threading.Condition()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        while data := conn.recv(4096):
            with self.got:
                self.received += data
                self.got.notify_all()
            conn.sendall(data)

    def wait_received(self, n: int, timeout_s: float = 10.0) -> bytes:
        with self.got:
            assert self.got.wait_for(lambda: len(self.received) >= n, timeout_s)
            return bytes(self.received)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        out += sock.recv(n - len(out))
    return out


def nothing_arrives(sock: socket.socket) -> bool:
    sock.settimeout(QUIET_S)
    try:
        sock.recv(1)  # a byte, or b"" for a closed connection: either way something arrived
        return False
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10.0)


def test_owner_of_finds_the_process_holding_a_socket():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    local = client.getsockname()[1]
    assert owner_of(local, server.getsockname()[1], {os.getpid(): "me"}) == "me"
    assert owner_of(local, server.getsockname()[1], {1: "init"}) is None
    client.close()
    server.close()


def test_cut_holds_bytes_both_ways_and_one_way_then_heal_delivers_them():
    echo = Echo()
    net = Network(lambda: {os.getpid(): "me"})
    try:
        front = net.front("n1", lambda: echo.address)
        host, port = front.rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10.0)
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"a"

        # both ways: the request is held at the front, nothing reaches the node
        rules = partition_rules("n1", ["me"], "both")
        net.cut(rules)
        sock.sendall(b"b")
        assert nothing_arrives(sock)
        assert echo.received == b"a"
        net.heal(rules)
        assert recv_exactly(sock, 1) == b"b"  # held, not dropped: delivered after the heal

        # "in" for the client = the node's replies are cut: the request is applied, no answer
        rules = partition_rules("me", ["n1"], "in")
        net.cut(rules)
        sock.sendall(b"c")
        assert echo.wait_received(3) == b"abc"
        assert nothing_arrives(sock)
        net.heal(rules)
        assert recv_exactly(sock, 1) == b"c"

        # an unrelated rule changes nothing for this connection
        net.cut(partition_rules("n1", ["r1"], "both"))
        sock.sendall(b"d")
        assert recv_exactly(sock, 1) == b"d"
        sock.close()
    finally:
        net.close()
