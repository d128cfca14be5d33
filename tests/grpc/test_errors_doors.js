// One error vocabulary on every door (docs/errors.md, src/util/errors.c):
// against one real `stele serve`, the same failure is caused once over the
// HTTP API and once over gRPC (raw @grpc/grpc-js calls, so the status, the
// status message and the trailers are seen as sent), and both answers are
// compared with the table in docs/errors.md (which test_errors keeps equal
// to the C table): the HTTP status and body code, the gRPC status, the
// message's "CODE: " prefix and KurrentDB's `exception` trailer.
//
// Failures: wrong expected revision, deleted (tombstoned) stream, stream
// not found, too large, a bad event id, an event id conflict, access
// denied (a user without $w on a stream whose $acl names $admins).
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const fs = require("node:fs");
const path = require("node:path");
const { randomUUID } = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const { SteleServer, protocol } = require("./stele_server");

const P = protocol("kurrent");
const MAX_APPEND = 20000;
const ADMIN_PW = `adm-${randomUUID().slice(0, 8)}`;
const USER_PW = `bob-${randomUUID().slice(0, 8)}`;

// docs/errors.md's table: code -> { http, grpc, exception }.
function vocabulary() {
  const md = fs.readFileSync(path.resolve(__dirname, "../../docs/errors.md"), "utf8");
  const table = new Map();
  for (const line of md.split("\n")) {
    if (!line.startsWith("| `")) continue;
    const cells = line.split(" | ").map((c) => c.replace(/^\| /, "").replace(/ \|$/, ""));
    const code = cells[0].replace(/`/g, "");
    table.set(code, {
      http: Number(cells[2]),
      grpc: Number(cells[3].split(" ")[0]),
      exception: cells[4] === "-" ? null : cells[4].replace(/`/g, ""),
    });
  }
  return table;
}

const V = vocabulary();
let srv;

before(async () => {
  srv = new SteleServer(["--max-append-size", String(MAX_APPEND)]);
  process.env.STELE_ADMIN_PASSWORD = ADMIN_PW;
  try {
    await srv.start();
  } finally {
    delete process.env.STELE_ADMIN_PASSWORD;
  }
  const r = await http("PUT", "/users/bob", { password: USER_PW, groups: [] });
  assert.equal(r.status, 201, `user bob: ${r.raw}`);
});
after(async () => {
  await srv.stop();
  srv.cleanup();
});

function basic(user, pw) {
  return "Basic " + Buffer.from(`${user}:${pw}`).toString("base64");
}

function http(method, p, body, user = "admin", pw = ADMIN_PW, headers = {}) {
  return srv.request(method, p, {
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    headers: { authorization: basic(user, pw), ...headers },
  });
}

// A gRPC call's failure: { code, details, exception } (null if it succeeded).
function grpcFailure(err) {
  if (!err) return null;
  const ex = err.metadata && err.metadata.get("exception")[0];
  return { code: err.code, details: err.details, exception: ex === undefined ? null : String(ex) };
}

function channel() {
  return new grpc.Client(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure());
}

function callMeta(user, pw) {
  const m = new grpc.Metadata();
  m.set("authorization", basic(user, pw));
  return m;
}

function streamId(name) {
  const s = new P.shared.StreamIdentifier();
  s.setStreamName(Buffer.from(name));
  return s;
}

// Streams.Delete (or Tombstone) with an expected revision (a number) or "any".
function grpcDelete(stream, expected, { tombstone = false } = {}) {
  const Req = tombstone ? P.streams.TombstoneReq : P.streams.DeleteReq;
  const o = new Req.Options();
  o.setStreamIdentifier(streamId(stream));
  if (expected === "any") o.setAny(new P.shared.Empty());
  else o.setRevision(String(expected)); // a uint64 goes as a string (jstype)
  const req = new Req();
  req.setOptions(o);
  const c = channel();
  return new Promise((resolve) => {
    c.makeUnaryRequest(`/event_store.client.streams.Streams/${tombstone ? "Tombstone" : "Delete"}`,
      (m) => Buffer.from(m.serializeBinary()), (b) => b, req, callMeta("admin", ADMIN_PW), {},
      (err) => {
        c.close();
        resolve(grpcFailure(err));
      });
  });
}

// Streams.Append (client streaming): options, then one message per event
// { id, data }. Resolves the failure, or { ok: AppendResp }.
function grpcAppend(stream, events, { user = "admin", pw = ADMIN_PW } = {}) {
  const c = channel();
  return new Promise((resolve) => {
    const call = c.makeClientStreamRequest("/event_store.client.streams.Streams/Append",
      (m) => Buffer.from(m.serializeBinary()), (b) => P.streams.AppendResp.deserializeBinary(b),
      callMeta(user, pw), {},
      (err, resp) => {
        c.close();
        resolve(err ? grpcFailure(err) : { ok: resp });
      });
    const o = new P.streams.AppendReq.Options();
    o.setStreamIdentifier(streamId(stream));
    o.setAny(new P.shared.Empty());
    const first = new P.streams.AppendReq();
    first.setOptions(o);
    call.write(first);
    for (const e of events) {
      const pm = new P.streams.AppendReq.ProposedMessage();
      const id = new P.shared.UUID();
      id.setString(e.id);
      pm.setId(id);
      pm.getMetadataMap().set("type", "E").set("content-type", "application/json");
      pm.setData(Buffer.from(e.data || "{}"));
      const m = new P.streams.AppendReq();
      m.setProposedMessage(pm);
      call.write(m);
    }
    call.end();
  });
}

