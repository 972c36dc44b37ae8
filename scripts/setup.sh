#!/usr/bin/env bash
# Sets up a fresh Debian machine for QuartzDB: etcd (Debian's etcd-server, used from the
# cluster layer on) and a virtualenv at .venv with the package and its dev tools.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing etcd-server (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
  else
    echo "setup: etcd not found; run 'sudo apt-get install etcd-server'" >&2
  fi
fi

# Debian's prometheus: promtool checks and unit-tests deploy/prometheus/alerts.yml, and the
# metrics test runs the server (tests/integration/test_deploy_manifests.py uses promtool)
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing prometheus (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "setup: promtool not found; run 'sudo apt-get install prometheus'" >&2
  fi
fi

# Debian's chromium and its driver: the dashboard in a real headless browser
# (tests/integration/test_dashboard.py, through selenium)
if ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing chromium and chromium-driver (apt)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "setup: chromedriver not found; run 'sudo apt-get install chromium chromium-driver'" >&2
  fi
fi

# Node 20 + npm run the JavaScript examples (examples/javascript; tests/integration/test_examples.py)
if ! command -v node >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing nodejs and npm (apt)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null || true
fi
if command -v npm >/dev/null 2>&1 && [ ! -d examples/javascript/node_modules ]; then
  (cd examples/javascript && npm ci --silent --no-audit --no-fund) || echo "setup: npm ci failed: the JavaScript examples will be skipped" >&2
fi

py=${PYTHON:-python3}
"$py" -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python dependencies into .venv (hnswlib compiles: about a minute)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The deploy/ linters (tests/integration/test_deploy_manifests.py) in a virtualenv of their own:
# checkov brings ~100 packages whose pins must not touch the project's. Pinned, so a new
# checkov release cannot fail CI with new checks overnight.
deploy_tools="kubernetes-validate==1.37.0 checkov==3.3.30"
deploy_stamp=.venv-deploy/.installed-$(echo "$deploy_tools" | sha1sum | cut -c1-12)
if [ ! -f "$deploy_stamp" ]; then
  echo "setup: installing $deploy_tools into .venv-deploy" >&2
  [ -x .venv-deploy/bin/python ] || "$py" -m venv .venv-deploy
  .venv-deploy/bin/python -m pip install -q --upgrade pip
  # shellcheck disable=SC2086  # the list splits into requirements on purpose
  .venv-deploy/bin/python -m pip install -q $deploy_tools
  rm -f .venv-deploy/.installed-*
  touch "$deploy_stamp"
fi
