"""`quartz bench`: QuartzDB next to in-process hnswlib and its peers (harness.py)."""
