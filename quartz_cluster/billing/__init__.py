"""Plans, invoices, Stripe meter events and usage-alert webhooks (DESIGN.md §12, docs/billing.md).

Pure domain code: the router meters and enforces, the coordinator sends; nothing here holds
state or talks gRPC."""
