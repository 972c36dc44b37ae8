// QuartzDB quickstart over gRPC with @grpc/grpc-js and @grpc/proto-loader (service
// quartz.v1.Quartz, served by the router): create a collection, upsert points with payloads,
// search with a filter, read points back by id, count, drop the collection. Exits non-zero on
// any mismatch.
//
//   cd examples/javascript && npm ci
//   QUARTZ_ROUTER=127.0.0.1:7000 QUARTZ_API_KEY=qz_... node grpc_quickstart.mjs
//
// QUARTZ_ROUTER: the router's gRPC address ("router" in cluster.json). QUARTZ_API_KEY: an API key,
// sent as the metadata `authorization: Bearer <key>`. QUARTZ_PROTOS: the proto include dir
// (default: this repository's protos/).
//
// Wire formats: vectors are packed little-endian float32 (`Vectors{data, count, dim}`), payloads
// are JSON bytes, a filter is a JSON string.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { endianness } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const address = process.env.QUARTZ_ROUTER;
const apiKey = process.env.QUARTZ_API_KEY;
if (!address || !apiKey) {
  console.error("set QUARTZ_ROUTER (host:port) and QUARTZ_API_KEY (qz_...)");
  process.exit(2);
}
const protos = process.env.QUARTZ_PROTOS ?? resolve(dirname(fileURLToPath(import.meta.url)), "../../protos");

const definition = protoLoader.loadSync("quartz/v1/quartz.proto", {
  includeDirs: [protos], // quartz.proto imports quartz/v1/node.proto (Vectors, PointBatch, Metric)
  keepCase: true, // field names as in the .proto (with_payload, not withPayload)
  longs: String, // uint64 (count, epoch) as strings: no precision lost
  enums: String, // "COSINE", "MAJORITY"
  defaults: true, // absent fields read as their defaults ([] , "", 0)
});
const { quartz } = grpc.loadPackageDefinition(definition);
const client = new quartz.v1.Quartz(address, grpc.credentials.createInsecure());

const metadata = new grpc.Metadata();
metadata.set("authorization", `Bearer ${apiKey}`);

// One unary call as a promise, with a 30 s deadline.
function call(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + 30_000 }, (err, reply) =>
      err ? reject(err) : resolve(reply),
    );
  });
}

// rows of numbers -> Vectors{data: packed little-endian float32, count, dim}
function packVectors(rows) {
  const dim = rows[0].length;
  const floats = Float32Array.from(rows.flat());
  const data = Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength);
  if (endianness() === "BE") data.swap32(); // the wire format is little-endian everywhere
  return { data, count: rows.length, dim };
}

// packed little-endian float32 bytes -> array of numbers
function unpackVector(bytes) {
  return Array.from({ length: bytes.length / 4 }, (_, i) => bytes.readFloatLE(i * 4));
}

const json = (obj) => Buffer.from(JSON.stringify(obj));
const parse = (bytes) => (bytes.length ? JSON.parse(bytes.toString("utf8")) : {});

const name = `quickstart_js_grpc_${randomBytes(4).toString("hex")}`;

async function run() {
  console.log("== upsert 4 points");
  const points = [
    { id: "doc-1", vector: [1.0, 0.0, 0.0, 0.0], payload: { lang: "en", title: "Hello" } },
    { id: "doc-2", vector: [0.9, 0.1, 0.0, 0.0], payload: { lang: "de", title: "Hallo" } },
    { id: "doc-3", vector: [0.0, 1.0, 0.0, 0.0], payload: { lang: "en", title: "World" } },
    { id: "doc-4", vector: [0.0, 0.0, 1.0, 0.0], payload: { lang: "fr", title: "Monde" } },
  ];
  const written = await call("Upsert", {
    collection: name,
    points: {
      ids: points.map((p) => p.id),
      vectors: packVectors(points.map((p) => p.vector)),
      payloads: points.map((p) => json(p.payload)),
    },
    write_consistency: "MAJORITY",
  });
  // a batch spanning shards is not atomic across shards: `errors` lists the points not written
  assert.deepEqual(written.errors, [], "points not written");
  assert.equal((await call("Count", { collection: name })).count, "4", "count");

  const query = [1.0, 0.05, 0.0, 0.0];
  console.log("== search without a filter: doc-1 is nearest");
  let reply = await call("Search", { collection: name, queries: packVectors([query]), k: 2, with_payload: true });
  assert.deepEqual(reply.results[0].ids, ["doc-1", "doc-2"], "unfiltered hits");

  console.log("== search with the filter lang = de: only doc-2");
  reply = await call("Search", {
    collection: name,
    queries: packVectors([query]),
    k: 10,
    filter: JSON.stringify({ must: [{ key: "lang", match: "de" }] }),
    with_payload: true,
  });
  const [result] = reply.results; // one SearchResult per query: parallel ids, scores, payloads
  const hits = result.ids.map((id, i) => ({ id, score: result.scores[i], payload: parse(result.payloads[i]) }));
  assert.deepEqual(hits.map((h) => h.id), ["doc-2"], "filtered hits");
  assert.deepEqual(hits[0].payload, { lang: "de", title: "Hallo" }, "payload of doc-2");
  assert.ok(hits[0].score > 0.9, `score ${hits[0].score}: cosine similarity, expected > 0.9`);
  assert.equal(reply.shards.answered, reply.shards.total, "every shard answered");
  console.log("   %j", hits[0]);

  console.log("== get points by id (an absent id is left out)");
  const got = await call("Get", {
    collection: name,
    ids: ["doc-3", "doc-1", "missing"],
    with_vectors: true,
    with_payload: true,
  });
  assert.deepEqual(got.points.map((p) => p.id), ["doc-3", "doc-1"], "ids read back");
  assert.deepEqual(unpackVector(got.points[0].vector), [0.0, 1.0, 0.0, 0.0], "vector of doc-3");
  assert.deepEqual(parse(got.points[1].payload), { lang: "en", title: "Hello" }, "payload of doc-1");

  console.log("== delete doc-4, count again");
  await call("Delete", { collection: name, ids: ["doc-4"] });
  assert.equal((await call("Count", { collection: name })).count, "3", "count after the delete");

  console.log("== errors are gRPC statuses: a collection that does not exist");
  await assert.rejects(call("Count", { collection: "no_such_collection" }), (err) => {
    assert.equal(err.code, grpc.status.NOT_FOUND, `status ${err.code}: ${err.details}`);
    console.log(`   NOT_FOUND: ${err.details}`);
    return true;
  });
}

try {
  console.log(`== create collection ${name} (dim 4, cosine, 2 shards)`);
  // replication_factor 0 (unset): 3, or every live node if fewer
  const info = await call("CreateCollection", {
    config: { name, dim: 4, metric: "COSINE", shards: 2 },
    wait: true,
  });
  assert.equal(info.config.name, name);
  assert.equal(info.ready, true, "collection ready");
  try {
    await run();
  } finally {
    // drop the collection even when a check failed
    console.log(`== drop collection ${name}`);
    assert.equal((await call("DropCollection", { name })).dropped, true, "dropped");
  }
  await assert.rejects(call("DescribeCollection", { name }), { code: grpc.status.NOT_FOUND });
  console.log("OK: JavaScript gRPC quickstart passed");
} finally {
  client.close();
}
