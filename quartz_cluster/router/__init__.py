"""The stateless router: public quartz.v1.Quartz service, shard map from an etcd watch,
fan-out to nodes and merge."""
