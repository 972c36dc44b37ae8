"""The coordinator: one elected leader places shards and (issue 4) heals failures."""
