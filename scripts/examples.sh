#!/usr/bin/env bash
# Runs every example under examples/ against a live local cluster: starts `quartz up` (1 node) in
# a temp dir, waits until the router is ready, exports QUARTZ_ROUTER / QUARTZ_HTTP /
# QUARTZ_API_KEY from its cluster.json, runs the curl, Python, JavaScript HTTP and JavaScript gRPC
# quickstarts, stops the cluster and removes the temp dir. Exits 1 if any example failed. The
# JavaScript ones are skipped (and say so) when node is not installed.
#
#   bash scripts/examples.sh
#
# Env: QUARTZ_EXAMPLES_NODES (default 1), QUARTZ_EXAMPLES_TIMEOUT (seconds per example, default 300).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

quartz=.venv/bin/quartz
python=.venv/bin/python
nodes=${QUARTZ_EXAMPLES_NODES:-1}
example_timeout=${QUARTZ_EXAMPLES_TIMEOUT:-300}
start_timeout=180 # seconds for `quartz up` to write cluster.json (2 busy cores: be patient)
ready_timeout=60  # then for GET /readyz to answer 200
stop_timeout=120  # for `quartz up` to stop its children in order after SIGINT

if [ ! -x "$quartz" ]; then
  echo "examples: $quartz not found: run scripts/setup.sh first" >&2
  exit 2
fi

data=$(mktemp -d "${TMPDIR:-/tmp}/quartz-examples.XXXXXX") || exit 2
data=$(cd "$data" && pwd -P) # the path `quartz up` resolves it to (and puts in its children's arguments)
up_pid=""
results=()
failed=0

log() { echo "examples: $*" >&2; }

# The processes of our cluster that still run: every process whose command line names our data
# dir (a fresh mktemp dir: only `quartz up` and the children it started name it). The children
# run in their own sessions, so a killed `quartz up` leaves them behind; cluster.json does not
# list them yet when `quartz up` dies while starting.
cluster_pids() {
  "$python" - "$data" <<'PY'
import os, sys
data = sys.argv[1].encode()
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) in (os.getpid(), os.getppid()):
        continue
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        continue
    if any(data in a for a in args):
        print(pid)
PY
}

stop_cluster() {
  if [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; then
    log "stopping the cluster (SIGINT to quartz up, pid $up_pid)"
    kill -INT "$up_pid" 2>/dev/null
    local waited=0
    while kill -0 "$up_pid" 2>/dev/null && [ "$waited" -lt "$stop_timeout" ]; do
      sleep 1
      waited=$((waited + 1))
    done
    if kill -0 "$up_pid" 2>/dev/null; then
      log "quartz up did not stop in ${stop_timeout} s: killing it and its children"
      kill -KILL "$up_pid" 2>/dev/null
    fi
  fi
  if [ -n "$up_pid" ]; then
    wait "$up_pid" 2>/dev/null
    up_pid=""
  fi
  local leftovers
  leftovers=$(cluster_pids)
  if [ -n "$leftovers" ]; then
    log "killing leftover cluster processes: $(echo $leftovers)"
    kill -KILL $leftovers 2>/dev/null
  fi
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  stop_cluster
  rm -rf "$data"
  exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

fail_with_log() {
  log "$1"
  log "--- quartz up output:"
  cat "$data/up.out" >&2 2>/dev/null
  for f in "$data"/logs/*.log; do
    [ -f "$f" ] || continue
    log "--- tail of $f:"
    tail -n 20 "$f" >&2
  done
  exit 1
}

# npm ci first: the cluster need not wait for it
js=1
js_skip=""
if ! command -v node >/dev/null 2>&1; then
  js=0
  js_skip="node not installed"
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  js=0
  js_skip="node $(node --version) is older than 20"
elif ! command -v npm >/dev/null 2>&1; then
  js=0
  js_skip="npm not installed"
else
  log "npm ci in examples/javascript"
  if ! (cd examples/javascript && npm ci --no-audit --no-fund --loglevel=error); then
    js=0
    results+=("FAIL javascript-http, javascript-grpc: npm ci failed")
    failed=1
  fi
fi

log "starting a cluster: quartz up --data-dir $data --nodes $nodes"
"$quartz" up --data-dir "$data" --nodes "$nodes" --port 0 --http-port 0 >"$data/up.out" 2>&1 &
up_pid=$!

waited=0
until [ -f "$data/cluster.json" ]; do
  kill -0 "$up_pid" 2>/dev/null || fail_with_log "quartz up exited before the cluster was up"
  [ "$waited" -lt "$start_timeout" ] || fail_with_log "no cluster.json after ${start_timeout} s"
  sleep 1
  waited=$((waited + 1))
done

read -r QUARTZ_ROUTER QUARTZ_HTTP key_file < <("$python" -c '
import json, sys
info = json.load(open(sys.argv[1]))
print(info["router"], info["http"], info["admin_key_file"])
' "$data/cluster.json")
[ -n "${key_file:-}" ] || fail_with_log "cluster.json has no router, http or admin_key_file"
QUARTZ_API_KEY=$(cat "$key_file")
export QUARTZ_ROUTER QUARTZ_HTTP QUARTZ_API_KEY

waited=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$QUARTZ_HTTP/readyz")" = 200 ]; do
  kill -0 "$up_pid" 2>/dev/null || fail_with_log "quartz up exited before the router was ready"
  [ "$waited" -lt "$ready_timeout" ] || fail_with_log "GET /readyz not 200 after ${ready_timeout} s"
  sleep 1
  waited=$((waited + 1))
done
log "cluster ready: router (gRPC) $QUARTZ_ROUTER, HTTP http://$QUARTZ_HTTP"

# run NAME COMMAND...: one example, with a deadline; its result goes into the summary
run() {
  local name=$1 status
  shift
  echo
  echo "=== $name: $*"
  timeout --foreground --kill-after=10 "$example_timeout" "$@"
  status=$?
  if [ "$status" = 0 ]; then
    results+=("PASS $name")
  else
    [ "$status" = 124 ] && log "$name: timed out after ${example_timeout} s"
    results+=("FAIL $name (exit $status)")
    failed=1
  fi
}

run curl bash examples/curl/quickstart.sh
run python "$python" examples/python/quickstart.py
if [ "$js" = 1 ]; then
  run javascript-http node examples/javascript/http_quickstart.mjs
  run javascript-grpc node examples/javascript/grpc_quickstart.mjs
elif [ -n "$js_skip" ]; then
  echo
  echo "SKIP javascript: $js_skip"
  results+=("SKIP javascript-http: $js_skip" "SKIP javascript-grpc: $js_skip")
fi

echo
echo "=== summary"
printf '%s\n' "${results[@]}"
exit "$failed"
