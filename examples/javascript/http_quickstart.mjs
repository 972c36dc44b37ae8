// QuartzDB quickstart over the HTTP/JSON gateway with Node's built-in fetch (Node >= 20, no
// dependencies): create a collection, upsert points with payloads, search with a filter, read
// points back by id, count, drop the collection. Exits non-zero on any mismatch.
//
//   QUARTZ_HTTP=127.0.0.1:8080 QUARTZ_API_KEY=qz_... node examples/javascript/http_quickstart.mjs
//
// QUARTZ_HTTP: the gateway's host:port ("http" in cluster.json), or a full http(s):// URL.
// QUARTZ_API_KEY: an API key (a `quartz up` data dir has the admin key in admin.key).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";

const address = process.env.QUARTZ_HTTP;
const apiKey = process.env.QUARTZ_API_KEY;
if (!address || !apiKey) {
  console.error("set QUARTZ_HTTP (host:port) and QUARTZ_API_KEY (qz_...)");
  process.exit(2);
}
const base = (/^https?:\/\//.test(address) ? address : `http://${address}`).replace(/\/$/, "");

class QuartzHttpError extends Error {
  constructor(method, path, status, problem) {
    super(`${method} ${path}: HTTP ${status}: ${problem.code ?? ""} ${problem.detail ?? JSON.stringify(problem)}`);
    this.status = status;
    this.problem = problem; // RFC 9457 problem details: type, title, status, detail, code
  }
}

// One call: JSON in, JSON out; any status but `expected` throws with the problem details.
async function api(method, path, body, expected = 200) {
  const res = await fetch(base + path, {
    method,
    headers: {
      Authorization: `Bearer ${apiKey}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  const json = text ? JSON.parse(text) : {};
  if (res.status !== expected) {
    throw new QuartzHttpError(method, path, res.status, json);
  }
  return json;
}

const name = `quickstart_js_http_${randomBytes(4).toString("hex")}`;
const coll = `/v1/collections/${name}`;

async function run() {
  console.log("== upsert 4 points");
  const written = await api("PUT", `${coll}/points`, {
    points: [
      { id: "doc-1", vector: [1.0, 0.0, 0.0, 0.0], payload: { lang: "en", title: "Hello" } },
      { id: "doc-2", vector: [0.9, 0.1, 0.0, 0.0], payload: { lang: "de", title: "Hallo" } },
      { id: "doc-3", vector: [0.0, 1.0, 0.0, 0.0], payload: { lang: "en", title: "World" } },
      { id: "doc-4", vector: [0.0, 0.0, 1.0, 0.0], payload: { lang: "fr", title: "Monde" } },
    ],
  });
  assert.deepEqual(written.errors, [], "points not written");
  assert.equal((await api("GET", `${coll}/count`)).count, 4, "count");

  const query = [1.0, 0.05, 0.0, 0.0];
  console.log("== search without a filter: doc-1 is nearest");
  let { hits } = await api("POST", `${coll}/search`, { vector: query, k: 2 });
  assert.deepEqual(hits.map((h) => h.id), ["doc-1", "doc-2"], "unfiltered hits");

  console.log("== search with the filter lang = de: only doc-2");
  ({ hits } = await api("POST", `${coll}/search`, {
    vector: query,
    k: 10,
    filter: { must: [{ key: "lang", match: "de" }] },
  }));
  assert.deepEqual(hits.map((h) => h.id), ["doc-2"], "filtered hits");
  assert.deepEqual(hits[0].payload, { lang: "de", title: "Hallo" }, "payload of doc-2");
  assert.ok(hits[0].score > 0.9, `score ${hits[0].score}: cosine similarity, expected > 0.9`);
  console.log("   %j", hits[0]);

  console.log("== get points by id (an absent id is left out)");
  const { points } = await api("POST", `${coll}/points/get`, { ids: ["doc-3", "doc-1", "missing"] });
  assert.deepEqual(points.map((p) => p.id), ["doc-3", "doc-1"], "ids read back");
  assert.deepEqual(points[0].vector, [0.0, 1.0, 0.0, 0.0], "vector of doc-3");
  assert.deepEqual(points[1].payload, { lang: "en", title: "Hello" }, "payload of doc-1");

  console.log("== delete doc-4, count again");
  await api("POST", `${coll}/points/delete`, { ids: ["doc-4"] });
  assert.equal((await api("GET", `${coll}/count`)).count, 3, "count after the delete");

  console.log("== errors are problem details (RFC 9457): a collection that does not exist");
  const problem = await api("GET", "/v1/collections/no_such_collection", undefined, 404);
  assert.equal(problem.code, "NOT_FOUND");
  console.log(`   ${problem.detail}`);
}

console.log(`== create collection ${name} (dim 4, cosine, 2 shards)`);
const info = await api("POST", "/v1/collections", { name, dim: 4, metric: "cosine", shards: 2, wait: true }, 201);
assert.equal(info.name, name);
assert.equal(info.ready, true, "collection ready");
try {
  await run();
} finally {
  // drop the collection even when a check failed
  console.log(`== drop collection ${name}`);
  const { dropped } = await api("DELETE", coll);
  assert.equal(dropped, true, "dropped");
}
await api("GET", coll, undefined, 404);
console.log("OK: JavaScript HTTP quickstart passed");
