"""The router's backup RPCs (DESIGN §13): thin handlers over quartz_cluster.backup."""

from __future__ import annotations


class BackupRpcs:
    """Mixed into QuartzService."""
