"""Replicated entries are checked on the follower as strictly as the router checks a write
(issue 13): a malformed entry refuses the whole Replicate, and nothing of it is stored."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from quartz_cluster.errors import InvalidArgument
from quartz_cluster.node.shard import ShardOptions, ShardReplica, ShardSpec
from quartz_cluster.proto.quartz.v1 import node_pb2

DIM = 4
SPEC = ShardSpec("c", 0, DIM, "l2", m=8, ef_construction=32, ef=32)


def entry(lsn, ids, labels=None, vectors=None, payloads=None, delete_ids=(), delete_labels=None, dim=DIM):
    vecs = np.ones((len(ids), dim), dtype="<f4") if vectors is None else vectors
    return node_pb2.LogEntry(
        lsn=lsn,
        epoch=1,
        ids=ids,
        labels=np.asarray(range(len(ids)) if labels is None else labels, dtype="<u8").tobytes(),
        vectors=node_pb2.Vectors(data=vecs.tobytes(), count=len(ids), dim=dim),
        payloads=[b"{}"] * len(ids) if payloads is None else payloads,
        delete_ids=list(delete_ids),
        delete_labels=np.asarray(
            range(len(delete_ids)) if delete_labels is None else delete_labels, dtype="<u8"
        ).tobytes(),
    ).SerializeToString()


def request(*entries: bytes) -> node_pb2.ReplicateRequest:
    return node_pb2.ReplicateRequest(
        ref=node_pb2.ShardRef(collection_id="c", shard=0),
        epoch=1,
        primary="p",
        prev_lsn=0,
        prev_epoch=0,
        entries=list(entries),
    )


GOOD = entry(1, ["a", "b"])
NAN = np.array([[np.nan, 0, 0, 0]], dtype="<f4")
HUGE = np.full((1, DIM), 3e38, dtype="<f4")
BAD = {
    "undecodable bytes": (b"\xff\xff\xff", r"entries\[1\]: not a LogEntry"),
    "wrong dimension": (entry(2, ["c"], vectors=np.ones((1, 3), "<f4"), dim=3), r"entries\[1\]\.vectors"),
    "NaN": (entry(2, ["c"], vectors=NAN), r"entries\[1\]\.vectors"),
    "norm beyond float32": (entry(2, ["c"], vectors=HUGE), r"entries\[1\]\.vectors"),
    "payload not JSON": (
        entry(2, ["c"], payloads=[b"{nope"]),
        r"entries\[1\]\.payloads\[0\]: not valid JSON",
    ),
    "payload not an object": (
        entry(2, ["c"], payloads=[b"[1]"]),
        r"entries\[1\]\.payloads\[0\]: must be a JSON object",
    ),
    "empty id": (entry(2, [""]), r"entries\[1\]\.ids"),
    "duplicate ids": (entry(2, ["c", "c"]), r"entries\[1\]\.ids"),
    "upserted and deleted": (entry(2, ["c"], delete_ids=["c"]), r"entries\[1\]\.delete_ids"),
    "too few labels": (entry(2, ["c", "d"], labels=[2]), r"entries\[1\]\.labels: must hold 2"),
    "a label far beyond the index": (
        entry(2, ["c"], labels=[2**40]),
        r"entries\[1\]\.labels: a label beyond",
    ),
    "a delete label not in the index": (
        entry(2, [], delete_ids=["a"], delete_labels=[99]),
        r"entries\[1\]\.delete_labels: a label beyond",
    ),
    "vectors without ids": (entry(2, [], vectors=np.ones((1, DIM), "<f4")), r"entries\[1\]\.vectors"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_malformed_entry_refuses_the_whole_request_and_stores_nothing(tmp_path, case):
    bad, message = BAD[case]

    async def go():
        r = ShardReplica(str(tmp_path / "f"), SPEC, ShardOptions(threads=1))
        r.load()
        r.incarnation = "inc"
        r.start()
        r.become_follower(1, "p")
        try:
            with pytest.raises(InvalidArgument, match=message):
                await r.append_replicated(request(GOOD, bad))
            assert r.store.log_end == 0 and r.state.next_label == 0 and len(r.state.label_of) == 0
            # the same good entry alone is taken: the refusal was for the bad one
            reply = await r.append_replicated(request(GOOD))
            assert (
                reply.status == node_pb2.REPLICATE_OK and r.store.log_end == 1 and len(r.state.label_of) == 2
            )
        finally:
            await r.close(checkpoint=False)

    asyncio.run(go())
