"""Diagnostics behind docs/BENCHMARKS.md, "The front door: HTTP gateway and auth (issue 13)":
where an HTTP search and an authenticated call spend their time, piece by piece. A benchmark,
not a test: nothing is asserted, and some parts reach into the gateway's internals on purpose.

    python -m quartz_cluster.bench.frontdoor nodelay       # the gateway's socket: latency per request
    python -m quartz_cluster.bench.frontdoor asgi          # the gateway app's CPU per search, stub servicer
    python -m quartz_cluster.bench.frontdoor auth          # authenticate(); member token + MemberGuard
    python -m quartz_cluster.bench.frontdoor router-share  # router vs nodes CPU per query, gRPC vs HTTP
    python -m quartz_cluster.bench.frontdoor idle          # an idle cluster's CPU, auth on and off
    python -m quartz_cluster.bench.frontdoor meter         # limits + metering per call (issue 14)

nodelay, asgi and auth run in this process (no cluster); router-share and idle start clusters
(pydocs 20k when ../shared/data is there, else generated rows)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

from quartz_cluster.bench import harness
from quartz_cluster.bench.systems import HttpJson, QuartzCluster, QuartzHttp

DIM = 384
SEARCH_PATH = "/v1/collections/bench/search"


def _query() -> np.ndarray:
    v = np.random.default_rng(0).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _reply():
    from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2

    return quartz_pb2.SearchPointsResponse(
        results=[
            node_pb2.SearchResult(
                ids=[f"pydocs-{i}" for i in range(10)], scores=[0.5] * 10, payloads=[b""] * 10
            )
        ],
        shards=quartz_pb2.ShardsAnswered(total=3, answered=3),
    )


class StubService:
    """Stands in for the router's servicer: Search answers at once with 10 hits (the gateway calls
    `type(service).Search.__wrapped__`, the method under @rpc)."""

    def __init__(self) -> None:
        self.reply = _reply()

        async def search(service, request, context):
            return service.reply

        search.__wrapped__ = search
        type(self).Search = search


# --- nodelay: the gateway's listening socket and the latency of a request ----------------------


def nodelay(requests: int = 100) -> dict:
    """The real HttpGateway (gateway/server.py) with the stub servicer on its own event loop:
    whether its accepted connections have TCP_NODELAY, and the latency of sequential searches
    over one keep-alive connection (http.client, which sets TCP_NODELAY on its side)."""
    from quartz_cluster.gateway.server import HttpGateway

    ready, box = threading.Event(), {}

    def serve() -> None:
        async def main() -> None:
            gw = HttpGateway(StubService(), lambda: True, "127.0.0.1:0")
            box["gw"], box["loop"], box["stop"] = gw, asyncio.get_running_loop(), asyncio.Event()
            gw.start()
            ready.set()
            await box["stop"].wait()
            await gw.stop()

        asyncio.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(30)
    gw = box["gw"]
    time.sleep(0.3)
    client = HttpJson(gw.address, None)
    body = {"vector": _query(), "k": 10, "with_payload": False}
    lat = []
    for _ in range(requests):
        t0 = time.perf_counter()
        client.call("POST", SEARCH_PATH, body)
        lat.append((time.perf_counter() - t0) * 1000)
    peer = client.conn.sock.getsockname()
    accepted = [s for s in _server_sockets(gw) if s.getpeername() == peer]
    out = {
        "listening_socket_proto": gw.sock.proto,
        "accepted_tcp_nodelay": bool(accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        if accepted
        else None,
        "requests": requests,
        "p50_ms": statistics.median(lat),
        "min_ms": min(lat),
        "max_ms": max(lat),
    }
    client.close()
    box["loop"].call_soon_threadsafe(box["stop"].set)
    t.join(10)
    return out


def _server_sockets(gw) -> list[socket.socket]:
    """The sockets of the connections uvicorn has open (its protocol objects hold transports)."""
    out = []
    for conn in getattr(gw.server.server_state, "connections", ()):
        transport = getattr(conn, "transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            out.append(sock)
    return out


# --- asgi: the gateway app's CPU per search -----------------------------------------------------


def _asgi_app(async_credentials: bool, without_http_middleware: bool):
    """The gateway app over the stub servicer; optionally with its `credentials` dependency made
    async (FastAPI runs a sync dependency in a worker thread) and without its
    @app.middleware("http") (a Starlette BaseHTTPMiddleware). The swapped dependency stays in
    place until the next call of this function (FastAPI resolves it at the first request)."""
    from quartz_cluster.gateway import app as gw

    dep = gw.Caller.__metadata__[0]
    original = getattr(dep, "_frontdoor_original", dep.dependency)
    object.__setattr__(dep, "_frontdoor_original", original)
    if async_credentials:

        async def credentials(bearer, api_key, request):
            return original(bearer, api_key, request)

        credentials.__annotations__ = {  # objects, not strings: this module has postponed annotations
            "bearer": gw.Annotated[gw.HTTPAuthorizationCredentials | None, gw.Depends(gw._bearer)],
            "api_key": gw.Annotated[str | None, gw.Depends(gw._api_key)],
            "request": gw.Request,
        }
        object.__setattr__(dep, "dependency", credentials)
    else:
        object.__setattr__(dep, "dependency", original)
    app = gw.build_app(StubService(), lambda: True)  # FastAPI reads the dependency when first called
    if without_http_middleware:
        app.user_middleware = [m for m in app.user_middleware if "BaseHTTPMiddleware" not in repr(m)]
    return app


async def _asgi_calls(app, body: bytes, n: int) -> None:
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer qz_" + b"a" * 12 + b"_" + b"b" * 40),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": SEARCH_PATH,
        "raw_path": SEARCH_PATH.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    for _ in range(n):
        status = await _asgi_call(app, scope, body)
        if status != 200:
            raise RuntimeError(f"gateway answered {status}")


async def _asgi_call(app, scope: dict, body: bytes) -> int | None:
    """One request through the ASGI app; its status."""
    sent, status = False, None

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # a client that stays connected

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


def asgi(n: int = 3000, rounds: int = 2) -> dict:
    """CPU (this process, all threads) and wall time per search through the gateway's ASGI app,
    as built and with each of two costs removed; then the pieces of a request on their own."""
    from quartz_cluster.gateway import app as gw
    from quartz_cluster.gateway import models as m
    from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2

    vec = _query()
    body = orjson.dumps(
        {"vector": vec, "k": 10, "ef": 32, "with_payload": False}, option=orjson.OPT_SERIALIZE_NUMPY
    )
    variants = {
        "as built": (False, False),
        "credentials dependency async": (True, False),
        "without the http middleware": (False, True),
        "both": (True, True),
    }
    out: dict = {"request_body_bytes": len(body), "variants": {}}
    for _ in range(rounds):
        for name, flags in variants.items():
            app = _asgi_app(*flags)
            asyncio.run(_asgi_calls(app, body, 200))  # warm-up
            w0, c0 = time.perf_counter(), time.process_time()
            asyncio.run(_asgi_calls(app, body, n))
            wall, cpu = (time.perf_counter() - w0) / n * 1e6, (time.process_time() - c0) / n * 1e6
            out["variants"].setdefault(name, []).append({"wall_us": round(wall), "cpu_us": round(cpu)})
    _asgi_app(False, False)  # the gateway's own dependency back in place

    def per_call_us(fn, reps: int = 5000) -> float:
        t0 = time.process_time()
        for _ in range(reps):
            fn()
        return round((time.process_time() - t0) / reps * 1e6, 1)

    parsed = json.loads(body)
    search = m.Search.model_validate(parsed)
    reply = _reply()
    out_dict = {"shards": gw._shards(reply.shards), "hits": gw._hits(reply.results[0], False)}
    req = quartz_pb2.SearchPointsRequest(
        collection="bench", queries=node_pb2.Vectors(data=vec.tobytes(), count=1, dim=DIM), k=10, ef=32
    )
    wire = req.SerializeToString()
    out["pieces_us"] = {
        "json.loads of the body (stdlib, as Starlette's Request.json)": per_call_us(lambda: json.loads(body)),
        "orjson.loads of the body": per_call_us(lambda: orjson.loads(body)),
        "pydantic Search.model_validate": per_call_us(lambda: m.Search.model_validate(parsed)),
        "_vectors: floats -> float32 bytes": per_call_us(lambda: gw._vectors([search.vector], "vector")),
        "reply dict (_hits, _shards)": per_call_us(
            lambda: {"shards": gw._shards(reply.shards), "hits": gw._hits(reply.results[0], False)}
        ),
        "SearchResult validate + dump (response_model)": per_call_us(
            lambda: m.SearchResult.model_validate(out_dict).model_dump(exclude_none=True)
        ),
        "gRPC path: SearchPointsRequest.FromString": per_call_us(
            lambda: quartz_pb2.SearchPointsRequest.FromString(wire)
        ),
        "gRPC path: SearchPointsResponse.SerializeToString": per_call_us(reply.SerializeToString),
    }
    out["grpc_request_bytes"] = len(wire)
    return out


# --- auth: what a key and a member token cost per call -------------------------------------------


def auth(calls: int = 1000, rounds: int = 30) -> dict:
    """Authenticator.authenticate on a valid key (parse, HMAC-SHA256, view lookups); and a
    grpc.aio unary call (1.6 KB in, 170 B out, client and server in this process) with and
    without the member token (MemberIdentity metadata, MemberGuard interceptor): CPU per call
    of this process (client and server), in alternating batches."""
    import grpc

    from quartz_cluster.auth import keys
    from quartz_cluster.auth.authenticator import Authenticator
    from quartz_cluster.auth.cluster import ClusterCredentials, MemberIdentity
    from quartz_cluster.coordinator.reconcile import ClusterView
    from quartz_cluster.meta import schema
    from quartz_cluster.rpc.guard import MemberGuard

    creds = ClusterCredentials(secrets.token_bytes(32))
    key_id, secret, key = keys.new_key()
    view = ClusterView()
    view.keys[key_id] = schema.KeyRecord(
        id=key_id, tenant="default", role="admin", hash=keys.digest(creds.secret, key_id, secret)
    )
    view.tenants["default"] = schema.TenantRecord(name="default")
    authenticator = Authenticator(creds, lambda: view)
    metadata = [("authorization", f"Bearer {key}"), ("user-agent", "grpc-python")]
    authenticator.authenticate(metadata)
    t0 = time.process_time()
    for _ in range(20_000):
        authenticator.authenticate(metadata)
    out: dict = {"authenticate_us": round((time.process_time() - t0) / 20_000 * 1e6, 1), "rounds": []}

    payload = b"x" * 1600

    async def ping(request, context):
        return request[:170]

    async def serve(guarded: bool):
        handler = grpc.method_handlers_generic_handler(
            "bench.E", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
        )
        server = grpc.aio.server(interceptors=[MemberGuard(creds)] if guarded else None)
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")

    async def measure() -> list[dict]:
        """Both servers up at once; batches of calls alternate between them, so that the drift
        of a shared machine falls on both alike."""
        identity = MemberIdentity(creds, "r1")
        (plain_server, plain_ch), (guarded_server, guarded_ch) = await serve(False), await serve(True)
        plain, guarded = plain_ch.unary_unary("/bench.E/Ping"), guarded_ch.unary_unary("/bench.E/Ping")

        async def batch(call, with_token: bool, n: int) -> float:
            t0 = time.process_time()
            for _ in range(n):
                await call(payload, metadata=identity.metadata() if with_token else None)
            return (time.process_time() - t0) / n * 1e6

        try:
            await batch(plain, False, 300)
            await batch(guarded, True, 300)
            rows = []
            for _ in range(rounds):
                a = await batch(plain, False, calls)
                b = await batch(guarded, True, calls)
                rows.append({"plain_us": round(a), "member_token_us": round(b)})
            return rows
        finally:
            await plain_ch.close()
            await guarded_ch.close()
            await plain_server.stop(None)
            await guarded_server.stop(None)

    out["rounds"] = asyncio.run(measure())
    extra = sorted(r["member_token_us"] - r["plain_us"] for r in out["rounds"])
    out["member_token_extra_us"] = {
        "median": statistics.median(extra),
        "quartiles": [extra[len(extra) // 4], extra[(3 * len(extra)) // 4]],
    }
    return out


# --- cluster-level: router vs nodes, idle --------------------------------------------------------


def _dataset(rows: int):
    from quartz_cluster.datasets import generate_clustered, load_pydocs, shared_data_dir

    data = shared_data_dir()
    if data is not None:
        return load_pydocs(data, rows=rows, with_text=False)
    return generate_clustered(rows, dim=DIM, n_queries=500, seed=3)


def router_share(rows: int = 20_000, clients: int = 8, duration_s: float = 15.0, rounds: int = 2) -> list:
    """quartz-cluster and quartz-http alternately (fresh cluster each, ef 16): the router's and
    the nodes' CPU per query (from /proc) over a closed loop, and how many cores each used."""
    ds = _dataset(rows)
    out = []
    for _ in range(rounds):
        for cls in (QuartzCluster, QuartzHttp):
            system, wd = cls(), Path(tempfile.mkdtemp(prefix="quartz-frontdoor-"))
            try:
                system.start(wd, ds.dim, ds.metric, 16, 200)
                system.ingest(ds.ids, ds.base, ds.payloads, 1000)
                system.set_ef(16)
                router = [p.pid for p in system.cluster.routers]
                nodes = [p.pid for p in system.cluster.nodes]
                r0, n0, t0 = harness.cpu_s(router), harness.cpu_s(nodes), time.perf_counter()
                r = harness.closed_loop(system, ds.queries, clients, duration_s)
                r1, n1, wall = harness.cpu_s(router), harness.cpu_s(nodes), time.perf_counter() - t0
                row = {
                    "system": cls.name,
                    "clients": clients,
                    "qps": round(r["qps"]),
                    "router_ms_per_query": round((r1 - r0) * 1000 / r["calls"], 2),
                    "router_cores": round((r1 - r0) / wall, 2),
                    "nodes_ms_per_query": round((n1 - n0) * 1000 / r["calls"], 2),
                    "nodes_cores": round((n1 - n0) / wall, 2),
                    "other_cpu_cores": round(r["other_cpu_cores"], 2),
                }
                print(json.dumps(row), flush=True)
                out.append(row)
            finally:
                system.stop()
                shutil.rmtree(wd, ignore_errors=True)
    return out


