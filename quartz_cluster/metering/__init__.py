"""Usage metering: the router's local journal of billable calls and audit events, shipped to
etcd exactly once (DESIGN §12, ADR 0016)."""
