"""The HTTP/JSON gateway: every public operation under /v1, served in the router process (no
extra network hop). Each route turns its JSON body into the public gRPC request and calls the
router's own servicer method — the same authentication, authorization, validation and fan-out
as gRPC — then turns the reply into JSON. Errors are RFC 9457 problem details, their HTTP status
from the one table of rpc/status.py. OpenAPI 3.1 at /openapi.json is generated from the routes
and gateway/models.py; /docs serves Swagger UI from local assets (no CDN)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi import Path as FastApiPath
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles

from quartz_cluster import __version__, errors, limits
from quartz_cluster.client import _common as sdk
from quartz_cluster.gateway import models as m
from quartz_cluster.gateway.dashboard import STATIC_DIR as DASHBOARD_DIR
from quartz_cluster.gateway.dashboard import cluster as dashboard_cluster
from quartz_cluster.gateway.dashboard import guard as dashboard_guard
from quartz_cluster.gateway.dashboard import latency as dashboard_latency
from quartz_cluster.proto.quartz.v1 import node_pb2, quartz_pb2
from quartz_cluster.rpc.status import status_message, status_of

log = logging.getLogger("quartz.http")
PROBLEM = "application/problem+json"
PEER = ":peer"  # the client's address, passed from credentials() to CallContext
BODY_BYTES_MAX = limits.MESSAGE_BYTES_MAX
ERROR_STATUSES = (400, 401, 403, 404, 409, 412, 413, 429, 500, 503)
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_CODES = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "RESOURCE_EXHAUSTED"}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": m.Problem, "content": {PROBLEM: {}}, "description": _TITLES[s]} for s in ERROR_STATUSES
}


def problem(status: int, detail: str, code: str | None = None, headers: dict | None = None) -> Response:
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": status_message(detail),
        "code": code or _CODES.get(status, "INVALID_ARGUMENT" if status < 500 else "INTERNAL"),
    }
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM, headers=headers)


class CallContext:
    """What a servicer method reads from its gRPC context, for a call that came over HTTP."""

    def __init__(self, metadata: list[tuple[str, str]], timeout_s: float, peer: str = "") -> None:
        self._metadata, self._timeout_s, self._peer = metadata, timeout_s, peer

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata

    def time_remaining(self) -> float:
        return self._timeout_s


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer qz_<key id>_<secret>")
_api_key = APIKeyHeader(name="api-key", auto_error=False, description="api-key: qz_<key id>_<secret>")


async def credentials(  # async: a plain def would cost a thread switch per request
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
    request: Request,
) -> list[tuple[str, str]]:
    """The caller's key as the metadata the servicer authenticates (both schemes in the spec, so
    /docs can send either)."""
    headers = request.headers
    out = []
    header = headers.get("authorization")
    if header is not None:
        out.append(("authorization", header))
    elif api_key is not None:
        out.append(("api-key", api_key))
    # the request id of a call (the same on each retry) for exactly-once metering; its attempt
    rid = headers.get("idempotency-key") or headers.get("x-request-id")
    if rid:
        out.append(("quartz-request-id", rid))
    if headers.get("quartz-attempt"):
        out.append(("quartz-attempt", headers["quartz-attempt"]))
    if headers.get("user-agent"):
        out.append(("user-agent", headers["user-agent"]))
    if request.client is not None:
        out.append((PEER, f"ipv4:{request.client.host}:{request.client.port}"))
    return out


Caller = Annotated[list[tuple[str, str]], Depends(credentials)]
CollectionName = Annotated[str, FastApiPath(pattern=m.NAME_REGEX, description="a collection name")]
KeyId = Annotated[str, FastApiPath(pattern=m.NAME_REGEX, description="the key id (public part of the key)")]
BackupId = Annotated[str, FastApiPath(max_length=128, description="a backup id (from its job or a listing)")]
ScheduleName = Annotated[str, FastApiPath(pattern=m.NAME_REGEX, description="a backup schedule's name")]
RepositoryQuery = Annotated[
    str, Query(max_length=m.URL_CHARS_MAX, description="file:///DIR or s3://BUCKET/PREFIX")
]


def _vectors(rows: list[list[float]], field: str) -> node_pb2.Vectors:
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise errors.InvalidArgument("every vector must have the same number of values", field)
    try:
        arr = np.asarray(rows, dtype="<f4")
    except (TypeError, ValueError, OverflowError) as exc:
        raise errors.InvalidArgument(f"must be arrays of numbers ({exc})", field) from None
    dim = arr.shape[1] if arr.ndim == 2 else 0
    return node_pb2.Vectors(data=arr.tobytes(), count=len(rows), dim=dim)


def _shards(s: quartz_pb2.ShardsAnswered) -> dict:
    return {
        "total": s.total,
        "answered": s.answered,
        "failed": [{"shard": f.shard, "code": f.code, "message": f.message} for f in s.failed],
    }


def _fields(obj) -> dict:
    return {f: getattr(obj, f) for f in obj.__slots__}


def _collection(info: quartz_pb2.CollectionInfo) -> dict:
    """The SDK's CollectionInfo (the same fields as models.CollectionInfo) as JSON."""
    return _fields(sdk.parse_collection(info))


