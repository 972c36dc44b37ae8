import numpy as np
import pytest

from quartz_cluster import limits, validation
from quartz_cluster.errors import InvalidArgument


def _batch(ids, vecs, payloads=(), deletes=(), dim=4):
    arr = np.asarray(vecs, dtype="<f4").reshape(len(vecs), -1) if len(vecs) else np.empty((0, dim), "<f4")
    return validation.write_batch(
        ids, arr.tobytes(), len(arr), arr.shape[1] if len(arr) else dim, list(payloads), list(deletes), dim
    )


def _refused(field, *args, **kw):
    with pytest.raises(InvalidArgument) as err:
        _batch(*args, **kw)
    assert str(err.value).startswith(field), str(err.value)


def test_good_batch_decodes_without_copy_semantics_surprises():
    b = _batch(["a", "b"], [[1, 2, 3, 4], [5, 6, 7, 8]], [b'{"x": 1}', b""])
    assert b.ids == ["a", "b"] and b.vectors.shape == (2, 4)
    assert b.payloads == [{"x": 1}, {}] and b.delete_ids == []


def test_bad_batches_name_the_field():
    ok = [[1.0, 2, 3, 4]]
    _refused("upserts.vectors", ["a"], [[1.0, 2, 3]])  # wrong dimension
    _refused("upserts.vectors[1]", ["a", "b"], [[1.0, 2, 3, 4], [np.nan, 0, 0, 0]])
    _refused("upserts.vectors[0]", ["a"], [[np.inf, 0, 0, 0]])
    _refused("upserts.ids[0]", [""], ok)
    _refused("upserts.ids[0]", ["x" * (limits.ID_BYTES_MAX + 1)], ok)
    _refused("upserts.ids[0]", ["é" * (limits.ID_BYTES_MAX // 2 + 1)], ok)  # bytes, not characters
    _refused("upserts.ids[1]", ["a", "a"], ok * 2)
    _refused("upserts.payloads[0]", ["a"], ok, [b"[1, 2]"])
    _refused("upserts.payloads[0]", ["a"], ok, [b"{bad"])
    _refused("upserts.payloads[0]", ["a"], ok, [b'{"x": "' + b"y" * limits.PAYLOAD_BYTES_MAX + b'"}'])
    _refused("upserts.payloads", ["a", "b"], ok * 2, [b"{}"])
    _refused("delete_ids", ["a"], ok, deletes=["a"])
    _refused("upserts", [], [])


def test_batch_size_is_limited():
    n = limits.BATCH_POINTS_MAX + 1
    with pytest.raises(InvalidArgument, match="batch limit"):
        validation.write_batch([f"i{i}" for i in range(n)], b"", 0, 4, [], [], 4)


def test_vector_byte_count_must_match():
    with pytest.raises(InvalidArgument, match="bytes for 2 vectors"):
        validation.vectors(b"\0" * 12, 2, 4, 4)
