import numpy as np

from quartz_cluster.client import _common as c
from quartz_cluster.proto.quartz.v1 import quartz_pb2


def result(*errors):
    return quartz_pb2.WriteResult(errors=[quartz_pb2.PointError(index=i, code=code) for i, code in errors])


def test_only_unavailable_points_are_retried_with_their_own_vectors_and_payloads():
    vecs = np.arange(12, dtype=np.float32).reshape(3, 4)
    req = c.upsert_request("docs", ["a", "b", 3], vecs, [{"n": 0}, {"n": 1}, {"n": 2}], "all")
    retry = c.retry_subset(req, result((0, "UNAVAILABLE"), (2, "UNAVAILABLE")))
    assert list(retry.points.ids) == ["a", "3"] and retry.write_consistency == quartz_pb2.ALL
    got = np.frombuffer(retry.points.vectors.data, dtype="<f4").reshape(2, 4)
    assert np.array_equal(got, vecs[[0, 2]]) and retry.points.vectors.count == 2
    assert [bytes(p) for p in retry.points.payloads] == [b'{"n":0}', b'{"n":2}']
    assert c.retry_subset(req, result()) is None
    assert c.retry_subset(req, result((0, "UNAVAILABLE"), (1, "INVALID_ARGUMENT"))) is None  # final


def test_deletes_retry_their_subset():
    req = c.delete_request("docs", ["a", "b", "c"], "majority")
    assert list(c.retry_subset(req, result((1, "UNAVAILABLE"))).ids) == ["b"]
