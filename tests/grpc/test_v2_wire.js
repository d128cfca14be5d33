// The v2 streams service (kurrentdb.protocol.v2.streams.StreamsService) on
// the wire, below the client, with @grpc/grpc-js and the protocol's
// generated messages: ServerFeatures lists it, malformed and invalid
// messages get clear statuses with KurrentDB's v2 error details (decoded
// from grpc-status-details-bin), nothing is written after any of them, and
// the server keeps serving. Properties become the events' JSON metadata.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const { SteleServer, protocol } = require("./stele_server");

const P = protocol("kurrent");
const V2 = P.v2streams;
const E = P.v2errors;
const SESSION = "/kurrentdb.protocol.v2.streams.StreamsService/AppendSession";
const RECORDS = "/kurrentdb.protocol.v2.streams.StreamsService/AppendRecords";
const MAX_EVENT = 100000;
const MAX_APPEND = 300000;

let srv;
before(async () => {
  srv = await new SteleServer(["--max-event-size", String(MAX_EVENT), "--max-append-size", String(MAX_APPEND)]).start();
});
after(async () => {
  const code = await srv.stop();
  assert.equal(code, 0, "the server stops cleanly");
  srv.cleanup();
});

const uniq = (p) => `${p}-${randomUUID().slice(0, 8)}`;
const channel = () => new grpc.Client(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure());

function unary(path, bytes) {
  const c = channel();
  return new Promise((resolve) => {
    c.makeUnaryRequest(path, (b) => b, (b) => b, Buffer.from(bytes), new grpc.Metadata(), {}, (err, resp) => {
      c.close();
      resolve({ err, bytes: resp });
    });
  });
}

function session(messages) {
  const c = channel();
  return new Promise((resolve) => {
    const call = c.makeClientStreamRequest(SESSION, (b) => b, (b) => b, new grpc.Metadata(), {}, (err, resp) => {
      c.close();
      resolve({ err, bytes: resp });
    });
    for (const m of messages) call.write(Buffer.from(m));
    call.end();
  });
}

// The v2 error details of a failed call: [type name, decoded object].
function details(err) {
  const raw = err.metadata.get("grpc-status-details-bin")[0];
  assert.ok(Buffer.isBuffer(raw), "the error carries grpc-status-details-bin");
  const st = P.status.Status.deserializeBinary(new Uint8Array(raw));
  assert.equal(st.getCode(), err.code, "the details' status is the call's");
  const any = st.getDetails();
  const name = any.getTypeUrl().replace("type.googleapis.com/kurrentdb.protocol.v2.streams.errors.", "");
  return [name, E[name].deserializeBinary(any.getValue_asU8()).toObject()];
}

function record({ stream, type = "T", data = '{"a":1}', format = V2.SchemaFormat.SCHEMA_FORMAT_JSON, id, props } = {}) {
  const r = new V2.AppendRecord();
  if (stream !== undefined) r.setStream(stream);
  if (id !== undefined) r.setRecordId(id);
  if (type !== null) {
    const s = new V2.SchemaInfo();
    s.setName(type);
    s.setFormat(format);
    r.setSchema(s);
  }
  r.setData(Buffer.from(data));
  for (const [k, v] of Object.entries(props || {})) r.getPropertiesMap().set(k, v);
  return r;
}

function recordsReq(records, checks = []) {
  const q = new V2.AppendRecordsRequest();
  for (const r of records) q.addRecords(r);
  for (const [stream, expected] of checks) {
    const c = new V2.ConsistencyCheck();
    if (stream !== null) {
      const s = new V2.ConsistencyCheck.StreamStateCheck();
      s.setStream(stream);
      s.setExpectedState(String(expected));
      c.setStreamState(s);
    }
    q.addChecks(c);
  }
  return q.serializeBinary();
}

function appendReq(stream, records, expected) {
  const q = new V2.AppendRequest();
  q.setStream(stream);
  for (const r of records) q.addRecords(r);
  if (expected !== undefined) q.setExpectedRevision(String(expected));
  return q.serializeBinary();
}

async function eventsOf(stream) {
  const r = await srv.request("GET", `/streams/${encodeURIComponent(stream)}`);
  if (r.status === 404) return [];
  assert.equal(r.status, 200, r.raw.toString());
  return r.json.events;
}

