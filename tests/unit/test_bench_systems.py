"""`quartz bench`'s systems without a cluster: the HTTP client of quartz-http, the auth option of
the cluster systems, and what `--systems` accepts."""

from __future__ import annotations

import http.server
import threading

import numpy as np
import orjson
import pytest

from quartz_cluster.bench import cli, harness
from quartz_cluster.bench.peers import PEERS
from quartz_cluster.bench.systems import SYSTEMS, HttpJson, QuartzCluster, QuartzHttp


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the gateway's uvicorn
    seen: list = []
    close_after_next = False

    def do_POST(self):
        body = orjson.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append((self.path, self.headers.get("authorization"), body))
        if self.path == "/bad":
            out, status = b'{"detail": "k: too large"}', 400
        else:
            out, status = orjson.dumps({"hits": [{"id": "a", "score": 1.0}]}), 200
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        if type(self).close_after_next:  # as a server does when a keep-alive connection idles out
            type(self).close_after_next = False
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.seen = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_http_json_sends_key_and_numpy_vectors_on_one_connection(server):
    client = HttpJson(server, "qz_k_s")
    v = np.array([0.5, -1.25], dtype=np.float32)
    assert client.call("POST", "/s", {"vector": v})["hits"][0]["id"] == "a"
    sock = client.conn.sock
    client.call("POST", "/s", {"vector": v})
    assert client.conn.sock is sock  # kept alive, not reconnected
    assert _Handler.seen[0] == ("/s", "Bearer qz_k_s", {"vector": [0.5, -1.25]})
    client.close()


def test_http_json_reconnects_once_when_the_server_closed_the_connection(server):
    client = HttpJson(server, None)
    _Handler.close_after_next = True
    client.call("POST", "/s", {})
    assert client.call("POST", "/s", {})["hits"]  # the server had closed it: a new connection
    assert [key for _, key, _ in _Handler.seen] == [None, None]  # no key without auth
    client.close()


def test_http_json_raises_on_an_error_status(server):
    client = HttpJson(server, None)
    with pytest.raises(RuntimeError, match="HTTP 400"):
        client.call("POST", "/bad", {})
    client.close()


def test_cluster_systems_take_auth():
    assert QuartzCluster().auth and not QuartzCluster(auth=False).auth
    assert "auth off" in QuartzCluster(auth=False).notes
    assert "auth off" in QuartzHttp(auth=False).notes and "auth off" not in QuartzHttp().notes
    assert harness.BenchConfig().auth


def test_bench_lists_every_system_it_accepts():
    import argparse

    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    systems_help = next(a.help for a in p._actions if a.dest == "systems")
    for name in [*SYSTEMS, *PEERS]:
        assert name in systems_help
    assert harness.load_system("quartz-http") is QuartzHttp