def idle(rows: int = 2000, settle_s: float = 10.0, measure_s: float = 30.0, rounds: int = 2) -> list:
    """An idle cluster's CPU per second (every process under this one), auth on and off."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    ids = [str(i) for i in range(rows)]
    out = []
    for _ in range(rounds):
        for auth_on in (True, False):
            system, wd = QuartzCluster(auth=auth_on), Path(tempfile.mkdtemp(prefix="quartz-frontdoor-"))
            try:
                system.start(wd, DIM, "cosine", 16, 200)
                system.ingest(ids, vectors, [{}] * rows, 1000)
                time.sleep(settle_s)
                pids = harness.descendants(os.getpid())
                c0, t0 = harness.cpu_s(pids), time.perf_counter()
                time.sleep(measure_s)
                c1, wall = harness.cpu_s(pids), time.perf_counter() - t0
                row = {"auth": auth_on, "idle_cpu_ms_per_s": round((c1 - c0) / wall * 1000, 1)}
                print(json.dumps(row), flush=True)
                out.append(row)
            finally:
                system.stop()
                shutil.rmtree(wd, ignore_errors=True)
    return out


def meter(calls: int = 2000, rounds: int = 10) -> dict:
    """What the front door adds to a call after authentication (router/frontdoor.py), in this
    process: `admit` (the tenant's read bucket, held locally: no etcd round trip, as on the hot
    path; a paid tenant has no quotas) and `finish` (the meter record and query entry, encoded and
    appended to a real journal with one write(2)), for a one-query search. A real etcd (for the
    limiter's grants and the shipper's cursor) and a real journal on disk; the shipper runs
    alongside as in a router."""
    from quartz_cluster.auth.access import Principal
    from quartz_cluster.coordinator.reconcile import ClusterView
    from quartz_cluster.meta.schema import TenantRecord
    from quartz_cluster.meta.store import EtcdStore
    from quartz_cluster.metering.journal import Journal
    from quartz_cluster.metering.shipper import Shipper
    from quartz_cluster.procs import EtcdProcess
    from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2
    from quartz_cluster.router.frontdoor import FrontDoor
    from quartz_cluster.router.ratelimit import SharedLimiter

    work = Path(tempfile.mkdtemp(prefix="quartz-meter-"))
    etcd = EtcdProcess("e1", work / "etcd", work / "etcd.log").start()
    # a limit the loop cannot reach: the bucket is taken from on every call, never refuses
    view = ClusterView(
        tenants={"t": TenantRecord("t", plan="paid", rate_limits=("read=1000000/s:burst=1000000",))}
    )
    principal = Principal("k1", "t", "read-write", frozenset())
    req = quartz_pb2.SearchPointsRequest(
        collection="docs", queries=node_pb2.Vectors(data=b"\0" * 4 * DIM, count=1, dim=DIM), k=10
    )
    reply = quartz_pb2.SearchPointsResponse()

    class Context:
        def peer(self) -> str:
            return "ipv4:127.0.0.1:5000"

    async def run() -> dict:
        store = EtcdStore(etcd.endpoint)
        shipper = Shipper(Journal(work / "journal"), EtcdStore(etcd.endpoint), "bench")
        stop = asyncio.Event()
        task = asyncio.create_task(shipper.run(stop))
        door = FrontDoor(lambda: view, SharedLimiter(store), shipper, None, None)
        md = (("quartz-request-id", "x" * 32), ("quartz-attempt", "1"))
        ctx = Context()
        per_call_us = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for _ in range(calls):
                rid, metered, ns = await door.admit(principal, "Search", req, md)
                door.finish(principal, "Search", req, reply, None, ctx, md, time.time(), rid, metered, ns)
            per_call_us.append((time.perf_counter() - t0) / calls * 1e6)
        stop.set()
        await task
        await shipper.flush()
        return {
            "admit_and_finish_us_per_call_median": round(statistics.median(per_call_us), 2),
            "quartiles_us": [round(q, 2) for q in statistics.quantiles(per_call_us, n=4)],
            "calls_shipped": shipper.shipped,
        }

    try:
        return asyncio.run(run())
    finally:
        etcd.kill()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["nodelay", "asgi", "auth", "router-share", "idle", "meter"])
    args = p.parse_args(argv)
    print(f"load average {os.getloadavg()[0]:.2f} at start", file=sys.stderr)
    fns = {"nodelay": nodelay, "asgi": asgi, "auth": auth, "router-share": router_share, "idle": idle}
    fn = {**fns, "meter": meter}[args.what]
    print(json.dumps(fn(), indent=1))
    print(f"load average {os.getloadavg()[0]:.2f} at end", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
