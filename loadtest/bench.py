"""The side-by-side benchmark: QuartzDB (node, cluster) next to in-process hnswlib and its peers
(Chroma server, Milvus Lite) on the same data, in one run. The same as `quartz bench`.

    .venv/bin/python loadtest/bench.py                                   # pydocs 60k x 384, all systems
    .venv/bin/python loadtest/bench.py --dataset generated --rows 100000 --systems quartz-node
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quartz_cluster.bench.cli import add_arguments, run

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    raise SystemExit(run(ap.parse_args()))