// A call that must fail with `code` and a message matching `re`; then
// nothing is in `streams` and the server still appends.
async function failsWith(p, code, re, streams) {
  const { err } = await p;
  assert.ok(err, "the call fails");
  assert.equal(err.code, code, `status ${err.code} (${err.details})`);
  assert.match(err.details, re);
  for (const s of streams) assert.deepEqual(await eventsOf(s), [], `nothing written to ${s}`);
  const ok = uniq("Alive");
  const { err: e2 } = await unary(RECORDS, recordsReq([record({ stream: ok })]));
  assert.equal(e2, null);
  return err;
}

describe("v2 streams service on the wire", () => {
  it("ServerFeatures lists AppendSession, AppendRecords and Append", async () => {
    const { err, bytes } = await unary(
      "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
      new P.shared.Empty().serializeBinary(),
    );
    assert.equal(err, null);
    const m = P.features.SupportedMethods.deserializeBinary(bytes);
    const got = m.getMethodsList().map((x) => `${x.getServiceName()}/${x.getMethodName()}`);
    assert.ok(got.includes("kurrentdb.protocol.v2.streams.streamsservice/appendsession"), got.join(" "));
    assert.ok(got.includes("kurrentdb.protocol.v2.streams.streamsservice/appendrecords"), got.join(" "));
    assert.ok(got.includes("kurrentdb.protocol.v2.streams.streamsservice/append"), got.join(" "));
  });

  it("a success answer: positions and revisions; properties are the events' JSON metadata", async () => {
    const a = uniq("A"), b = uniq("B");
    const Value = require("google-protobuf/google/protobuf/struct_pb").Value;
    const props = {
      who: Value.fromJavaScript("ann"),
      n: Value.fromJavaScript(3.5),
      ok: Value.fromJavaScript(true),
      nested: Value.fromJavaScript({ k: [1, null, "x"] }),
    };
    const { err, bytes } = await unary(
      RECORDS,
      recordsReq([record({ stream: a, props }), record({ stream: b, format: V2.SchemaFormat.SCHEMA_FORMAT_BYTES, data: "\u0001raw" }), record({ stream: a })]),
    );
    assert.equal(err, null);
    const resp = V2.AppendRecordsResponse.deserializeBinary(bytes);
    assert.deepEqual(resp.getRevisionsList().map((r) => [r.getStream(), r.getRevision()]), [[a, "1"], [b, "0"]]);
    const ea = await eventsOf(a), eb = await eventsOf(b);
    assert.deepEqual(ea[0].metadata, { who: "ann", n: 3.5, ok: true, nested: { k: [1, null, "x"] } });
    assert.deepEqual(ea[0].data, { a: 1 });
    assert.equal(ea[0].type, "T");
    assert.equal(Buffer.from(eb[0].dataBase64, "base64").toString(), "\u0001raw");
    assert.equal(ea[1].position, Number(resp.getPosition()));
    assert.equal(eb[0].position, ea[0].position + 1);
    assert.equal(ea[1].position, ea[0].position + 2);

    const s = await session([appendReq(a, [record({})], 1), appendReq(uniq("C"), [record({}), record({})])]);
    assert.equal(s.err, null);
    const sr = V2.AppendSessionResponse.deserializeBinary(s.bytes);
    assert.deepEqual(sr.getOutputList().map((o) => [o.getStream(), o.getStreamRevision()]).slice(0, 1), [[a, "2"]]);
    assert.equal(sr.getOutputList()[1].getStreamRevision(), "1");
    assert.equal(sr.getPosition(), sr.getOutputList()[1].getPosition());
  });

  it("Append (unary, one stream): an AppendResponse, and the session's errors", async () => {
    const a = uniq("U");
    const APPEND = "/kurrentdb.protocol.v2.streams.StreamsService/Append";
    let r = await unary(APPEND, appendReq(a, [record({}), record({})], -1));
    assert.equal(r.err, null);
    const resp = V2.AppendResponse.deserializeBinary(r.bytes);
    assert.deepEqual([resp.getStream(), resp.getStreamRevision()], [a, "1"]);
    const ev = await eventsOf(a);
    assert.equal(resp.getPosition(), String(ev[1].position));
    const err = await failsWith(unary(APPEND, appendReq(a, [record({})], 0)), grpc.status.FAILED_PRECONDITION, /expected revision 0, current revision 1/, []);
    assert.deepEqual(details(err), ["StreamRevisionConflictErrorDetails", { stream: a, expectedRevision: "0", actualRevision: "1" }]);
    await failsWith(unary(APPEND, appendReq(a, [])), grpc.status.INVALID_ARGUMENT, /the append has no records/, []);
    assert.equal((await eventsOf(a)).length, 2);
  });

  it("malformed protobuf: INTERNAL, for both methods", async () => {
    await failsWith(unary(RECORDS, Buffer.from([0x0a, 0x05, 0x01])), grpc.status.INTERNAL, /malformed protobuf/, []);
    await failsWith(session([Buffer.from([0x12, 0xff, 0xff])]), grpc.status.INTERNAL, /malformed protobuf/, []);
  });

  it("invalid records: INVALID_ARGUMENT with the reason", async () => {
    const a = uniq("Bad"), b = uniq("Good");
    const good = record({ stream: b });
    const cases = [
      [[good, record({})], /record 1 names no stream/],
      [[good, record({ stream: a, type: null })], /record 1: schema.name .* is required/],
      [[good, record({ stream: a, type: "" })], /record 1: schema.name/],
      [[good, record({ stream: a, format: V2.SchemaFormat.SCHEMA_FORMAT_UNSPECIFIED })], /record 1: schema.format must be/],
      [[good, record({ stream: a, data: "{not json" })], /record 1: the schema format is JSON but the data is not JSON/],
      [[good, record({ stream: a, id: "not-a-uuid" })], /record 1: record_id "not-a-uuid" is not a UUID/],
      [[good, record({ stream: a, props: { x: require("google-protobuf/google/protobuf/struct_pb").Value.fromJavaScript(NaN) } })], /not finite/],
    ];
    for (const [recs, re] of cases) {
      const r = await unary(RECORDS, recordsReq(recs));
      assert.ok(r.err, `${re} fails`);
      await failsWith(Promise.resolve(r), grpc.status.INVALID_ARGUMENT, re, [a, b]);
    }
  });

  it("invalid checks: INVALID_ARGUMENT with the reason", async () => {
    const a = uniq("Bad");
    const recs = [record({ stream: a })];
    await failsWith(unary(RECORDS, recordsReq(recs, [[null, 0]])), grpc.status.INVALID_ARGUMENT, /check 0 is of a kind this server does not know/, [a]);
    await failsWith(unary(RECORDS, recordsReq(recs, [["", 0]])), grpc.status.INVALID_ARGUMENT, /check 0 names no stream/, [a]);
    await failsWith(unary(RECORDS, recordsReq(recs, [[a, -3]])), grpc.status.INVALID_ARGUMENT, /expected state -3 is not/, [a]);
    await failsWith(unary(RECORDS, recordsReq(recs, [[a, -2], ["x", 1], [a, 0]])), grpc.status.INVALID_ARGUMENT, /checks 0 and 2 both check stream/, [a]);
    await failsWith(unary(RECORDS, recordsReq([])), grpc.status.INVALID_ARGUMENT, /at least one record/, []);
    // More streams than one commit may name (1,000).
    const many = [];
    for (let i = 0; i < 1001; i++) many.push(record({ stream: `${a}-${i}`, data: "{}" }));
    await failsWith(unary(RECORDS, recordsReq(many)), grpc.status.INVALID_ARGUMENT, /names more than 1000 streams \(record 1000/, [`${a}-0`, `${a}-1000`]);
    // Many records over few streams are fine (one commit, 2,000 events).
    const few = [];
    for (let i = 0; i < 2000; i++) few.push(record({ stream: `${a}-x${i % 3}`, data: `{"i":${i}}` }));
    const { err, bytes } = await unary(RECORDS, recordsReq(few));
    assert.equal(err, null);
    const resp = V2.AppendRecordsResponse.deserializeBinary(bytes);
    assert.deepEqual(resp.getRevisionsList().map((r) => [r.getStream(), r.getRevision()]), [[`${a}-x0`, "666"], [`${a}-x1`, "666"], [`${a}-x2`, "665"]]);
  });

  it("sessions: no requests, a stream twice, no records, bad expected revision", async () => {
    const a = uniq("S"), b = uniq("T");
    await failsWith(session([]), grpc.status.FAILED_PRECONDITION, /without any append request/, []);
    const err = await failsWith(
      session([appendReq(a, [record({})]), appendReq(b, [record({})]), appendReq(a, [record({})])]),
      grpc.status.ABORTED,
      /appears twice/,
      [a, b],
    );
    assert.deepEqual(details(err), ["StreamAlreadyInAppendSessionErrorDetails", { stream: a }]);
    await failsWith(session([appendReq(a, []), appendReq(b, [])]), grpc.status.INVALID_ARGUMENT, /no records/, [a, b]);
    await failsWith(session([appendReq(a, [record({})], -7)]), grpc.status.INVALID_ARGUMENT, /expected revision -7 is not/, [a]);
    await failsWith(session([appendReq("", [record({})])]), grpc.status.INVALID_ARGUMENT, /names no stream/, []);
  });

  it("sizes: a record over the event limit, an append over the append limit", async () => {
    const a = uniq("Big"), b = uniq("Small");
    const big = "x".repeat(MAX_EVENT + 10);
    let err = await failsWith(
      unary(RECORDS, recordsReq([record({ stream: b }), record({ stream: a, format: V2.SchemaFormat.SCHEMA_FORMAT_BYTES, data: big, id: "0d9a1c32-7f0c-4d3b-9a57-5b3a3c6b1e01" })])),
      grpc.status.INVALID_ARGUMENT,
      /over the limit/,
      [a, b],
    );
    const [name, d] = details(err);
    assert.equal(name, "AppendRecordSizeExceededErrorDetails");
    assert.deepEqual([d.stream, d.recordId, d.maxSize], [a, "0d9a1c32-7f0c-4d3b-9a57-5b3a3c6b1e01", MAX_EVENT]);
    assert.ok(d.size > MAX_EVENT);
    const part = "y".repeat(MAX_EVENT - 100);
    const many = [0, 1, 2, 3].map(() => record({ stream: a, format: V2.SchemaFormat.SCHEMA_FORMAT_BYTES, data: part }));
    err = await failsWith(unary(RECORDS, recordsReq(many)), grpc.status.ABORTED, /over the limit/, [a]);
    const [n2, d2] = details(err);
    assert.equal(n2, "AppendTransactionSizeExceededErrorDetails");
    assert.equal(d2.maxSize, MAX_APPEND);
    err = await failsWith(session([appendReq(a, many.slice(0, 2)), appendReq(b, many.slice(2))]), grpc.status.ABORTED, /over the limit/, [a, b]);
    assert.equal(details(err)[0], "AppendTransactionSizeExceededErrorDetails");
  });

  it("conflicts carry their details: revision conflict, tombstoned, consistency violations", async () => {
    const a = uniq("C"), t = uniq("Dead");
    assert.equal((await unary(RECORDS, recordsReq([record({ stream: a }), record({ stream: t })]))).err, null);
    assert.equal((await srv.request("DELETE", `/streams/${t}?tombstone=true`)).status < 300, true);
    let err = await failsWith(session([appendReq(a, [record({})], 5)]), grpc.status.FAILED_PRECONDITION, /expected revision 5, current revision 0/, []);
    assert.deepEqual(details(err), ["StreamRevisionConflictErrorDetails", { stream: a, expectedRevision: "5", actualRevision: "0" }]);
    err = await failsWith(session([appendReq(t, [record({})])]), grpc.status.FAILED_PRECONDITION, /tombstoned/, []);
    assert.deepEqual(details(err), ["StreamTombstonedErrorDetails", { stream: t }]);
    const w = uniq("W");
    err = await failsWith(unary(RECORDS, recordsReq([record({ stream: w })], [[a, -1], [t, -2]])), grpc.status.FAILED_PRECONDITION, /consistency check/, [w]);
    const [name, d] = details(err);
    assert.equal(name, "AppendConsistencyViolationErrorDetails");
    const v = d.violationsList.map((x) => [x.checkIndex, x.streamState.stream, x.streamState.expectedState, x.streamState.actualState]);
    v.sort((p, q) => p[0] - q[0]);
    assert.deepEqual(v, [[0, a, "-1", "0"], [1, t, "-2", "-100"]]);
  });
});
