#!/usr/bin/env bash
# QuartzDB quickstart over the HTTP/JSON gateway with curl: create a collection, upsert points
# with payloads, search with a filter, read points back by id, count, drop the collection.
# JSON replies are checked with python3 (no jq needed). Exits non-zero on any mismatch.
#
#   QUARTZ_HTTP=127.0.0.1:8080 QUARTZ_API_KEY=qz_... bash examples/curl/quickstart.sh
#
# QUARTZ_HTTP: the gateway's host:port ("http" in cluster.json), or a full http(s):// URL.
# QUARTZ_API_KEY: an API key (a `quartz up` data dir has the admin key in admin.key).
set -euo pipefail

: "${QUARTZ_HTTP:?set QUARTZ_HTTP to the HTTP gateway address (host:port)}"
: "${QUARTZ_API_KEY:?set QUARTZ_API_KEY to an API key (qz_...)}"
case "$QUARTZ_HTTP" in
  http://* | https://*) base=${QUARTZ_HTTP%/} ;;
  *) base="http://$QUARTZ_HTTP" ;;
esac
command -v curl >/dev/null || { echo "error: curl is not installed" >&2; exit 2; }
command -v python3 >/dev/null || { echo "error: python3 is not installed" >&2; exit 2; }

coll="quickstart_curl_$(python3 -c 'import secrets; print(secrets.token_hex(4))')"
reply=$(mktemp)
created=0

cleanup() {
  local status=$?
  if [ "$created" = 1 ]; then # drop the collection even when a check failed
    curl -sS -o /dev/null -X DELETE -H "Authorization: Bearer $QUARTZ_API_KEY" \
      "$base/v1/collections/$coll" || true
  fi
  rm -f "$reply"
  exit "$status"
}
trap cleanup EXIT

# api EXPECTED_STATUS METHOD PATH [JSON_BODY]: one call; the reply body lands in $reply. Any other
# status prints the problem details (application/problem+json) and fails.
api() {
  local expected=$1 method=$2 path=$3 status
  local args=(-sS -o "$reply" -w '%{http_code}' -X "$method" -H "Authorization: Bearer $QUARTZ_API_KEY")
  if [ $# -ge 4 ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$4")
  fi
  status=$(curl "${args[@]}" "$base$path")
  if [ "$status" != "$expected" ]; then
    echo "FAIL: $method $path: HTTP $status, expected $expected" >&2
    cat "$reply" >&2
    echo >&2
    exit 1
  fi
}

# check <<'PY' ... PY: Python assertions (read from stdin) over the last reply, bound to `r`
# (and the collection's name to `coll`); a failed one prints its message and the reply.
check() {
  python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
try:
    exec(sys.stdin.read(), {"r": r, "coll": sys.argv[2]})
except AssertionError as exc:
    sys.exit(f"FAIL: {exc}\nreply: {json.dumps(r)}")
' "$reply" "$coll"
}

echo "== create collection $coll (dim 4, cosine, 2 shards)"
api 201 POST /v1/collections "{\"name\": \"$coll\", \"dim\": 4, \"metric\": \"cosine\", \"shards\": 2, \"wait\": true}"
created=1
check <<'PY'
assert r["name"] == coll and r["ready"] is True, "collection not created ready"
PY

echo "== upsert 4 points"
api 200 PUT "/v1/collections/$coll/points" '{"points": [
  {"id": "doc-1", "vector": [1.0, 0.0, 0.0, 0.0], "payload": {"lang": "en", "title": "Hello"}},
  {"id": "doc-2", "vector": [0.9, 0.1, 0.0, 0.0], "payload": {"lang": "de", "title": "Hallo"}},
  {"id": "doc-3", "vector": [0.0, 1.0, 0.0, 0.0], "payload": {"lang": "en", "title": "World"}},
  {"id": "doc-4", "vector": [0.0, 0.0, 1.0, 0.0], "payload": {"lang": "fr", "title": "Monde"}}
]}'
check <<'PY'
assert r["errors"] == [], f"points not written: {r['errors']}"
PY

echo "== count"
api 200 GET "/v1/collections/$coll/count"
check <<'PY'
assert r["count"] == 4, f"count {r['count']}, expected 4"
PY

echo "== search without a filter: doc-1 is nearest"
api 200 POST "/v1/collections/$coll/search" '{"vector": [1.0, 0.05, 0.0, 0.0], "k": 2}'
check <<'PY'
ids = [h["id"] for h in r["hits"]]
assert ids == ["doc-1", "doc-2"], f"hits {ids}, expected ['doc-1', 'doc-2']"
PY

echo "== search with the filter lang = de: only doc-2"
api 200 POST "/v1/collections/$coll/search" \
  '{"vector": [1.0, 0.05, 0.0, 0.0], "k": 10, "filter": {"must": [{"key": "lang", "match": "de"}]}}'
check <<'PY'
hits = r["hits"]
assert [h["id"] for h in hits] == ["doc-2"], f"hits {hits}, expected only doc-2"
assert hits[0]["payload"] == {"lang": "de", "title": "Hallo"}, f"payload {hits[0]['payload']}"
assert hits[0]["score"] > 0.9, f"score {hits[0]['score']}: cosine similarity, expected > 0.9"
print(f"   {hits[0]}")
PY

echo "== get points by id (an absent id is left out)"
api 200 POST "/v1/collections/$coll/points/get" '{"ids": ["doc-3", "doc-1", "missing"]}'
check <<'PY'
pts = r["points"]
assert [p["id"] for p in pts] == ["doc-3", "doc-1"], f"ids {[p['id'] for p in pts]}, expected doc-3, doc-1"
assert pts[0]["vector"] == [0.0, 1.0, 0.0, 0.0], f"vector {pts[0]['vector']}"
assert pts[1]["payload"] == {"lang": "en", "title": "Hello"}, f"payload {pts[1]['payload']}"
PY

echo "== delete doc-4, count again"
api 200 POST "/v1/collections/$coll/points/delete" '{"ids": ["doc-4"]}'
api 200 GET "/v1/collections/$coll/count"
check <<'PY'
assert r["count"] == 3, f"count {r['count']}, expected 3"
PY

echo "== errors are problem details (RFC 9457): a collection that does not exist"
api 404 GET /v1/collections/no_such_collection
check <<'PY'
assert r["status"] == 404 and r["code"] == "NOT_FOUND", "expected a NOT_FOUND problem"
print(f"   {r['detail']}")
PY

echo "== drop collection $coll"
api 200 DELETE "/v1/collections/$coll"
created=0
check <<'PY'
assert r["dropped"] is True, "not dropped"
PY
api 404 GET "/v1/collections/$coll"

echo "OK: curl quickstart passed"
