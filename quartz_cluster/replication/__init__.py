"""Replication: the follower's log-matching decision (pure), write consistency, and the
primary's replicator (fan-out, in-sync shrink/expand, catch-up by log or snapshot)."""
