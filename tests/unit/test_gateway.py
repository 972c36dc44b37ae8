"""The HTTP gateway's pure parts: error bodies (RFC 9457) with the status from the one table,
field paths as the rest of the API writes them, JSON that cannot be stored refused."""

from __future__ import annotations

import orjson
import pytest

from quartz_cluster import errors
from quartz_cluster.gateway import app as gw
from quartz_cluster.rpc.status import STATUS


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        (("body", "points", 1, "vector"), "points[1].vector"),
        (("body", "points", 0, "id", "constrained-str"), "points[0].id"),
        (("body", "ids", 3, "int"), "ids[3]"),
        (("path", "name"), "name"),
        (("query", "allow_partial"), "allow_partial"),
        (("body",), ""),
        ((), ""),
    ],
)
def test_field_paths_read_like_the_rest_of_the_api(loc, path):
    assert gw.field_path(loc) == path


def test_a_problem_is_rfc9457_json_with_the_grpc_code():
    r = gw.problem(404, "collection: collection 'x' does not exist", "NOT_FOUND")
    assert r.status_code == 404 and r.media_type == "application/problem+json"
    assert orjson.loads(r.body) == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "collection: collection 'x' does not exist",
        "code": "NOT_FOUND",
    }
    long = gw.problem(400, "x" * 5000)
    assert len(orjson.loads(long.body)["detail"]) <= 1024  # cut like a gRPC status message


def test_every_domain_error_has_a_documented_status():
    statuses = {http for _, http in STATUS.values()}
    assert statuses <= set(gw.ERROR_STATUSES)
    assert set(gw.PROBLEM_RESPONSES) == set(gw.ERROR_STATUSES)


def test_json_that_cannot_be_stored_is_invalid_argument_naming_the_field():
    assert gw._json({"a": [1, 2.5, "x"]}, "filter") == b'{"a":[1,2.5,"x"]}'
    with pytest.raises(errors.InvalidArgument, match=r"^points\[2\]\.payload: cannot be stored as JSON"):
        gw._payload({"n": 2**64}, "points[2].payload")
    assert gw._payload(None, "p") == b"" and gw._payload({}, "p") == b""


def test_vectors_must_be_rectangular_numbers():
    v = gw._vectors([[1, 2], [3, 4.5]], "vectors")
    assert (v.count, v.dim, len(v.data)) == (2, 2, 16)
    with pytest.raises(errors.InvalidArgument, match=r"^vectors: every vector must have the same number"):
        gw._vectors([[1, 2], [3]], "vectors")
