"""The replicas a node hosts (node/registry.py), in a temp dir: create is idempotent for the same
spec and refuses another, drop removes the directory, and a restart removes incomplete
directories and reopens complete ones with the same incarnation and data."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from quartz_cluster import validation
from quartz_cluster.errors import AlreadyExists, NotFound
from quartz_cluster.node.registry import ShardRegistry
from quartz_cluster.node.shard import ShardOptions, ShardSpec

DIM = 4
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=32, ef=32)


def registry(tmp_path) -> ShardRegistry:
    return ShardRegistry(str(tmp_path), ShardOptions(threads=1))


def batch(ids):
    vecs = np.arange(len(ids) * DIM, dtype="<f4").reshape(len(ids), DIM)
    return validation.write_batch(ids, vecs.tobytes(), len(ids), DIM, [], [], DIM)


def shard_dir(tmp_path, cid="c", shard=0) -> str:
    return os.path.join(str(tmp_path), "shards", cid, str(shard))


def test_create_is_idempotent_for_the_same_spec_and_refuses_another(tmp_path):
    async def go():
        reg = registry(tmp_path)
        await reg.open_all()
        assert await reg.create(SPEC) is True
        first = reg.get("c", 0)
        assert await reg.create(SPEC) is False
        assert reg.get("c", 0) is first  # the same replica, not a new one
        with pytest.raises(AlreadyExists, match="different spec") as info:
            await reg.create(ShardSpec("c", 0, DIM, "cosine", m=8, ef_construction=32, ef=32))
        assert info.value.field == "spec"
        assert await reg.create(ShardSpec("c", 1, DIM, "cosine")) is True
        assert sorted(reg.shards) == [("c", 0), ("c", 1)]
        assert os.path.exists(os.path.join(shard_dir(tmp_path), "spec.json"))
        assert not os.path.exists(os.path.join(shard_dir(tmp_path), "spec.json.tmp"))
        assert first.writer is not None  # started: it takes writes
        assert await first.write(batch(["a"])) == 1
        await reg.close()
        assert reg.shards == {}

    asyncio.run(go())


def test_get_names_a_shard_not_hosted(tmp_path):
    reg = registry(tmp_path)
    with pytest.raises(NotFound, match="c/3 is not hosted") as info:
        reg.get("c", 3)
    assert info.value.field == "ref"


def test_drop_removes_the_directory(tmp_path):
    async def go():
        reg = registry(tmp_path)
        await reg.open_all()
        await reg.create(SPEC)
        await reg.get("c", 0).write(batch(["a", "b"]))
        old_incarnation = reg.get("c", 0).incarnation
        assert os.path.isdir(shard_dir(tmp_path))
        assert await reg.drop("c", 0) is True
        assert not os.path.exists(shard_dir(tmp_path))
        assert os.listdir(os.path.join(str(tmp_path), "trash")) == []
        assert ("c", 0) not in reg.shards
        assert await reg.drop("c", 0) is False
        # created again: a new replica, with a new incarnation and no data
        assert await reg.create(SPEC) is True
        again = reg.get("c", 0)
        assert again.incarnation != old_incarnation and again.label_of == {}
        await reg.close()

    asyncio.run(go())


def test_open_all_removes_incomplete_directories_and_reopens_complete_ones(tmp_path):
    async def go():
        reg = registry(tmp_path)
        await reg.open_all()
        await reg.create(SPEC)
        await reg.create(ShardSpec("d", 2, DIM, "ip"))
        await reg.get("c", 0).write(batch(["a", "b", "c"]))
        incarnations = {key: r.incarnation for key, r in reg.shards.items()}
        assert all(len(i) == 32 for i in incarnations.values())
        await reg.close()
        return incarnations

    incarnations = asyncio.run(go())
    # a crash during a create (no spec.json yet), and one during a drop (left in trash/)
    incomplete = shard_dir(tmp_path, "c", 5)
    os.makedirs(os.path.join(incomplete, "db"))
    leftover = os.path.join(str(tmp_path), "trash", "abc")
    os.makedirs(leftover)

    async def reopen():
        reg = registry(tmp_path)
        await reg.open_all()
        assert sorted(reg.shards) == [("c", 0), ("d", 2)]
        assert {key: r.incarnation for key, r in reg.shards.items()} == incarnations
        c0 = reg.get("c", 0)
        assert c0.spec == SPEC and reg.get("d", 2).spec == ShardSpec("d", 2, DIM, "ip")
        assert set(c0.label_of) == {"a", "b", "c"} and c0.applied_lsn == 1
        assert c0.checkpoint_lsn == 1  # close checkpointed it
        assert await c0.write(batch(["d"])) == 2  # started
        await reg.close()

    asyncio.run(reopen())
    assert not os.path.exists(incomplete)
    assert not os.path.exists(leftover)


def test_create_replaces_a_directory_left_by_a_crash(tmp_path):
    async def go():
        reg = registry(tmp_path)
        await reg.open_all()
        stale = shard_dir(tmp_path)
        os.makedirs(stale)
        with open(os.path.join(stale, "junk"), "w") as f:
            f.write("x")
        assert await reg.create(SPEC) is True
        assert not os.path.exists(os.path.join(stale, "junk"))
        await reg.close()

    asyncio.run(go())


def test_dropping_the_last_shard_of_a_collection_removes_its_directory_and_frees_it(tmp_path):
    """Issue 12: empty collection directories stayed on nodes after a drop, and the dropped
    replicas' memory stayed resident (objects in reference cycles, glibc's heap)."""
    import gc
    import weakref

    async def go():
        reg = registry(tmp_path)
        await reg.open_all()
        await reg.create(SPEC)
        await reg.create(ShardSpec("c", 1, DIM, "l2"))
        await reg.get("c", 0).write(batch(["a", "b"]))
        gone = weakref.ref(reg.get("c", 0))
        collection_dir = os.path.dirname(shard_dir(tmp_path))
        assert await reg.drop("c", 0) is True
        assert os.path.isdir(collection_dir)  # shard 1 is still there
        assert gone() is None  # collected by the drop itself, not some later GC
        assert await reg.drop("c", 1) is True
        assert not os.path.exists(collection_dir)
        assert os.listdir(os.path.join(str(tmp_path), "shards")) == []
        await reg.close()

    gc.disable()  # only the drop's own collection may free the replica
    try:
        asyncio.run(go())
    finally:
        gc.enable()
