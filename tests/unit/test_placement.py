import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartz_cluster.coordinator.placement import place_collection
from quartz_cluster.errors import FailedPrecondition


@given(shards=st.integers(1, 64), rf=st.integers(1, 5), extra=st.integers(0, 6))
def test_replicas_are_distinct_and_balanced(shards, rf, extra):
    nodes = [f"n{i}" for i in range(rf + extra)]
    placement = place_collection("cid", shards, rf, nodes)
    assert len(placement) == shards
    for replicas in placement:
        assert len(replicas) == rf == len(set(replicas))
        assert set(replicas) <= set(nodes)
    load = np.array([sum(n in r for r in placement) for n in nodes])
    assert load.max() - load.min() <= 1
    primaries = np.array([sum(r[0] == n for r in placement) for n in nodes])
    assert primaries.max() - primaries.min() <= 1


def test_existing_load_is_taken_into_account():
    placement = place_collection(
        "c2", 2, 1, ["a", "b", "c"], replicas_per_node={"a": 5, "b": 5}, primaries_per_node={"a": 5, "b": 5}
    )
    assert placement == [("c",), ("c",)]


def test_placement_is_deterministic():
    nodes = ["n1", "n2", "n3", "n4"]
    assert place_collection("x", 8, 2, nodes) == place_collection("x", 8, 2, list(reversed(nodes)))


def test_too_few_nodes_is_refused():
    with pytest.raises(FailedPrecondition, match="replication_factor"):
        place_collection("x", 1, 3, ["n1", "n2"])
