"""Tests written against mutants of node/shard/state.py that the rest of the unit suite let
survive (scripts/mutation.sh, docs/mutation.md). Real RocksDB and HNSW in a temp dir, without
the shard's writer (a mutant of writer.py cannot hang these tests)."""

from __future__ import annotations

from quartz_cluster import limits
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.unit.test_shard_mutants import entry, replica


def test_a_rebuild_sizes_the_state_like_the_writes_did_at_an_exact_power_of_two(tmp_path):
    """Labels 0..1023 fill the initial capacity exactly: writes keep it, and so does a rebuild
    from the rows (no doubling for a label that does not exist)."""
    n = limits.INITIAL_CAPACITY
    raw = entry(1, 1, [f"p{i}" for i in range(n)], list(range(n)))
    r = replica(tmp_path)
    commit_entries(r.state, r.store, [node_pb2.LogEntry.FromString(raw)], True, True, [raw])
    live = r.state.stats()
    assert live["capacity"] == n and live["count"] == n and r.next_label == n
    r.store.close()
    r = replica(tmp_path)
    assert r.how == "rebuild"
    assert r.state.stats() == live
    assert len(r.state.ids_by_label) == n
    r.store.close()