def _key(info: quartz_pb2.ApiKeyInfo) -> dict:
    return _fields(sdk.parse_key(info))


def _ids(ids: list[str | int], field: str) -> list[str]:
    return sdk.str_ids(ids, field)


def _json(value: Any, field: str) -> bytes:
    """JSON bytes of a decoded body part; InvalidArgument for what JSON on the wire may hold but
    the stored form cannot (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise errors.InvalidArgument(f"cannot be stored as JSON ({exc})", field) from None


def _payload(p: dict | None, field: str) -> bytes:
    return _json(p, field) if p else b""


def _point(p: node_pb2.Point, with_vectors: bool, with_payload: bool) -> dict:
    return {
        "id": p.id,
        "vector": np.frombuffer(p.vector, dtype="<f4").tolist() if with_vectors else None,
        "payload": (orjson.loads(p.payload) if p.payload else {}) if with_payload else None,
    }


def _filter(flt: dict | None) -> str:
    return _json(flt, "filter").decode() if flt is not None else ""


def _hits(result: node_pb2.SearchResult, with_payload: bool) -> list[dict]:
    return [
        {
            "id": pid,
            "score": score,
            "payload": (orjson.loads(result.payloads[i]) if result.payloads[i] else {})
            if with_payload
            else None,
        }
        for i, (pid, score) in enumerate(zip(result.ids, result.scores, strict=True))
    ]


# gRPC request field names in error messages -> the JSON body's
UPSERT_FIELDS = (
    (r"^upserts\.vectors\[(\d+)\]", r"points[\1].vector"),
    (r"^upserts\.vectors", "points[].vector"),
    (r"^upserts\.ids\[(\d+)\]", r"points[\1].id"),
    (r"^upserts\.payloads\[(\d+)\]", r"points[\1].payload"),
)
SEARCH_FIELDS = ((r"^queries\[(\d+)\]", r"vectors[\1]"), (r"^queries", "vectors"))
VECTOR_FIELDS = ((r"^queries(\[0\])?", "vector"),)
_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def field_path(loc) -> str:
    """pydantic's error location as the field path the rest of the API uses: points[1].vector
    (the "body" / "path" / "query" root and union-member tags such as "constrained-str" left out)."""
    out = ""
    for part in list(loc)[1:] if loc and loc[0] in ("body", "path", "query", "header") else loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _FIELD_RE.fullmatch(str(part)) and part not in ("str", "int", "float", "bool"):
            out += f".{part}" if out else str(part)
    return out


def rate_limit_headers(exc) -> dict[str, str]:
    """Retry-After (whole seconds, rounded up) and the IETF RateLimit-Policy / RateLimit fields
    (draft-ietf-httpapi-ratelimit-headers: policy "<class>" with quota q per window w; r
    remaining, t seconds until it allows a call again)."""
    import math

    retry_s = max(1, math.ceil(exc.retry_after_s))
    name = exc.op_class
    limit = exc.limit
    window_s = max(1, round(limit.burst / limit.per_s)) if limit.per_s else 1
    return {
        "Retry-After": str(retry_s),
        "RateLimit-Policy": f'"{name}";q={int(limit.burst)};w={window_s}',
        "RateLimit": f'"{name}";r={int(exc.remaining)};t={retry_s}',
    }


class NDJSON(StreamingResponse):
    """Newline-delimited JSON, streamed: one JSON object a line."""

    media_type = "application/x-ndjson"


# the request id of a call: one export makes a call per page, each with an id of its own
CALL_ID_HEADERS = ("quartz-request-id", "quartz-attempt")
EXPORT_RESPONSE = {
    "description": 'NDJSON: one line per point, {"id": ..., "vector": [float32 values], "payload": '
    "{...}}, in id order. A stream that breaks off (a shard failed midway) ends without its last "
    "chunk: the client sees an incomplete response, never a silently shorter export.",
    "content": {NDJSON.media_type: {"schema": {"type": "string"}}},
}


class JSON(JSONResponse):
    """orjson. The hot routes (search, get, upsert) return one directly: their replies are built
    to the response model already, and FastAPI would otherwise validate and re-serialize them."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


