"""Cluster metadata in etcd: the key schema (`schema`) and the client wrapper (`store`)."""
