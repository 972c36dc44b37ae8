"""A snapshot stream reads the shard a chunk at a time: before its first chunk it reads only its
position (it once iterated from "m/" on through every p/ and v/ row, which sort after it, and
held the whole shard in a dict before streaming anything)."""

from __future__ import annotations

from quartz_cluster.node.shard import snapshot as snapshot_mod
from quartz_cluster.node.shard.checkpoint import commit_entries
from quartz_cluster.proto.quartz.v1 import node_pb2
from tests.unit.test_shard_mutants import entry, replica


class CountingSnapshot:
    """A RocksDB snapshot that counts the rows its iterators hand out."""

    def __init__(self, snap) -> None:
        self.snap, self.read = snap, 0

    def items(self, *args, **kwargs):
        for item in self.snap.items(*args, **kwargs):
            self.read += 1
            yield item


def test_the_first_chunk_comes_after_reading_only_the_position(tmp_path, monkeypatch):
    r = replica(tmp_path)
    ids = [f"p{i}" for i in range(300)]
    raw = entry(1, 1, ids, list(range(300)))
    commit_entries(r.state, r.store, [node_pb2.LogEntry.FromString(raw)], True, True, [raw])
    counting: list[CountingSnapshot] = []
    real = r.store.db.snapshot

    def snapshot():
        counting.append(CountingSnapshot(real()))
        return counting[-1]

    db = r.store.db

    class Db:
        def snapshot(self):
            return snapshot()

        def __getattr__(self, name):
            return getattr(db, name)

    monkeypatch.setattr(r.store, "db", Db())
    chunks = snapshot_mod.snapshot_chunks(r.store)
    lsn, _, next_label, rows = next(chunks)
    assert (lsn, next_label, rows) == (1, 300, [])
    assert counting[0].read <= 3  # two positions and the log entry at lsn, not 600 rows
    total = sum(len(rows) for _, _, _, rows in chunks)
    assert total == 600  # every v/ and p/ row still goes out, in the chunks after
    monkeypatch.undo()
    r.store.close()
