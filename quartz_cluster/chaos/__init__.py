"""The chaos harness (`quartz chaos run`): a real cluster, a recorded workload, faults on a
seeded schedule, then a checker in Jepsen's terms. See chaos/README.md."""
