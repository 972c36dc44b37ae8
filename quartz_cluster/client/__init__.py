"""The Python SDK: `QuartzClient` (blocking) and `AsyncQuartzClient` (asyncio)."""

from quartz_cluster.client._common import CollectionInfo, Hit, PartialWriteError, Point
from quartz_cluster.client.aio import AsyncQuartzClient
from quartz_cluster.client.sync import QuartzClient

__all__ = ["AsyncQuartzClient", "CollectionInfo", "Hit", "PartialWriteError", "Point", "QuartzClient"]
