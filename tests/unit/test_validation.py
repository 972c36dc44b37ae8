import numpy as np
import pytest

from quartz_cluster import limits, validation
from quartz_cluster.errors import InvalidArgument, ResourceExhausted


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


# --- limits, exactly at each bound and one past it -------------------------------------------


def test_name_accepts_the_pattern_up_to_64_characters_and_names_the_field():
    assert validation.name("a", "f") == "a"
    assert validation.name("A-z_0" + "x" * 59, "f") == "A-z_0" + "x" * 59  # 64 characters
    for bad in ["", "x" * 65, "a b", "a/b", "é", 3, None, " a"]:
        with pytest.raises(InvalidArgument) as err:
            validation.name(bad, "config.name")
        assert err.value.field == "config.name"
        assert str(err.value) == f"config.name: must match {limits.NAME_PATTERN}, got {bad!r}"


def test_metric_accepts_exactly_the_three_metrics():
    for m in ("cosine", "l2", "ip"):
        assert validation.metric(m) == m
    for bad in ("COSINE", "dot", "", None):
        with pytest.raises(InvalidArgument) as err:
            validation.metric(bad)
        assert str(err.value) == f"metric: must be one of cosine, l2, ip, got {bad!r}"
    with pytest.raises(InvalidArgument, match=r"^c\.metric: "):
        validation.metric("dot", "c.metric")


def test_bounded_int_is_inclusive_at_both_bounds():
    assert validation.bounded_int(3, "f", 3, 7) == 3
    assert validation.bounded_int(7, "f", 3, 7) == 7
    assert validation.bounded_int(5, "f", 5, 5) == 5
    for bad in (2, 8, -3, 4.0, "5", None, True):
        with pytest.raises(InvalidArgument) as err:
            validation.bounded_int(bad, "k", 3, 7)
        assert str(err.value) == f"k: must be an integer in [3, 7], got {bad!r}"
    # a bool is refused even where its integer value is in range
    with pytest.raises(InvalidArgument):
        validation.bounded_int(True, "k", 0, 1)
    with pytest.raises(InvalidArgument):
        validation.bounded_int(False, "k", 0, 1)