# The dashboard's pages and files: its own origin only (no CDN, no inline script or style), never
# framed, not sniffed. Its script calls /v1 on the same origin with the key the user signed in with.
DASHBOARD_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class DashboardFiles(StaticFiles):
    """The dashboard's static files, with its security headers."""

    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(DASHBOARD_HEADERS)
        return response


def build_app(service, ready: Callable[[], bool]) -> FastAPI:
    """The gateway over a router's QuartzService. `ready`: whether the router can serve (its
    shard map is loaded)."""
    from swagger_ui_bundle import swagger_ui_path

    app = FastAPI(
        title="QuartzDB",
        version=__version__,
        description="A distributed vector database. Every call needs an API key "
        "(`Authorization: Bearer qz_...` or `api-key: qz_...`); errors are RFC 9457 problem details.",
        docs_url=None,
        redoc_url=None,
        default_response_class=JSON,
        max_body_size=BODY_BYTES_MAX,  # enforced while reading, chunked bodies too: 413
    )
    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="swagger-assets")
    app.mount("/dashboard/static", DashboardFiles(directory=DASHBOARD_DIR), name="dashboard-assets")
    timeout_s = limits.ROUTER_CALL_TIMEOUT_S

    async def call(method: str, request, caller: list[tuple[str, str]], fields=()):
        """The servicer's method (under @rpc: authentication, then the method). `fields`:
        (pattern, replacement) pairs that rename the gRPC request's field names at the start of
        an error message to the JSON body's (upserts.vectors[3] -> points[3].vector)."""
        fn = getattr(type(service), method).__wrapped__
        peer = next((v for k, v in caller if k == PEER), "")
        try:
            return await fn(service, request, CallContext(caller, timeout_s, peer))
        except errors.QuartzError as exc:
            text = str(exc)
            for pattern, replacement in fields:
                renamed = re.sub(pattern, replacement, text, count=1)
                if renamed != text:
                    raise type(exc)(renamed) from None
            raise

    @app.exception_handler(errors.QuartzError)
    async def on_domain_error(request: Request, exc: errors.QuartzError) -> Response:
        status = status_of(exc)[1]
        headers = {"WWW-Authenticate": 'Bearer realm="quartz"'} if status == 401 else None
        retry_after_s = getattr(exc, "retry_after_s", None)
        if retry_after_s is not None and status == 429:
            headers = rate_limit_headers(exc)
        return problem(status, str(exc), exc.code, headers)

    @app.exception_handler(RequestValidationError)
    async def on_bad_body(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        path = field_path(first.get("loc", ()))
        message = str(first.get("msg", "invalid request"))
        return problem(400, f"{path}: {message}" if path else message, "INVALID_ARGUMENT")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        headers = exc.headers
        if exc.status_code == 405:  # Allow: every method some route serves at this path
            allowed = {
                method
                for route in app.router.routes
                if route.matches(request.scope)[0] == Match.PARTIAL
                for method in getattr(route, "methods", None) or ()
            }
            headers = {"Allow": ", ".join(sorted(allowed))}
        return problem(exc.status_code, str(exc.detail), None, headers)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> Response:
        error_id = uuid.uuid4().hex[:12]
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path, "error_id": error_id})
        return problem(500, f"internal error (error id {error_id}; see the server log)", "INTERNAL")

    probes = APIRouter(tags=["health"])

    @probes.get("/healthz", response_model=m.Health)
    async def healthz():
        """The process is up."""
        return {"status": "ok"}

    @probes.get("/readyz", response_model=m.Health, responses={503: PROBLEM_RESPONSES[503]})
    async def readyz():
        """The router has its shard map and can route requests."""
        if not ready():
            return problem(503, "the router has not loaded the shard map yet", "UNAVAILABLE")
        return {"status": "ready"}

    @probes.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics of this router (open, like the probes: no tenant data in them)."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @probes.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="QuartzDB API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": True, "tryItOutEnabled": True},
        )

    @probes.get("/dashboard", include_in_schema=False)
    async def dashboard() -> Response:
        """The admin dashboard (docs/dashboard.md): a static page; its data comes from /v1 with
        the key the user signs in with."""
        page = (DASHBOARD_DIR / "index.html").read_bytes()
        return Response(page, media_type="text/html; charset=utf-8", headers=DASHBOARD_HEADERS)

    v1 = APIRouter(prefix="/v1", responses=PROBLEM_RESPONSES)

    @v1.post("/collections", response_model=m.CollectionInfo, status_code=201, tags=["collections"])
    async def create_collection(body: m.CreateCollection, caller: Caller):
        req = sdk.create_collection_request(
            body.name,
            body.dim,
            body.metric,
            body.shards,
            body.replication_factor,
            body.m,
            body.ef_construction,
            body.ef,
            body.wait,
        )
        return _collection(await call("CreateCollection", req, caller))

    @v1.get("/collections", response_model=m.CollectionList, tags=["collections"])
    async def list_collections(caller: Caller):
        resp = await call("ListCollections", quartz_pb2.ListCollectionsRequest(), caller)
        return {"collections": [_collection(c) for c in resp.collections]}

    @v1.get("/collections/{name}", response_model=m.CollectionInfo, tags=["collections"])
    async def describe_collection(name: CollectionName, caller: Caller):
        return _collection(
            await call("DescribeCollection", quartz_pb2.DescribeCollectionRequest(name=name), caller)
        )

    @v1.delete("/collections/{name}", response_model=m.Dropped, tags=["collections"])
    async def drop_collection(name: CollectionName, caller: Caller):
        resp = await call("DropCollection", quartz_pb2.DropCollectionRequest(name=name), caller)
        return {"dropped": resp.dropped}

    @v1.put("/collections/{name}/points", response_model=m.WriteResult, tags=["points"])
    async def upsert(name: CollectionName, body: m.Upsert, caller: Caller):
        """Insert or replace points. The reply lists the points not written (`errors`); a bad
        point refuses the whole batch (400) and nothing is written."""
        req = quartz_pb2.UpsertRequest(
            collection=name,
            points=node_pb2.PointBatch(
                ids=_ids([p.id for p in body.points], "points[].id"),
                vectors=_vectors([p.vector for p in body.points], "points[].vector"),
                payloads=[_payload(p.payload, f"points[{i}].payload") for i, p in enumerate(body.points)],
            ),
            write_consistency=sdk.WRITE_CONSISTENCY[body.write_consistency],
        )
        return JSON(_write_result(await call("Upsert", req, caller, UPSERT_FIELDS)))

    @v1.post("/collections/{name}/points/delete", response_model=m.WriteResult, tags=["points"])
    async def delete_points(name: CollectionName, body: m.DeletePoints, caller: Caller):
        """`ids`, or every point matching `filter` (exactly one of the two)."""
        req = quartz_pb2.DeleteRequest(
            collection=name,
            ids=_ids(body.ids, "ids") if body.ids is not None else [],
            filter=_filter(body.filter),
            write_consistency=sdk.WRITE_CONSISTENCY[body.write_consistency],
        )
        return _write_result(await call("Delete", req, caller))

    @v1.post("/collections/{name}/points/get", response_model=m.PointsOut, tags=["points"])
    async def get_points(name: CollectionName, body: m.GetPoints, caller: Caller):
        req = quartz_pb2.GetPointsRequest(
            collection=name,
            ids=_ids(body.ids, "ids"),
            with_vectors=body.with_vectors,
            with_payload=body.with_payload,
            consistency=sdk.READ_CONSISTENCY[body.consistency],
            allow_partial=body.allow_partial,
        )
        resp = await call("Get", req, caller)
        points = [_point(p, body.with_vectors, body.with_payload) for p in resp.points]
        return JSON({"points": points, "shards": _shards(resp.shards)})

    @v1.post("/collections/{name}/points/scroll", response_model=m.ScrollResult, tags=["points"])
    async def scroll(name: CollectionName, body: m.ScrollPoints, caller: Caller):
        """A page of the points matching `filter`, in id order from `offset` (inclusive); pass
        `next_offset` as the next request's offset until it is null."""
        req = quartz_pb2.ScrollPointsRequest(
            collection=name,
            filter=_filter(body.filter),
            limit=body.limit,
            offset=sdk.offset_id(body.offset),
            with_vectors=body.with_vectors,
            with_payload=body.with_payload,
            consistency=sdk.READ_CONSISTENCY[body.consistency],
        )
        resp = await call("Scroll", req, caller)
        points = [_point(p, body.with_vectors, body.with_payload) for p in resp.points]
        return JSON(
            {"points": points, "next_offset": resp.next_offset or None, "shards": _shards(resp.shards)}
        )

    @v1.post("/collections/{name}/points/count", response_model=m.CountResult, tags=["points"])
    async def count_points(name: CollectionName, body: m.CountPoints, caller: Caller):
        """The number of points matching `filter` (every point without one)."""
        req = quartz_pb2.CountRequest(
            collection=name, filter=_filter(body.filter), allow_partial=body.allow_partial
        )
        resp = await call("Count", req, caller)
        return {"count": resp.count, "shards": _shards(resp.shards)}

    @v1.get(
        "/collections/{name}/export",
        response_class=NDJSON,
        tags=["points"],
        responses={**PROBLEM_RESPONSES, 200: EXPORT_RESPONSE},
    )
    async def export(
        name: CollectionName,
        caller: Caller,
        filter: Annotated[str | None, Query(description="a JSON filter (as in search)")] = None,
        consistency: m.ReadConsistency = "strong",
        page_size: Annotated[int, Query(ge=1, le=limits.SCROLL_LIMIT_MAX)] = limits.SCROLL_LIMIT_MAX,
    ):
        """Every point (matching `filter`) as NDJSON, streamed a scroll page at a time (memory
        stays one page). Vectors are the float32 values as written, each in the shortest form that
        reads back to the same float32. Each page is a scroll call (metered and rate limited as
        one); a bad request fails before the stream starts (problem+json)."""

        def page(offset: str) -> quartz_pb2.ScrollPointsRequest:
            return quartz_pb2.ScrollPointsRequest(
                collection=name,
                filter=filter or "",
                limit=page_size,
                offset=offset,
                with_vectors=True,
                with_payload=True,
                consistency=sdk.READ_CONSISTENCY[consistency],
            )

        first = await call("Scroll", page(""), caller)
        later = [(k, v) for k, v in caller if k not in CALL_ID_HEADERS]

        async def lines():
            resp = first
            while True:
                yield b"".join(
                    sdk.export_line(
                        p.id,
                        np.frombuffer(p.vector, dtype="<f4"),
                        orjson.loads(p.payload) if p.payload else {},
                    )
                    for p in resp.points
                )
                if not resp.next_offset:
                    return
                try:
                    resp = await call("Scroll", page(resp.next_offset), later)
                except Exception as exc:
                    log.warning("export broke off", extra={"collection": name, "error": str(exc)})
                    raise

        return NDJSON(lines(), headers={"Content-Disposition": f'attachment; filename="{name}.ndjson"'})

    @v1.post("/collections/{name}/search", response_model=m.SearchResult, tags=["points"])
    async def search(name: CollectionName, body: m.Search, caller: Caller):
        """`vector` (one query: the reply has `hits`) or `vectors` (several: `results`, one list
        per query), best first."""
        if (body.vector is None) == (body.vectors is None):
            raise errors.InvalidArgument("give exactly one of vector and vectors", "vector")
        rows = [body.vector] if body.vector is not None else body.vectors
        if not rows:
            raise errors.InvalidArgument("must hold at least one query", "vectors")
        req = quartz_pb2.SearchPointsRequest(
            collection=name,
            queries=_vectors(rows, "vector" if body.vector is not None else "vectors"),
            k=body.k,
            ef=body.ef or 0,
            filter=_json(body.filter, "filter").decode() if body.filter is not None else "",
            with_payload=body.with_payload,
            consistency=sdk.READ_CONSISTENCY[body.consistency],
            allow_partial=body.allow_partial,
        )
        resp = await call("Search", req, caller, SEARCH_FIELDS if body.vectors is not None else VECTOR_FIELDS)
        lists = [_hits(r, body.with_payload) for r in resp.results]
        out: dict[str, Any] = {"shards": _shards(resp.shards)}
        if body.vector is not None:
            out["hits"] = lists[0] if lists else []
        else:
            out["results"] = lists
        return JSON(out)  # built to the model already: skip FastAPI's second pass over it

    @v1.get("/collections/{name}/count", response_model=m.CountResult, tags=["points"])
    async def count(name: CollectionName, caller: Caller, allow_partial: bool = False):
        resp = await call(
            "Count", quartz_pb2.CountRequest(collection=name, allow_partial=allow_partial), caller
        )
        return {"count": resp.count, "shards": _shards(resp.shards)}

    @v1.get("/admin/tenants", response_model=m.TenantList, tags=["admin"])
    async def list_tenants(caller: Caller):
        resp = await call("ListTenants", quartz_pb2.ListTenantsRequest(), caller)
        return {"tenants": [_fields(sdk.parse_tenant(t)) for t in resp.tenants]}

    @v1.post("/admin/tenants", response_model=m.Tenant, status_code=201, tags=["admin"])
    async def create_tenant(body: m.CreateTenant, caller: Caller):
        req = quartz_pb2.CreateTenantRequest(**body.model_dump())
        return _fields(sdk.parse_tenant(await call("CreateTenant", req, caller)))

    @v1.patch("/admin/tenants/{name}", response_model=m.Tenant, tags=["admin"])
    async def update_tenant(
        name: Annotated[str, FastApiPath(pattern=m.NAME_REGEX)], body: m.UpdateTenant, caller: Caller
    ):
        """Change a tenant's plan, billing settings or rate limits (fields left out: unchanged)."""
        given = body.model_dump(exclude_none=True)
        limits_given = given.pop("rate_limits", None)
        req = quartz_pb2.UpdateTenantRequest(
            name=name,
            **given,
            rate_limits=limits_given or [],
            clear_rate_limits=limits_given == [],
        )
        return _fields(sdk.parse_tenant(await call("UpdateTenant", req, caller)))

    @v1.get("/usage", response_model=m.Usage, tags=["usage"])
    async def get_usage(caller: Caller, tenant: str | None = None, month: str | None = None):
        """A tenant's metered usage in a month (UTC; default this month), per day and in all.
        Default tenant: the caller's; another tenant's needs an admin key."""
        return sdk.message_dict(await call("GetUsage", sdk.usage_request(tenant, month), caller))

    @v1.get("/invoices/{month}", response_model=m.Invoice, tags=["usage"])
    async def get_invoice(
        month: Annotated[str, FastApiPath(pattern=r"^[0-9]{4}-[0-9]{2}$")],
        caller: Caller,
        tenant: str | None = None,
    ):
        """The invoice of a month: lines per the plan, allowances deducted, the total."""
        resp = await call("GetInvoice", sdk.invoice_request(tenant, month), caller)
        return JSON(orjson.loads(resp.json))

    @v1.get(
        "/invoices/{month}/html",
        response_class=HTMLResponse,
        tags=["usage"],
        responses={**PROBLEM_RESPONSES, 200: {"content": {"text/html": {}}}},
    )
    async def get_invoice_html(
        month: Annotated[str, FastApiPath(pattern=r"^[0-9]{4}-[0-9]{2}$")],
        caller: Caller,
        tenant: str | None = None,
    ):
        resp = await call("GetInvoice", sdk.invoice_request(tenant, month), caller)
        return HTMLResponse(resp.html)

    @v1.get("/billing/history", response_model=m.BillingHistory, tags=["usage"])
    async def billing_history(caller: Caller, tenant: str | None = None):
        req = quartz_pb2.BillingHistoryRequest(tenant=tenant or "")
        return sdk.message_dict(await call("BillingHistory", req, caller))

    @v1.get("/queries", response_model=m.QueryHistory, tags=["usage"])
    async def query_history(caller: Caller, tenant: str | None = None, limit: int = 100):
        """The latest searches: time, collection, k, filter present, latency, status (never
        vectors, filters or payloads)."""
        req = quartz_pb2.QueryHistoryRequest(tenant=tenant or "", limit=max(0, min(limit, 2**32 - 1)))
        return sdk.message_dict(await call("QueryHistory", req, caller))

    @v1.get("/admin/audit", response_model=m.AuditLog, tags=["admin"])
    async def audit_log(
        caller: Caller,
        tenant: str | None = None,
        since: float | None = None,
        limit: int = 100,
        verb: str | None = None,
    ):
        """The latest audit records (oldest first), hash-chained; Kubernetes audit events."""
        if since is not None and not (since >= 0 and since < 1e11):
            raise errors.InvalidArgument("must be unix seconds", "since")
        if not 0 <= limit < 2**32:
            raise errors.InvalidArgument("must be in [0, 2^32)", "limit")
        resp = await call("ListAudit", sdk.audit_request(tenant, since, limit, verb), caller)
        return JSON({"records": [orjson.loads(r) for r in resp.records]})

    @v1.get("/admin/audit/verify", response_model=m.AuditReport, tags=["admin"])
    async def audit_verify(caller: Caller):
        """Check every chain of the audit log; each problem names its record."""
        return sdk.message_dict(await call("VerifyAudit", quartz_pb2.VerifyAuditRequest(), caller))

    @v1.delete("/admin/tenants/{name}", response_model=m.TenantDeleted, tags=["admin"])
    async def delete_tenant(name: Annotated[str, FastApiPath(pattern=m.NAME_REGEX)], caller: Caller):
        resp = await call("DeleteTenant", quartz_pb2.DeleteTenantRequest(name=name), caller)
        return {"deleted": resp.deleted, "keys_revoked": resp.keys_revoked}

    @v1.get("/admin/keys", response_model=m.KeyList, tags=["admin"])
    async def list_keys(caller: Caller, tenant: str | None = None):
        resp = await call("ListKeys", quartz_pb2.ListKeysRequest(tenant=tenant or ""), caller)
        return {"keys": [_key(k) for k in resp.keys]}

    @v1.post("/admin/keys", response_model=m.CreatedKey, status_code=201, tags=["admin"])
    async def create_key(body: m.CreateKey, caller: Caller):
        req = quartz_pb2.CreateKeyRequest(
            tenant=body.tenant or "",
            role=body.role,
            collections=body.collections,
            expires_in_s=body.expires_in_s,
            description=body.description,
            rate_limits=body.rate_limits,
        )
        resp = await call("CreateKey", req, caller)
        return {"key": resp.key, "info": _key(resp.info)}

    @v1.delete("/admin/keys/{key_id}", response_model=m.Revoked, tags=["admin"])
    async def revoke_key(key_id: KeyId, caller: Caller):
        resp = await call("RevokeKey", quartz_pb2.RevokeKeyRequest(id=key_id), caller)
        return {"revoked": resp.revoked}

    # ------------------------------------------------------------------ backups (admin keys)

    @v1.post("/admin/backups", response_model=m.BackupJob, status_code=202, tags=["backups"])
    async def create_backup(body: m.CreateBackup, caller: Caller):
        """Ask for a backup; the coordinator leader runs it. Poll GET /v1/admin/backups/{id}
        until its state is complete or failed."""
        req = quartz_pb2.BackupRequest(repository=body.repository, collections=body.collections)
        return sdk.message_dict(await call("CreateBackup", req, caller))

    @v1.get("/admin/backups", response_model=m.BackupList, tags=["backups"])
    async def list_backups(caller: Caller, repository: RepositoryQuery = ""):
        """This cluster's backup jobs, with the complete backups found in `repository` (default:
        the repositories of the cluster's jobs and schedules)."""
        resp = await call("ListBackups", quartz_pb2.ListBackupsRequest(repository=repository), caller)
        return {"backups": [sdk.message_dict(b) for b in resp.backups]}

    @v1.get("/admin/backups/{backup_id}", response_model=m.BackupJob, tags=["backups"])
    async def get_backup(backup_id: BackupId, caller: Caller, repository: RepositoryQuery = ""):
        """A backup's state and figures (name its repository for one this cluster did not take)."""
        req = quartz_pb2.GetBackupRequest(id=backup_id, repository=repository)
        return sdk.message_dict(await call("GetBackup", req, caller))

    @v1.get("/admin/backups/{backup_id}/manifest", response_model=m.BackupManifest, tags=["backups"])
    async def describe_backup(backup_id: BackupId, caller: Caller, repository: RepositoryQuery = ""):
        req = quartz_pb2.DescribeBackupRequest(id=backup_id, repository=repository)
        resp = await call("DescribeBackup", req, caller)
        return JSON({"backup": sdk.message_dict(resp.backup), "manifest": orjson.loads(resp.manifest)})

    @v1.delete("/admin/backups/{backup_id}", response_model=m.BackupDeleted, tags=["backups"])
    async def delete_backup(backup_id: BackupId, caller: Caller, repository: RepositoryQuery = ""):
        """Delete a complete or failed backup (files other backups share are kept)."""
        req = quartz_pb2.DeleteBackupRequest(id=backup_id, repository=repository)
        resp = await call("DeleteBackup", req, caller)
        return {"deleted": resp.deleted, "bytes_freed": resp.bytes_freed}

    @v1.post(
        "/admin/backups/{backup_id}/restore", response_model=m.Restored, status_code=201, tags=["backups"]
    )
    async def restore_backup(backup_id: BackupId, body: m.RestoreBackup, caller: Caller):
        """Create the backup's collections (or those named; one under `as_name`), filled from it.
        Each is ready once every replica is restored: see its `status`."""
        req = quartz_pb2.RestoreRequest(
            repository=body.repository,
            backup_id=backup_id,
            collections=body.collections,
            as_name=body.as_name or "",
            replication_factor=body.replication_factor,
            tenant=body.tenant or "",
        )
        resp = await call("RestoreBackup", req, caller)
        return {"collections": [_collection(i) for i in resp.collections]}

    @v1.put("/admin/backup-schedules/{name}", response_model=m.BackupSchedule, tags=["backups"])
    async def set_backup_schedule(name: ScheduleName, body: m.SetBackupSchedule, caller: Caller):
        """Create or replace a schedule: a backup every `interval_s`, the newest `keep` kept."""
        req = quartz_pb2.SetBackupScheduleRequest(
            schedule=quartz_pb2.BackupSchedule(
                name=name,
                repository=body.repository,
                interval_s=body.interval_s,
                keep=body.keep,
                collections=body.collections,
            )
        )
        return sdk.message_dict(await call("SetBackupSchedule", req, caller, fields=((r"^schedule\.", ""),)))

    @v1.get("/admin/backup-schedules", response_model=m.BackupScheduleList, tags=["backups"])
    async def list_backup_schedules(caller: Caller):
        resp = await call("ListBackupSchedules", quartz_pb2.ListBackupSchedulesRequest(), caller)
        return {"schedules": [sdk.message_dict(x) for x in resp.schedules]}

    @v1.delete("/admin/backup-schedules/{name}", response_model=m.ScheduleDeleted, tags=["backups"])
    async def delete_backup_schedule(name: ScheduleName, caller: Caller):
        resp = await call("DeleteBackupSchedule", quartz_pb2.DeleteBackupScheduleRequest(name=name), caller)
        return {"deleted": resp.deleted}

    latency_window = dashboard_latency.LatencyWindow(time.time())

    def _context(caller: list[tuple[str, str]]) -> CallContext:
        return CallContext(caller, timeout_s, next((v for k, v in caller if k == PEER), ""))

    @v1.get("/admin/cluster", response_model=m.ClusterStatus, tags=["admin"])
    async def cluster_status(caller: Caller):
        """Nodes, shards (epoch, primary, replicas, in_sync, each replica's lag in log entries)
        and every tenant's collections: this router's shard map, and each live node asked for
        its replicas with a short deadline (a node that does not answer shows as unreachable).
        Cluster admins only."""
        await dashboard_guard.cluster_admin(
            service, caller, _context(caller), "ClusterStatus", "the cluster status"
        )
        return await dashboard_cluster.status(service.shardmap.view, service.nodes)

    @v1.get("/admin/latency", response_model=m.LatencyReport, tags=["admin"])
    async def latency(
        caller: Caller,
        window_s: Annotated[
            float,
            Query(
                ge=dashboard_latency.WINDOW_S_MIN,
                le=dashboard_latency.WINDOW_S_MAX,
                description="how far back (seconds)",
            ),
        ] = dashboard_latency.WINDOW_S_DEFAULT,
    ):
        """p50/p95/p99 (ms), count and failures of each gRPC method and HTTP route this router
        served over the last `window_s`, from its own latency histograms (quantiles interpolated
        within buckets, as Prometheus' histogram_quantile). Cluster admins only."""
        await dashboard_guard.cluster_admin(service, caller, _context(caller), "Latency", "latency")
        return latency_window.report(time.time(), dashboard_latency.read_registry(), window_s)

    @v1.get("/whoami", response_model=m.KeyInfo, tags=["admin"])
    async def whoami(caller: Caller):
        return _key(await call("WhoAmI", quartz_pb2.WhoAmIRequest(), caller))

    app.include_router(probes)
    app.include_router(v1)
    return app


def _write_result(r: quartz_pb2.WriteResult) -> dict:
    return {
        "errors": [{"index": e.index, "code": e.code, "message": e.message} for e in r.errors],
        "shards": _shards(r.shards),
    }
