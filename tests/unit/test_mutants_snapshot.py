"""Tests written against mutants of node/shard/snapshot.py that the rest of the unit suite let
survive (scripts/mutation.sh, docs/mutation.md): the epoch a snapshot names when the log lacks
its entry, the rows a staging database counts over several chunks, and the synced write of its
position. Real RocksDB in a temp dir, without the shard's writer (a mutant of writer.py cannot
hang these tests)."""

from __future__ import annotations

import os

from quartz_cluster.node.shard import snapshot as snapshot_mod
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.node.shard.storage import K_APPLIED, K_LAST_EPOCH, K_LOG_START, log_key, open_db
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.unit.test_shard_mutants import Recording, entry, replica


def commit(r, *raws: bytes) -> None:
    for raw in raws:
        commit_entries(r.state, r.store, [node_pb2.LogEntry.FromString(raw)], True, True, [raw])


def test_a_snapshot_names_the_epoch_of_its_last_entry_or_0_when_the_log_lacks_it(tmp_path):
    r = replica(tmp_path)
    commit(r, entry(1, 2, ["a"], [0]), entry(2, 3, ["b"], [1], start=1))
    lsn, lsn_epoch, next_label, rows = next(r.snapshot_chunks())
    assert (lsn, lsn_epoch, next_label, rows) == (2, 3, 2, [])
    r.store.db.delete(log_key(2))  # the entry at applied_lsn is not in the log
    lsn, lsn_epoch, next_label, rows = next(r.snapshot_chunks())
    assert (lsn, lsn_epoch, next_label, rows) == (2, 0, 2, [])
    r.store.close()


def test_a_staging_database_counts_the_rows_of_every_chunk(tmp_path):
    staging = snapshot_mod.Staging(str(tmp_path), 1, 7, 1, 5)
    staging.write([b"v/a", b"v/b", b"v/c"], [b"1", b"2", b"3"])
    staging.write([b"p/a", b"p/b"], [b"{}", b"{}"])
    assert staging.rows == 5
    staging.abort()


def test_a_staging_database_writes_its_position_synced(tmp_path):
    staging = snapshot_mod.Staging(str(tmp_path), 4, 7, 3, 5)
    staging.write([b"v/a"], [b"1"])
    assert staging.claim()
    recording = Recording(staging._db)
    staging._db = recording
    staging.finish(4)
    assert recording.calls == [("write", None), ("flush_wal", True)]
    db = open_db(staging.path)  # closed by finish: ready to be swapped in
    try:
        assert int.from_bytes(db[K_APPLIED], "big") == 7 and int.from_bytes(db[K_LOG_START], "big") == 7
        assert int.from_bytes(db[K_LAST_EPOCH], "big") == 3
    finally:
        db.close()
    assert os.path.isdir(staging.path)
