#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every check: lint, format, generated-code freshness,
# unit and integration tests (real node processes, real RocksDB). Extra args go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
export PATH="$root/.venv/bin:$PATH"
echo "== ruff" >&2
ruff check .
ruff format --check .
echo "== pytest" >&2
python -m pytest "$@"
