"""A node down: searches that cannot reach every shard fail, unless partial results are
allowed; replies say how many shards answered; the node comes back with its data."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from quartz_cluster import QuartzClient
from quartz_cluster.client._common import pack
from quartz_cluster.errors import Unavailable
from quartz_cluster.proto.quartz.v1 import quartz_pb2, quartz_pb2_grpc
from tests.integration.conftest import bearer

pytestmark = pytest.mark.integration


def test_search_needs_every_shard_unless_partial_is_allowed(cluster_factory):
    cluster = cluster_factory("c", nodes=3)
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 8)).astype(np.float32)
    ids = [f"p{i}" for i in range(3000)]
    with QuartzClient(cluster.router_address, api_key=cluster.admin_key, timeout=5) as c:
        # one replica per shard, so that a dead node takes shards away (the default, 3, would not)
        info = c.create_collection("part", dim=8, shards=6, replication_factor=1)
        c.upsert("part", ids, vecs)
        victim = info.shard_map[0]["primary"]
        led = {s["shard"] for s in info.shard_map if s["primary"] == victim}
        node = next(n for n in cluster.nodes if n.name == victim)
        node.kill()

        with pytest.raises(Unavailable, match="shard"):
            c.search("part", vecs[0], k=5)
        stub = quartz_pb2_grpc.QuartzStub(grpc.insecure_channel(cluster.router_address))
        req = quartz_pb2.SearchPointsRequest(
            collection="part", queries=pack(vecs[:3])[0], k=5, allow_partial=True
        )
        resp = stub.Search(req, timeout=10, metadata=bearer(cluster.admin_key))
        assert (resp.shards.total, resp.shards.answered) == (6, 6 - len(led))
        assert sorted(f.shard for f in resp.shards.failed) == sorted(led)
        assert all(f.code == "UNAVAILABLE" and f"shard {f.shard}" in f.message for f in resp.shards.failed)
        assert len(resp.results) == 3 and all(len(r.ids) == 5 for r in resp.results)

        # the SDK's results say it too (a partial search was a plain list: no way to tell)
        hits = c.search("part", vecs[0], k=5, allow_partial=True)
        assert len(hits) == 5 and hits.partial
        assert (hits.shards.total, hits.shards.answered) == (6, 6 - len(led))
        assert sorted(f.shard for f in hits.shards.failed) == sorted(led)
        with pytest.raises(Unavailable) as err:
            c.count("part")
        assert all(f"{s}" in str(err.value) for s in led)  # the failed shards are named
        count = c.count("part", allow_partial=True)
        assert count.partial and sorted(f.shard for f in count.shards.failed) == sorted(led)
        assert 0 < count < 3000
        got = c.get("part", ids[:200], allow_partial=True)
        assert got.partial and 0 < len(got) < 200
        assert sorted(f.shard for f in got.shards.failed) == sorted(led)

        node.start()
        c.search("part", vecs[0], k=5)  # the SDK waits until the shard map has it again
        assert c.count("part") == 3000
        whole = c.search("part", vecs[:50], k=1, with_payload=False)
        assert not whole.partial and whole.shards.failed == ()
        assert [h[0].id for h in whole] == ids[:50]