function httpAppend(stream, events, { expected, user, pw } = {}) {
  const body = { events: events.map((e) => ({ id: e.id, type: "E", data: JSON.parse(e.data || "{}") })) };
  if (expected !== undefined) body.expectedRevision = expected;
  return http("POST", `/streams/${stream}`, body, user, pw);
}

// Both doors answered `code` as the table says.
function sameCode(code, httpResp, g) {
  const row = V.get(code);
  assert.ok(row, `${code} is in docs/errors.md`);
  assert.equal(httpResp.status, row.http, `HTTP status of ${code}: ${httpResp.raw}`);
  assert.equal(httpResp.json && httpResp.json.error && httpResp.json.error.code, code,
               `HTTP body code: ${httpResp.raw}`);
  assert.ok(g, `the gRPC call failed (${code})`);
  assert.equal(g.code, row.grpc, `gRPC status of ${code}: ${g.details}`);
  assert.ok(g.details.startsWith(`${code}: `), `gRPC message starts with "${code}: ": ${g.details}`);
  assert.equal(g.exception, row.exception, `KurrentDB exception of ${code}`);
}

function ev(data) {
  return { id: randomUUID(), data };
}

describe("the same failure gives the same code over HTTP and gRPC", () => {
  it("wrong expected revision (a delete expecting revision 5 of a 1-event stream)", async () => {
    const s = `Wrong-${randomUUID()}`;
    assert.equal((await httpAppend(s, [ev()])).status, 201);
    const h = await http("DELETE", `/streams/${s}`, undefined, "admin", ADMIN_PW,
                         { "stele-expected-revision": "5" });
    sameCode("WRONG_EXPECTED_REVISION", h, await grpcDelete(s, 5));
    assert.equal(h.json.error.currentRevision, 0, "HTTP gives the current revision");
  });

  it("deleted stream (a tombstoned stream deleted again)", async () => {
    const s = `Tomb-${randomUUID()}`;
    assert.equal((await httpAppend(s, [ev()])).status, 201);
    assert.equal((await http("DELETE", `/streams/${s}?tombstone=true`)).status, 204);
    const h = await http("DELETE", `/streams/${s}`);
    sameCode("STREAM_DELETED", h, await grpcDelete(s, "any"));
    // Appending to it: HTTP says STREAM_DELETED, gRPC the same.
    sameCode("STREAM_DELETED", await httpAppend(s, [ev()]), await grpcAppend(s, [ev()]));
  });

  it("stream not found (deleting a stream never written)", async () => {
    const s = `Never-${randomUUID()}`;
    sameCode("STREAM_NOT_FOUND", await http("DELETE", `/streams/${s}`), await grpcDelete(s, "any"));
  });

  it("too large (an append over --max-append-size)", async () => {
    const s = `Big-${randomUUID()}`;
    const big = JSON.stringify({ x: "y".repeat(MAX_APPEND) });
    const g = await grpcAppend(s, [ev(big)]);
    sameCode("TOO_LARGE", await httpAppend(s, [ev(big)]), g);
  });

  it("a bad event id", async () => {
    const s = `BadId-${randomUUID()}`;
    const bad = { id: "not-a-uuid", data: "{}" };
    sameCode("INVALID_ARGUMENT", await httpAppend(s, [bad]), await grpcAppend(s, [bad]));
  });

  it("an event id used by another event", async () => {
    const e = ev('{"n":1}');
    assert.equal((await httpAppend(`IdA-${randomUUID()}`, [e])).status, 201);
    const other = { id: e.id, data: '{"n":2}' };
    sameCode("ID_CONFLICT", await httpAppend(`IdB-${randomUUID()}`, [other]),
             await grpcAppend(`IdC-${randomUUID()}`, [other]));
  });

  it("access denied (a user without $w on the stream)", async () => {
    const s = `Locked-${randomUUID()}`;
    const m = await http("PUT", `/streams/${s}/metadata`, { $acl: { $w: "$admins" } });
    assert.ok(m.status === 200 || m.status === 201, `set $acl: ${m.status} ${m.raw}`);
    const h = await httpAppend(s, [ev()], { user: "bob", pw: USER_PW });
    sameCode("ACCESS_DENIED", h, await grpcAppend(s, [ev()], { user: "bob", pw: USER_PW }));
  });

  it("nothing was written by any of the failures", async () => {
    const r = await http("GET", "/all?limit=1000");
    assert.equal(r.status, 200, r.raw);
    const streams = new Set((r.json.events || []).map((e) => e.stream.split("-")[0]));
    for (const prefix of ["Big", "BadId", "IdB", "IdC"])
      assert.ok(!streams.has(prefix), `no event in a ${prefix}- stream`);
  });
});
