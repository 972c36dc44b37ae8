"""`quartz backup ...`: create, list, describe, verify, restore, delete, schedule."""

from __future__ import annotations

import argparse


def add_commands(sub, cluster_opts, find_opts) -> None:
    """Register the backup commands on the `quartz` parser."""
    del sub, cluster_opts, find_opts


def _unused(args: argparse.Namespace) -> int:
    return 0
