"""A real cluster: etcd, 2 coordinators, 3 nodes, 2 routers; clients through the SDK."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from quartz_cluster import AsyncQuartzClient, QuartzClient
from quartz_cluster.datasets import generate_clustered, load_pydocs, recall_at_k, shared_data_dir
from quartz_cluster.errors import NotFound
from tests.integration.conftest import etcd_store

pytestmark = pytest.mark.integration
K = 10


def load(client, name, ds, batch=2000):
    for start in range(0, len(ds.ids), batch):
        end = start + batch
        client.upsert(name, ds.ids[start:end], ds.base[start:end], ds.payloads[start:end])


@pytest.fixture(scope="module")
def clustered(module_cluster):
    ds = generate_clustered(20_000, dim=32, n_queries=200, seed=3)
    with module_cluster.client(timeout=60) as c:
        info = c.create_collection("clustered", dim=ds.dim, shards=4, replication_factor=2)
        assert info.ready and len(info.shard_map) == 4
        load(c, "clustered", ds)
    return ds


def test_placement_is_balanced_on_distinct_nodes(module_cluster, clustered):
    with module_cluster.client() as c:
        info = c.describe_collection("clustered")
    replicas = [s["replicas"] for s in info.shard_map]
    assert all(len(set(r)) == 2 for r in replicas)  # distinct nodes per shard
    per_node = np.bincount([int(n[1:]) for r in replicas for n in r], minlength=4)[1:]
    assert per_node.max() - per_node.min() <= 1  # 8 replicas over 3 nodes: 3/3/2
    assert all(s["epoch"] == 1 and set(s["in_sync"]) == set(s["replicas"]) for s in info.shard_map)


def test_every_point_readable_and_recall_matches_one_node(module_cluster, clustered):
    ds = clustered
    with module_cluster.client(timeout=60) as c:
        assert c.count("clustered") == len(ds.ids)
        for start in range(0, len(ds.ids), 5000):
            ids = ds.ids[start : start + 5000]
            points = c.get("clustered", ids)
            assert [p.id for p in points] == ids
            assert np.array_equal(np.stack([p.vector for p in points]), ds.base[start : start + 5000])
            assert [p.payload for p in points] == ds.payloads[start : start + 5000]
        hits = c.search("clustered", ds.queries, k=K, with_payload=False)
    row_of = {pid: i for i, pid in enumerate(ds.ids)}
    recall = recall_at_k([[row_of[h.id] for h in hs] for hs in hits], ds.gt_ids, K)
    print(f"cluster recall@10 (4 shards, default ef): {recall:.4f}")
    assert recall >= 0.95


def test_two_routers_give_identical_results(module_cluster, clustered):
    ds = clustered
    flt = {"must": [{"key": "bucket", "range": {"lt": 300}}]}
    results = []
    for router in module_cluster.routers:
        with QuartzClient(router.address, api_key=module_cluster.admin_key) as c:
            results.append(
                (
                    c.search("clustered", ds.queries[:100], k=K),
                    c.search("clustered", ds.queries[:100], k=K, filter=flt),
                )
            )
    assert results[0] == results[1]


def test_async_client_mirrors_sync(module_cluster, clustered):
    ds = clustered

    async def go():
        async with AsyncQuartzClient(
            module_cluster.routers[1].address, api_key=module_cluster.admin_key
        ) as c:
            hits = await c.search("clustered", ds.queries[0], k=5)
            count = await c.count("clustered")
            points = await c.get("clustered", ds.ids[:3])
            return hits, count, points

    hits, count, points = asyncio.run(go())
    with module_cluster.client() as c:
        assert hits == c.search("clustered", ds.queries[0], k=5)
    assert count == len(ds.ids) and [p.id for p in points] == ds.ids[:3]


def test_concurrent_searches_batched_by_the_router_get_their_own_answers(module_cluster, clustered):
    """The router sends concurrent searches of the same shape to a shard in one call: each
    request must still get exactly its own answer. Filters keep every search on the exact plan,
    so the answer does not depend on which replica served it."""
    ds = clustered
    kinds = ["class", "function", "module"]
    cases = [
        (
            ds.queries[i] if i % 2 else ds.queries[i : i + 3],
            {"must": [{"key": "kind", "match": kinds[i % 3]}]},
            3 + i % 4,
        )
        for i in range(72)
    ]
    address = module_cluster.routers[0].address
    with QuartzClient(address, api_key=module_cluster.admin_key) as c:
        alone = [c.search("clustered", q, k=k, filter=f, with_payload=False) for q, f, k in cases]

    async def together():
        async with AsyncQuartzClient(address, api_key=module_cluster.admin_key) as c:
            return await asyncio.gather(
                *(c.search("clustered", q, k=k, filter=f, with_payload=False) for q, f, k in cases)
            )

    def rows(result):  # one query -> a list of hits; several -> a list of lists
        return [result] if result and not isinstance(result[0], list) else result

    got = asyncio.run(together())
    for mine, expected in zip(got, alone, strict=True):
        assert [[h.id for h in r] for r in rows(mine)] == [[h.id for h in r] for r in rows(expected)]
        # a batch can take another BLAS path than a single query: scores agree to float32 rounding
        assert np.allclose(
            [h.score for r in rows(mine) for h in r], [h.score for r in rows(expected) for h in r], atol=1e-5
        )


def test_integer_ids_come_back_as_strings_and_delete_routes(module_cluster):
    with module_cluster.client() as c:
        c.create_collection("ints", dim=4, shards=3)
        c.upsert("ints", [1, 2, 3], np.eye(3, 4, dtype=np.float32))
        assert [p.id for p in c.get("ints", [3, 1])] == ["3", "1"]
        c.delete("ints", [2])
        assert c.count("ints") == 2
        assert c.search("ints", np.array([0, 1, 0, 0], dtype=np.float32), k=1)[0].id != "2"
        c.drop_collection("ints")
        assert "ints" not in [x.name for x in c.list_collections()]
        with pytest.raises(NotFound):
            c.count("ints")
        # Re-creating a dropped name gives a new, empty collection (old replicas never resurrect).
        c.create_collection("ints", dim=4, shards=3)
        assert c.count("ints") == 0
        c.drop_collection("ints")


def test_router_restart_mid_workload(module_cluster, clustered):
    """SDK clients retry through a router SIGKILL + restart and carry on without an error."""
    router = module_cluster.routers[1]
    errors: list[Exception] = []
    written: list[str] = []
    done = threading.Event()
    rng = np.random.default_rng(11)

    def workload():
        with QuartzClient(router.address, api_key=module_cluster.admin_key, timeout=30) as c:
            i = 0
            while not done.is_set() or i < 40:
                try:
                    ids = [f"rr-{i}-{j}" for j in range(20)]
                    c.upsert("clustered", ids, rng.normal(size=(20, 32)).astype(np.float32))
                    written.extend(ids)
                    c.search("clustered", clustered.queries[i % 200], k=5)
                except Exception as exc:
                    errors.append(exc)
                    return
                i += 1

    t = threading.Thread(target=workload)
    t.start()
    while len(written) < 200:  # the workload is running
        t.join(0.05)
        assert t.is_alive() or not errors, errors
    router.kill()
    router.start()
    done.set()
    t.join(120)
    assert not errors, errors
    assert len(written) >= 800
    with module_cluster.client() as c:
        assert len(c.get("clustered", written)) == len(written)


def test_leader_coordinator_killed_another_takes_over(module_cluster):
    leader_id = _leader(module_cluster)
    leader = next(p for p in module_cluster.coordinators if p.name == leader_id)
    leader.kill()
    with module_cluster.client(timeout=60) as c:
        info = c.create_collection("after-failover", dim=8, shards=2, replication_factor=3, timeout=60)
        assert info.ready
        c.upsert("after-failover", ["a", "b"], np.ones((2, 8), dtype=np.float32))
        assert c.count("after-failover") == 2
    assert _leader(module_cluster) != leader_id
    leader.start()  # back as a standby


def _leader(cluster) -> str:
    from quartz_cluster.meta import schema

    async def get():
        store = etcd_store(cluster)
        try:
            kv = await store.get(schema.LEADER)
            return schema.LeaderRecord.from_json(kv.value).id if kv else ""
        finally:
            await store.close()

    return asyncio.run(get())


@pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data/pydocs-minilm-384 not present")
def test_recall_on_real_embeddings_through_the_cluster(module_cluster):
    ds = load_pydocs(shared_data_dir(), rows=20_000, with_text=False)
    with module_cluster.client(timeout=60) as c:
        c.create_collection("pydocs", dim=ds.dim, shards=4)
        load(c, "pydocs", ds)
        hits = c.search("pydocs", ds.queries, k=K, with_payload=False)
    row_of = {pid: i for i, pid in enumerate(ds.ids)}
    recall = recall_at_k([[row_of[h.id] for h in hs] for hs in hits], ds.gt_ids, K)
    print(f"cluster recall@10 on pydocs 20k: {recall:.4f}")
    assert recall >= 0.95


def test_largest_collection_is_placed_and_purged(module_cluster):
    """64 shards x RF 3: one placement transaction; the drop purges 64 + 192 keys (more than
    one etcd transaction may hold) and every node deletes its replicas."""
    from quartz_cluster import limits
    from quartz_cluster.meta import schema

    shards = limits.SHARDS_PER_COLLECTION_MAX
    with module_cluster.client(timeout=120) as c:
        info = c.create_collection("wide", dim=4, shards=shards, replication_factor=3, timeout=120)
        assert info.ready and len(info.shard_map) == shards
        c.upsert("wide", [str(i) for i in range(500)], np.ones((500, 4), dtype=np.float32))
        assert c.count("wide") == 500
        c.drop_collection("wide")

    async def leftovers() -> int:
        store = etcd_store(module_cluster)
        try:
            for _ in range(100):
                _, kvs = await store.list(schema.SHARDS + info.id.encode())
                _, reps = await store.list(schema.REPLICAS + info.id.encode())
                if not kvs and not reps:
                    return 0
                await asyncio.sleep(0.1)
            return len(kvs) + len(reps)
        finally:
            await store.close()

    assert asyncio.run(leftovers()) == 0

    def replica_dirs() -> int:
        return sum(
            len(list((n.data_dir / "shards" / info.id).glob("*")))
            for n in module_cluster.nodes
            if (n.data_dir / "shards" / info.id).exists()
        )

    for _ in range(100):  # nodes react to the tombstone asynchronously
        if replica_dirs() == 0:
            break
        time.sleep(0.1)
    assert replica_dirs() == 0
