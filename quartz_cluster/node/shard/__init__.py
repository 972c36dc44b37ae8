"""A shard replica (replica.py) and its parts; see replica.py for the map."""

from quartz_cluster.node.shard.replica import ShardReplica
from quartz_cluster.node.shard.search import SearchHits
from quartz_cluster.node.shard.spec import ShardOptions, ShardSpec

__all__ = ["SearchHits", "ShardOptions", "ShardReplica", "ShardSpec"]
