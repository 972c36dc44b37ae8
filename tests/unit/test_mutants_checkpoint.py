"""Tests written against mutants of node/shard/checkpoint.py that the rest of the unit suite let
survive (scripts/mutation.sh, docs/mutation.md): how recovery reports a log of deletes only, the
last epoch of a database written before m/log_end existed, what a checkpoint file records, and
the clean-up of a checkpoint that failed half-way. Real RocksDB and HNSW in a temp dir.

The state is written the way a follower writes it (`commit_entries`: log and rows in one batch,
then memory), without the shard's writer, so that these tests never wait on the writer (a
mutant of writer.py cannot hang them)."""

from __future__ import annotations

import os
import pickle

import pytest

from quartz_cluster.node.shard import checkpoint as checkpoint_mod
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.node.shard.storage import K_LAST_EPOCH, K_LOG_END, K_NEXT_LABEL
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.unit.test_shard_mutants import entry, replica


def commit(r, *raws: bytes) -> None:
    """Make entries durable and applied on a replica, as a follower does."""
    for raw in raws:
        commit_entries(r.state, r.store, [node_pb2.LogEntry.FromString(raw)], True, True, [raw])


def test_a_log_of_deletes_only_is_recovered_by_a_rebuild(tmp_path):
    """Deletes of absent ids still make an entry: applied_lsn 1 with no label ever used. The
    replica was written to, so it is rebuilt from its (empty) rows, not opened as new."""
    r = replica(tmp_path)
    commit(r, entry(1, 1))
    r.store.close()
    r = replica(tmp_path)
    assert r.store.meta(K_NEXT_LABEL) == 0
    assert r.how == "rebuild"
    assert (r.applied_lsn, r.log_end, r.label_of) == (1, 1, {})
    r.store.close()


def test_a_database_without_log_end_takes_its_last_epoch_from_the_log(tmp_path):
    """A database of the layout before m/log_end and m/last_epoch were stored: the last epoch is
    that of the entry at applied_lsn."""
    r = replica(tmp_path)
    commit(r, entry(1, 2, ["a"], [0]), entry(2, 3, ["b"], [1], start=1))
    assert (r.log_end, r.last_epoch) == (2, 3)
    r.store.db.delete(K_LOG_END)
    r.store.db.delete(K_LAST_EPOCH)
    r.store.close()
    r = replica(tmp_path)
    assert r.store.meta(K_LOG_END) == 0 and r.store.meta(K_LAST_EPOCH) == 0
    assert (r.applied_lsn, r.log_end, r.last_epoch) == (2, 2, 3)
    assert set(r.label_of) == {"a", "b"}
    r.store.close()


def test_a_checkpoint_file_records_the_lsn_and_history_it_covers(tmp_path):
    r = replica(tmp_path)
    commit(r, entry(1, 1, ["a", "b"], [0, 1]), entry(2, 1, ["c"], [2], start=2))
    r.checkpoints.save(r.state, r.store, 10)
    assert r.checkpoint_lsn == 2
    history = r.store.history()
    r.store.close()
    with open(os.path.join(str(tmp_path), "ckpt", f"ckpt-{2:020d}.state"), "rb") as f:
        saved = pickle.load(f)
    assert saved["lsn"] == 2 and saved["history"] == history
    assert saved["next_label"] == 3 and saved["free"] == []
    assert saved["ids_by_label"].tolist() == ["a", "b", "c"]


def test_a_checkpoint_that_failed_half_way_leaves_nothing_after_a_reopen(tmp_path, monkeypatch):
    """A crash (here: a failure) between writing the state file and renaming it into place:
    the partial file is not a checkpoint, and the next open removes it."""
    r = replica(tmp_path)
    commit(r, entry(1, 1, ["a", "b"], [0, 1]))
    real_replace = os.replace

    def fail(src, dst):
        if dst.endswith(".state"):  # the graph file is saved; its state file is not
            raise OSError("disk full")
        real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(checkpoint_mod.os, "replace", fail)
        with pytest.raises(OSError, match="disk full"):
            r.checkpoints.save(r.state, r.store, 0)
    assert r.checkpoint_lsn == 0
    r.store.close()
    ckpt = os.path.join(str(tmp_path), "ckpt")
    graph = {f for f in os.listdir(ckpt) if f.startswith(f"ckpt-{1:020d}.hnsw")}
    assert f"ckpt-{1:020d}.hnsw" in graph
    assert len(set(os.listdir(ckpt)) - graph) == 1  # the partial state file
    r = replica(tmp_path)
    assert r.how == "rebuild" and set(r.label_of) == {"a", "b"}
    assert set(os.listdir(ckpt)) == graph  # a graph without its state file is never loaded
    assert r.checkpoints.newest(1) is None
    r.store.close()
