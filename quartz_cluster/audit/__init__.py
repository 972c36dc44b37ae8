"""The audit log (DESIGN §12): every control-plane change, key operation, authentication failure
and data-plane write, as Kubernetes-shaped audit events (`event`) appended to hash-chained,
append-only chains so that editing, removing or reordering a record is detected (`chain`).
Pure: no I/O; the router stores the records and `quartz audit tail|verify` reads them."""
