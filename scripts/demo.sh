#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the demo: a node is started, demo data loaded
# (../shared/data when present, generated otherwise) and example searches printed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
exec .venv/bin/quartz demo "$@"
