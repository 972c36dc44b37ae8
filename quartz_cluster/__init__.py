"""QuartzDB: a distributed vector database (gRPC, HNSW on RocksDB, etcd)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `python -m quartz_cluster node` does not import the SDK.
    if name in ("QuartzClient", "AsyncQuartzClient", "Hit", "Point", "PartialWriteError"):
        from quartz_cluster import client

        return getattr(client, name)
    raise AttributeError(name)
