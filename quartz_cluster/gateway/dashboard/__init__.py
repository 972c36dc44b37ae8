"""The admin dashboard (DESIGN §14): static HTML, JS and CSS under static/, served by the
router's HTTP gateway at /dashboard, calling the public /v1 API with the key the user signs in
with. The two routes it adds for cluster admins, /v1/admin/cluster and /v1/admin/latency, are
built here from pure functions: cluster.py (the node and shard table from the router's shard
map and the nodes' replica stats) and latency.py (quantiles from the router's own histogram
buckets over a recent window); guard.py admits their callers."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
