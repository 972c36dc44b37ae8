"""QuartzDB: a distributed vector database (gRPC, HNSW on RocksDB, etcd)."""

__version__ = "0.1.0"
