"""QuartzDB quickstart with the Python SDK (QuartzClient, gRPC to the router): create a
collection, upsert points with payloads, search with a filter, read points back by id, count,
drop the collection. Exits non-zero on any mismatch.

    QUARTZ_ROUTER=127.0.0.1:7000 QUARTZ_API_KEY=qz_... python examples/python/quickstart.py

QUARTZ_ROUTER: the router's gRPC address ("router" in cluster.json). QUARTZ_API_KEY: an API key
(the SDK reads it from the environment by itself; a `quartz up` data dir has the admin key in
admin.key).
"""

from __future__ import annotations

import os
import secrets
import sys

import numpy as np

from quartz_cluster import QuartzClient
from quartz_cluster.errors import NotFound


def check(ok: bool, message: str) -> None:
    if not ok:
        raise SystemExit(f"FAIL: {message}")


def main() -> int:
    router = os.environ.get("QUARTZ_ROUTER")
    if not router or not os.environ.get("QUARTZ_API_KEY"):
        print("set QUARTZ_ROUTER (host:port) and QUARTZ_API_KEY (qz_...)", file=sys.stderr)
        return 2
    name = f"quickstart_py_{secrets.token_hex(4)}"

    # api_key: None reads $QUARTZ_API_KEY; every call has a deadline of `timeout` seconds
    with QuartzClient(router, timeout=30.0) as client:
        print(f"== create collection {name} (dim 4, cosine, 2 shards)")
        info = client.create_collection(name, dim=4, metric="cosine", shards=2)
        check(info.name == name and info.ready, f"collection not created ready: {info}")
        try:
            run(client, name)
        finally:  # drop the collection even when a check failed
            print(f"== drop collection {name}")
            dropped = client.drop_collection(name)
        check(dropped, "drop_collection returned False")
        try:
            client.describe_collection(name)
        except NotFound:
            pass
        else:
            check(False, f"{name} still exists after the drop")
    print("OK: Python SDK quickstart passed")
    return 0


def run(client: QuartzClient, name: str) -> None:
    print("== upsert 4 points")
    client.upsert(
        name,
        ids=["doc-1", "doc-2", "doc-3", "doc-4"],
        vectors=np.array(
            [[1.0, 0.0, 0.0, 0.0], [0.9, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
            dtype=np.float32,
        ),
        payloads=[
            {"lang": "en", "title": "Hello"},
            {"lang": "de", "title": "Hallo"},
            {"lang": "en", "title": "World"},
            {"lang": "fr", "title": "Monde"},
        ],
    )  # raises PartialWriteError naming the points not written
    n = client.count(name)
    check(n == 4, f"count {n}, expected 4")

    query = np.array([1.0, 0.05, 0.0, 0.0], dtype=np.float32)
    print("== search without a filter: doc-1 is nearest")
    hits = client.search(name, query, k=2)
    check([h.id for h in hits] == ["doc-1", "doc-2"], f"hits {hits}, expected doc-1, doc-2")

    print("== search with the filter lang = de: only doc-2")
    hits = client.search(name, query, k=10, filter={"must": [{"key": "lang", "match": "de"}]})
    check([h.id for h in hits] == ["doc-2"], f"hits {hits}, expected only doc-2")
    check(hits[0].payload == {"lang": "de", "title": "Hallo"}, f"payload {hits[0].payload}")
    check(hits[0].score > 0.9, f"score {hits[0].score}: cosine similarity, expected > 0.9")
    check(hits.shards.answered == hits.shards.total, f"shards {hits.shards}")
    print(f"   {hits[0]}")

    print("== get points by id (an absent id is left out)")
    points = client.get(name, ["doc-3", "doc-1", "missing"])
    ids = [p.id for p in points]
    check(ids == ["doc-3", "doc-1"], f"ids {ids}, expected doc-3, doc-1")
    check(np.array_equal(points[0].vector, [0.0, 1.0, 0.0, 0.0]), f"vector {points[0].vector}")
    check(points[1].payload == {"lang": "en", "title": "Hello"}, f"payload {points[1].payload}")

    print("== delete doc-4, count again")
    client.delete(name, ["doc-4"])
    n = client.count(name)
    check(n == 3, f"count {n}, expected 3")

    print("== errors are typed exceptions: a collection that does not exist")
    try:
        client.count("no_such_collection")
    except NotFound as exc:
        print(f"   NotFound: {exc}")
    else:
        check(False, "count of an absent collection did not raise NotFound")


if __name__ == "__main__":
    sys.exit(main())