def test_point_id_length_is_limited_in_utf8_bytes_at_exactly_the_limit():
    n = limits.ID_BYTES_MAX
    assert validation.point_ids(["x" * n]) == ["x" * n]
    assert validation.point_ids(["é" * (n // 2)]) == ["é" * (n // 2)]  # 2 bytes each: exactly n
    for bad in ("x" * (n + 1), "é" * (n // 2) + "x"):
        with pytest.raises(InvalidArgument) as err:
            validation.point_ids(["ok", bad], "ids")
        assert str(err.value) == f"ids[1]: longer than {n} bytes"


def test_point_ids_refuse_non_strings_and_name_both_indices_of_a_duplicate():
    assert validation.point_ids(("a", "b")) == ["a", "b"]  # any sequence in, a list out
    assert validation.point_ids([]) == []
    for bad in ("", 1, None, b"a"):
        with pytest.raises(InvalidArgument) as err:
            validation.point_ids(["a", bad], "delete_ids")
        assert str(err.value) == "delete_ids[1]: must be a non-empty string"
    with pytest.raises(InvalidArgument) as err:
        validation.point_ids(["a", "b", "c", "b"])
    assert str(err.value) == "ids[3]: duplicate id 'b' (also at index 1)"


@pytest.mark.parametrize("column", [0, 1, 2, 3])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_in_any_column_is_refused_naming_its_row(column, bad):
    arr = np.ones((3, 4), dtype="<f4")
    arr[2, column] = bad
    with pytest.raises(InvalidArgument) as err:
        validation.vectors(arr.tobytes(), 3, 4, 4, "upserts.vectors")
    assert str(err.value) == "upserts.vectors[2]: contains NaN or infinity"


def test_vectors_are_decoded_as_little_endian_float32_rows():
    values = np.arange(6, dtype="<f4").reshape(2, 3) / 4
    got = validation.vectors(values.tobytes(), 2, 3, 3)
    assert got.dtype == np.dtype("<f4") and got.shape == (2, 3)
    assert got.tolist() == values.tolist()
    # the extreme values whose squared norm fits pass (float32's max does not: see below)
    big = np.array([[1e18, -1e18, np.finfo("<f4").tiny]], dtype="<f4")
    assert validation.vectors(big.tobytes(), 1, 3, 3).tolist() == big.tolist()
    # the first bad row is the one named
    bad = np.ones((4, 2), dtype="<f4")
    bad[1, 1] = bad[3, 0] = np.nan
    with pytest.raises(InvalidArgument, match=r"^vectors\[1\]: "):
        validation.vectors(bad.tobytes(), 4, 2, 2)


def test_vector_sizes_are_checked_before_decoding():
    with pytest.raises(InvalidArgument) as err:
        validation.vectors(b"\0" * 12, 1, 3, 4, "v")
    assert str(err.value) == "v: dimension 3 does not match the collection's 4"
    with pytest.raises(InvalidArgument) as err:
        validation.vectors(b"\0" * 36, 2, 4, 4)
    assert str(err.value) == "vectors: 36 bytes for 2 vectors of dim 4 (expected 32)"
    assert validation.vectors(b"", 0, 4, 4).shape == (0, 4)


def _payload_of_size(n: int) -> bytes:
    blob = b'{"x": "' + b"y" * (n - 9) + b'"}'
    assert len(blob) == n
    return blob


def test_payload_size_is_limited_at_exactly_the_limit():
    n = limits.PAYLOAD_BYTES_MAX
    [doc] = validation.payloads([_payload_of_size(n)], 1)
    assert len(doc["x"]) == n - 9
    with pytest.raises(InvalidArgument) as err:
        validation.payloads([b"{}", _payload_of_size(n + 1)], 2, "p")
    assert str(err.value) == f"p[1]: {n + 1} bytes exceeds {n}"


def test_payloads_decode_json_objects_and_empty_means_an_empty_object():
    assert validation.payloads([], 3) == [{}, {}, {}]
    docs = validation.payloads([b"", b'{"a": [1, {"b": null}]}', b"{}"], 3)
    assert docs == [{}, {"a": [1, {"b": None}]}, {}]
    with pytest.raises(InvalidArgument) as err:
        validation.payloads([b"{}"], 2)
    assert str(err.value) == "payloads: has 1 entries for 2 ids"
    with pytest.raises(InvalidArgument) as err:
        validation.payloads([b"{}", b"3"], 2)
    assert str(err.value) == "payloads[1]: must be a JSON object, got int"
    with pytest.raises(InvalidArgument) as err:
        validation.payloads([b"{}", b'{"a": }'], 2)
    assert str(err.value).startswith("payloads[1]: not valid JSON (")


def test_batch_size_counts_upserts_and_deletes_at_exactly_the_limit():
    n = limits.BATCH_POINTS_MAX
    ids = [f"i{i}" for i in range(n // 2)]
    dels = [f"d{i}" for i in range(n - n // 2)]
    vecs = np.zeros((len(ids), 2), dtype="<f4")
    b = validation.write_batch(ids, vecs.tobytes(), len(ids), 2, [], dels, 2)
    assert len(b.ids) + len(b.delete_ids) == n
    with pytest.raises(InvalidArgument) as err:
        validation.write_batch(ids, vecs.tobytes(), len(ids), 2, [], [*dels, "one-more"], 2)
    assert str(err.value) == f"upserts: {n + 1} points exceeds the batch limit {n}"
    with pytest.raises(InvalidArgument) as err:
        validation.write_batch([], b"", 0, 2, [], [], 2)
    assert str(err.value) == "upserts: a write needs at least one upsert or delete"


def test_a_delete_only_batch_has_no_rows_of_the_collection_dimension():
    b = validation.write_batch([], b"", 0, 0, [], ["x", "y"], 5)
    assert b.ids == [] and b.delete_ids == ["x", "y"]
    assert b.vectors.shape == (0, 5) and b.vectors.dtype == np.float32
    assert b.payloads == [] and b.payload_blobs == []


def test_write_batch_keeps_payload_blobs_and_fills_missing_ones():
    vecs = np.ones((2, 2), dtype="<f4")
    b = validation.write_batch(["a", "b"], vecs.tobytes(), 2, 2, [b'{"k": 1}', b""], [], 2)
    assert b.payload_blobs == [b'{"k": 1}', b""] and b.payloads == [{"k": 1}, {}]
    b = validation.write_batch(["a", "b"], vecs.tobytes(), 2, 2, [], ["c"], 2)
    assert b.payload_blobs == [b"", b""] and b.payloads == [{}, {}] and b.delete_ids == ["c"]
    assert b.vectors.tolist() == [[1, 1], [1, 1]]


def test_write_batch_names_each_refusal():
    vecs = np.ones((1, 2), dtype="<f4").tobytes()
    with pytest.raises(InvalidArgument) as err:
        validation.write_batch(["a"], vecs, 2, 2, [], [], 2)
    assert str(err.value) == "upserts.vectors: 2 vectors for 1 ids"
    with pytest.raises(InvalidArgument) as err:
        validation.write_batch(["b", "a"], vecs * 2, 2, 2, [], ["c", "a", "b"], 2)
    assert str(err.value) == "delete_ids: id 'a' is both upserted and deleted"  # the first, sorted
    with pytest.raises(InvalidArgument, match=r"^delete_ids\[1\]: duplicate"):
        validation.write_batch(["a"], vecs, 1, 2, [], ["c", "c"], 2)
    with pytest.raises(InvalidArgument, match=r"^upserts\.payloads: has 2 entries for 1 ids"):
        validation.write_batch(["a"], vecs, 1, 2, [b"", b""], [], 2)


def test_collection_config_zero_hnsw_parameters_mean_defaults():
    c = validation.collection_config("docs", 8, "l2", 1, 1, 0, 0, 0)
    assert c == validation.CollectionConfig(
        name="docs",
        dim=8,
        metric="l2",
        shards=1,
        replication_factor=1,
        m=limits.DEFAULT_HNSW_M,
        ef_construction=limits.DEFAULT_EF_CONSTRUCTION,
        ef=limits.DEFAULT_EF,
    )
    c = validation.collection_config("d", 3, "ip", 4, 2, 8, 100, 50)
    assert (c.shards, c.replication_factor, c.m, c.ef_construction, c.ef) == (4, 2, 8, 100, 50)


@pytest.mark.parametrize(
    ("arg", "low", "high", "field"),
    [
        ("dim", 1, limits.DIM_MAX, "config.dim"),
        ("shards", 1, limits.SHARDS_PER_COLLECTION_MAX, "config.shards"),
        ("replication_factor", 1, limits.REPLICATION_FACTOR_MAX, "config.replication_factor"),
        ("m", limits.HNSW_M_MIN, limits.HNSW_M_MAX, "config.hnsw.m"),
        ("ef_construction", 1, limits.EF_CONSTRUCTION_MAX, "config.hnsw.ef_construction"),
        ("ef", 1, limits.EF_MAX, "config.hnsw.ef"),
    ],
)
def test_collection_config_bounds_are_inclusive_and_named(arg, low, high, field):
    good = {
        "name_": "c",
        "dim": 4,
        "metric_": "cosine",
        "shards": 2,
        "replication_factor": 2,
        "m": 16,
        "ef_construction": 100,
        "ef": 10,
    }
    for ok in (low, high):
        assert getattr(validation.collection_config(**{**good, arg: ok}), arg) == ok
    for bad in (low - 1, high + 1):
        if bad == 0 and arg in ("m", "ef_construction", "ef"):
            continue  # zero means the default
        with pytest.raises(InvalidArgument) as err:
            validation.collection_config(**{**good, arg: bad})
        assert err.value.field == field
        assert str(err.value) == f"{field}: must be an integer in [{low}, {high}], got {bad}"


def test_collection_config_names_name_and_metric_under_its_field():
    with pytest.raises(InvalidArgument, match=r"^spec\.name: "):
        validation.collection_config("a b", 4, "l2", 1, 1, 0, 0, 0, field="spec")
    with pytest.raises(InvalidArgument, match=r"^spec\.metric: "):
        validation.collection_config("ab", 4, "dot", 1, 1, 0, 0, 0, field="spec")
    with pytest.raises(InvalidArgument, match=r"^spec\.hnsw\.m: "):
        validation.collection_config("ab", 4, "l2", 1, 1, 1, 0, 0, field="spec")


def test_hnsw_params_default_field_and_defaults():
    assert validation.hnsw_params(0, 0, 0) == {
        "m": limits.DEFAULT_HNSW_M,
        "ef_construction": limits.DEFAULT_EF_CONSTRUCTION,
        "ef": limits.DEFAULT_EF,
    }
    with pytest.raises(InvalidArgument, match=r"^hnsw\.ef: "):
        validation.hnsw_params(0, 0, limits.EF_MAX + 1)
    with pytest.raises(InvalidArgument, match=r"^hnsw\.ef_construction: "):
        validation.hnsw_params(0, limits.EF_CONSTRUCTION_MAX + 1, 0)


@pytest.mark.parametrize("arg", ["shards", "replication_factor"])
def test_collection_config_refuses_zero_shards_and_replicas(arg):
    # shards=0 once silently became 1; the router resolves an unset replication_factor itself
    with pytest.raises(InvalidArgument, match=rf"^config\.{arg}: must be an integer in \[1, "):
        validation.collection_config(
            **{
                "name_": "c",
                "dim": 4,
                "metric_": "l2",
                "shards": 1,
                "replication_factor": 1,
                "m": 0,
                "ef_construction": 0,
                "ef": 0,
                arg: 0,
            }
        )


def test_vectors_whose_squared_norm_overflows_float32_are_refused():
    # l2 vectors near 1e38 once scored inf; at the limit a vector is accepted and scores finitely
    big = np.full((2, 4), 1e19, dtype="<f4")  # squared norm 4e38 > float32 max
    with pytest.raises(InvalidArgument, match=r"^vectors\[0\]: squared norm 4e\+38 exceeds"):
        validation.vectors(big.tobytes(), 2, 4, 4)
    rows = np.zeros((3, 4), dtype="<f4")
    rows[2, 0] = np.sqrt(np.float32(limits.VECTOR_SQUARED_NORM_MAX)) * np.float32(1.0001)
    with pytest.raises(InvalidArgument, match=r"^q\[2\]: squared norm"):
        validation.vectors(rows.tobytes(), 3, 4, 4, "q")
    edge = np.zeros((2, 4), dtype="<f4")
    edge[0, 0] = np.sqrt(np.float32(limits.VECTOR_SQUARED_NORM_MAX)) * np.float32(0.9999)
    edge[1, 0] = -edge[0, 0]
    arr = validation.vectors(edge.tobytes(), 2, 4, 4)
    d = arr[0] - arr[1]
    assert np.isfinite(np.float32(d @ d))  # the worst l2 distance between two accepted vectors


def test_search_budget_bounds_are_exact():
    validation.search_budget(1, limits.K_MAX, limits.K_MAX)
    validation.search_budget(limits.SEARCH_HITS_MAX // 16, 16, 64)  # exactly SEARCH_HITS_MAX hits
    with pytest.raises(InvalidArgument, match=r"^k: 1025 queries x k 16 = 16400 hits exceeds"):
        validation.search_budget(1025, 16, 64)
    validation.search_budget(32, 1, 8192)  # exactly SEARCH_WORK_MAX
    with pytest.raises(InvalidArgument, match=r"^ef: 33 queries x ef 8192 = 270336 exceeds"):
        validation.search_budget(33, 1, 8192)
    # k above ef counts as the work: a graph search keeps max(ef, k) candidates
    with pytest.raises(InvalidArgument, match=r"^ef: 1024 queries x ef 512 = 524288"):
        validation.search_budget(1024, 512 // 32, 512)
    validation.search_budget(1024, 16, 256)


def test_reply_budget_takes_up_to_the_maximum_and_check_takes_nothing():
    budget = validation.ReplyBudget(10)
    budget.take(4)
    budget.check(6)
    assert budget.used == 4
    budget.take(6)
    with pytest.raises(ResourceExhausted, match=r"^with_payload: .*SEARCH_REPLY_BYTES_MAX = 10 bytes"):
        budget.take(1)
    assert validation.ReplyBudget().bytes_max == limits.SEARCH_REPLY_BYTES_MAX


def test_the_budget_and_norm_messages_say_what_to_do():
    big = np.full((1, 4), 1e19, dtype="<f4")
    with pytest.raises(InvalidArgument) as err:
        validation.vectors(big.tobytes(), 1, 4, 4)
    assert str(err.value).endswith("(distances would overflow float32)")
    with pytest.raises(ResourceExhausted) as full:
        validation.ReplyBudget(1).check(2)
    assert str(full.value).endswith("ask for fewer queries, a smaller k, or with_payload=false")
