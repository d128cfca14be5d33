// The gRPC wire below the clients, with @grpc/grpc-js and raw bytes:
// ServerFeatures (a semantic version and the exact method list), Gossip,
// status codes for bad input (unknown method, malformed protobuf, a message
// over the limit, compression, missing metadata, bad JSON), KurrentDB's
// maximum-append-size-exceeded, HTTP/1.1 and gRPC side by side on one
// port, and Operations.Shutdown. After every bad request the server must
// still serve.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const kurrent = require("@kurrent/kurrentdb-client");
const { SteleServer, protocol, collect } = require("./stele_server");

const P = protocol("kurrent");
const MAX_BODY = 1 << 20;
const MAX_APPEND = 200000;

let srv, client;
before(async () => {
  srv = await new SteleServer(["--max-body", String(MAX_BODY), "--max-append-size", String(MAX_APPEND)]).start();
  client = kurrent.KurrentDBClient.connectionString(srv.conn);
});
after(async () => {
  await client.dispose();
  await srv.stop();
  srv.cleanup();
});

// A unary call with raw request bytes; resolves { err, bytes }.
function rawUnary(path, bytes, options = {}, channelOptions = {}) {
  const c = new grpc.Client(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure(), channelOptions);
  return new Promise((resolve) => {
    c.makeUnaryRequest(
      path,
      (b) => b,
      (b) => b,
      bytes,
      new grpc.Metadata(),
      options,
      (err, resp) => {
        c.close();
        resolve({ err, bytes: resp });
      },
    );
  });
}

// The server still answers: a feature query and an append/read.
async function stillServes() {
  const { err } = await rawUnary("/event_store.client.server_features.ServerFeatures/GetSupportedMethods", Buffer.alloc(0));
  assert.equal(err, null);
  const s = `alive-${randomUUID()}`;
  await client.appendToStream(s, kurrent.jsonEvent({ type: "A", data: {} }));
  assert.equal((await collect(client.readStream(s))).length, 1);
}

describe("gRPC wire", () => {
  it("ServerFeatures lists exactly the implemented methods with a semantic version", async () => {
    const { err, bytes } = await rawUnary(
      "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
      Buffer.from(new P.shared.Empty().serializeBinary()),
    );
    assert.equal(err, null);
    const m = P.features.SupportedMethods.deserializeBinary(bytes);
    assert.match(m.getEventStoreServerVersion(), /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/);
    const got = m.getMethodsList().map((x) => `${x.getServiceName()}/${x.getMethodName()}`).sort();
    assert.deepEqual(
      got,
      [
        "event_store.client.gossip.gossip/read",
        "event_store.client.operations.operations/shutdown",
        "event_store.client.operations.operations/startscavenge",
        "event_store.client.operations.operations/stopscavenge",
        "event_store.client.server_features.serverfeatures/getsupportedmethods",
        "event_store.client.streams.streams/append",
        "event_store.client.streams.streams/batchappend",
        "event_store.client.streams.streams/delete",
        "event_store.client.streams.streams/read",
        "event_store.client.streams.streams/tombstone",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/create",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/update",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/delete",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/read",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/getinfo",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/replayparked",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/list",
        "event_store.client.persistent_subscriptions.persistentsubscriptions/restartsubsystem",
        "event_store.client.projections.projections/create",
        "event_store.client.projections.projections/delete",
        "event_store.client.projections.projections/disable",
        "event_store.client.projections.projections/enable",
        "event_store.client.projections.projections/reset",
        "event_store.client.projections.projections/restartsubsystem",
        "event_store.client.projections.projections/result",
        "event_store.client.projections.projections/state",
        "event_store.client.projections.projections/statistics",
        "event_store.client.projections.projections/update",
        "event_store.client.users.users/changepassword",
        "event_store.client.users.users/create",
        "event_store.client.users.users/delete",
        "event_store.client.users.users/details",
        "event_store.client.users.users/disable",
        "event_store.client.users.users/enable",
        "event_store.client.users.users/resetpassword",
        "event_store.client.users.users/update",
        "kurrentdb.protocol.v2.streams.streamsservice/appendsession",
        "kurrentdb.protocol.v2.streams.streamsservice/append",
        "kurrentdb.protocol.v2.streams.streamsservice/appendrecords",
      ].sort(),
    );
    // Every listed method is a method of the protocol, and the persistent
    // subscription methods list the "stream" and "all" features the
    // clients check.
    for (const x of m.getMethodsList()) {
      const svc = x.getServiceName();
      if (svc.includes("persistent") && x.getMethodName() !== "restartsubsystem")
        assert.deepEqual(x.getFeaturesList(), ["stream", "all"]);
      const stubs = [
        P.streamsGrpc.StreamsService,
        P.featuresGrpc.ServerFeaturesService,
        P.gossipGrpc.GossipService,
        P.persistentGrpc.PersistentSubscriptionsService,
        P.operationsGrpc.OperationsService,
        P.projectionsGrpc.ProjectionsService,
        P.v2streamsGrpc.StreamsServiceService,
        // Newer than the client's stubs: the v2 unary Append (KurrentDB 26.x).
        { append: { path: "/kurrentdb.protocol.v2.streams.StreamsService/Append" } },
        // event_store.client.users.Users: not in this client's stubs (it has no user
        // management); its methods as KurrentDB names them (test_auth.js calls them).
        Object.fromEntries(["Create", "Update", "Delete", "Disable", "Enable", "Details",
                            "ChangePassword", "ResetPassword"].map(
          (m) => [m, { path: `/event_store.client.users.Users/${m}` }])),
      ].flatMap(
        (s) => Object.values(s),
      );
      const def = stubs.find((d) => d.path.toLowerCase() === `/${svc}/${x.getMethodName()}`);
      assert.ok(def, `${svc}/${x.getMethodName()} is a method of the protocol`);
    }
  });

  it("Gossip.Read: this node, alive, leader, on this port", async () => {
    const { err, bytes } = await rawUnary("/event_store.client.gossip.Gossip/Read", Buffer.alloc(0));
    assert.equal(err, null);
    const info = P.gossip.ClusterInfo.deserializeBinary(bytes);
    const members = info.getMembersList();
    assert.equal(members.length, 1);
    assert.equal(members[0].getIsAlive(), true);
    assert.equal(members[0].getState(), P.gossip.MemberInfo.VNodeState.LEADER);
    assert.equal(members[0].getHttpEndPoint().getPort(), srv.port);
    assert.equal(members[0].getHttpEndPoint().getAddress(), "127.0.0.1");
    assert.match(members[0].getInstanceId().getString(), /^[0-9a-f-]{36}$/);
  });

  it("an unknown method is UNIMPLEMENTED", async () => {
    const { err } = await rawUnary("/event_store.client.streams.Streams/NoSuchThing", Buffer.alloc(0));
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.match(err.details, /unknown method/);
    // A service Stele does not serve.
    const { err: e2 } = await rawUnary("/event_store.client.monitoring.Monitoring/Stats", Buffer.alloc(0));
    assert.equal(e2.code, grpc.status.UNIMPLEMENTED);
    await stillServes();
  });

  it("a malformed protobuf is INTERNAL (the gRPC spec's status for an unparsable request)", async () => {
    // Field 1 (options) as a length-delimited field claiming 100 bytes.
    const { err } = await rawUnary("/event_store.client.streams.Streams/Delete", Buffer.from([0x0a, 100, 1, 2]));
    assert.equal(err.code, grpc.status.INTERNAL);
    assert.match(err.details, /malformed protobuf/);
    const { err: e2 } = await rawUnary("/event_store.client.streams.Streams/Delete", Buffer.from([0xff, 0xff, 0xff]));
    assert.equal(e2.code, grpc.status.INTERNAL);
    await stillServes();
  });

  it("a request message over the limit is RESOURCE_EXHAUSTED", async () => {
    const big = Buffer.alloc(MAX_BODY + 100, 0);
    const { err } = await rawUnary("/event_store.client.streams.Streams/Delete", big, {}, {
      "grpc.max_send_message_length": -1,
    });
    assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(err.details, /larger than the server's limit/);
    await stillServes();
  });

  it("a compressed request is UNIMPLEMENTED (identity only)", async () => {
    const req = new P.streams.DeleteReq();
    const { err } = await rawUnary(
      "/event_store.client.streams.Streams/Delete",
      Buffer.from(req.serializeBinary()),
      {},
      { "grpc.default_compression_algorithm": 2, "grpc.default_compression_level": 2 },
    );
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    await stillServes();
  });

  it("an append over max-append-size is MaxAppendSizeExceededError, and nothing is written", async () => {
    const s = `big-${randomUUID()}`;
    const events = Array.from({ length: 8 }, () =>
      kurrent.binaryEvent({ type: "Big", data: Buffer.alloc(40000, 7) }),
    );
    for (const extra of [{}, { credentials: { username: "a", password: "b" } }]) {
      await assert.rejects(client.appendToStream(s, events, extra), (e) => {
        assert.equal(e.constructor.name, "MaxAppendSizeExceededError");
        assert.equal(e.maxAppendSize, MAX_APPEND);
        return true;
      });
    }
    await assert.rejects(collect(client.readStream(s)), (e) => e.constructor.name === "StreamNotFoundError");
  });

  it("an event without type metadata is RequiredMetadataPropertyMissingError; bad JSON data is INVALID_ARGUMENT", async () => {
    const stream = `meta-${randomUUID()}`;
    const opts = new P.streams.AppendReq();
    const o = new P.streams.AppendReq.Options();
    const id = new P.shared.StreamIdentifier();
    id.setStreamName(Buffer.from(stream));
    o.setStreamIdentifier(id);
    o.setAny(new P.shared.Empty());
    opts.setOptions(o);
    const append = (meta, data) =>
      new Promise((resolve) => {
        const c = new P.streamsGrpc.StreamsClient(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure());
        const call = c.append((err, resp) => {
          c.close();
          resolve({ err, resp });
        });
        call.write(opts);
        const m = new P.streams.AppendReq.ProposedMessage();
        const uuid = new P.shared.UUID();
        uuid.setString(randomUUID());
        m.setId(uuid);
        for (const [k, v] of Object.entries(meta)) m.getMetadataMap().set(k, v);
        m.setData(data);
        const r = new P.streams.AppendReq();
        r.setProposedMessage(m);
        call.write(r);
        call.end();
      });
    let { err } = await append({ "content-type": "application/json" }, Buffer.from("{}"));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(err.metadata.get("exception")[0], "missing-required-metadata-property");
    assert.equal(err.metadata.get("required-metadata-properties")[0], "type");
    ({ err } = await append({ type: "T", "content-type": "application/json" }, Buffer.from("{not json")));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /not JSON/);
    const ok = await append({ type: "T", "content-type": "application/json" }, Buffer.from('{"ok":true}'));
    assert.equal(ok.err, null);
    assert.equal(ok.resp.getSuccess().getCurrentRevision(), "0");
  });

  it("ULID event ids (seed 004): accepted on append, the same 128 bits read back as a UUID (HTTP keeps the ULID form); other data under a written id is refused", async () => {
    const CROCK = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    const ulid = () => {
      let n = (BigInt(Date.now()) << 80n) | BigInt("0x" + randomUUID().replace(/-/g, "").slice(0, 20));
      let t = "";
      for (let k = 0; k < 26; k++) {
        t = CROCK[Number(n & 31n)] + t;
        n >>= 5n;
      }
      return t;
    };
    const uuidOf = (u) => {
      let n = 0n;
      for (const ch of u) n = n * 32n + BigInt(CROCK.indexOf(ch));
      const h = n.toString(16).padStart(32, "0");
      return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
    };
    const s = `ulid-${randomUUID()}`;
    const u1 = ulid();
    const plain = randomUUID();
    await client.appendToStream(s, [
      kurrent.jsonEvent({ id: u1, type: "A", data: { i: 1 } }),
      kurrent.jsonEvent({ id: plain, type: "B", data: { i: 2 } }),
    ]);
    // An HTTP append with a ULID, read over gRPC.
    const u2 = ulid();
    const r = await srv.request("POST", `/streams/${s}`, { body: JSON.stringify([{ id: u2, type: "C", data: { i: 3 } }]) });
    assert.equal(r.status, 201);
    const got = (await collect(client.readStream(s))).map((e) => e.event.id);
    assert.deepEqual(got, [uuidOf(u1), plain, uuidOf(u2)]);
    const http = (await srv.request("GET", `/streams/${s}`)).json;
    assert.deepEqual(http.events.map((e) => e.id), [u1, plain, u2]);
    // The identical retry (ULID or its UUID) is idempotent; other data under the id is refused.
    await client.appendToStream(s, [kurrent.jsonEvent({ id: u2, type: "C", data: { i: 3 } })]);
    await client.appendToStream(s, [kurrent.jsonEvent({ id: uuidOf(u2), type: "C", data: { i: 3 } })]);
    await assert.rejects(client.appendToStream(s, [kurrent.jsonEvent({ id: u2, type: "C", data: { i: 4 } })]));
    assert.equal((await collect(client.readStream(s))).length, 3);
    // A malformed id (neither a UUID nor a ULID) is refused; nothing is written.
    await assert.rejects(client.appendToStream(s, [kurrent.jsonEvent({ id: "8" + u1.slice(1), type: "X", data: {} })]));
    assert.equal((await collect(client.readStream(s))).length, 3);
    await stillServes();
  });

  it("HTTP/1.1 and gRPC share the port", async () => {
    const s = `both-${randomUUID()}`;
    await client.appendToStream(s, kurrent.jsonEvent({ type: "G", data: { via: "grpc" } }));
    const r = await srv.request("POST", `/streams/${s}`, { body: '[{"type":"H","data":{"via":"http"}}]' });
    assert.equal(r.status, 201);
    const h = await srv.request("GET", `/streams/${s}`);
    assert.deepEqual(h.json.events.map((e) => e.type), ["G", "H"]);
    const g = await collect(client.readStream(s));
    assert.deepEqual(g.map((e) => e.event.type), ["G", "H"]);
  });

  it("Operations.StartScavenge / StopScavenge run the server's scavenge (the one /admin/scavenge shows)", async () => {
    const O = P.operations;
    const start = async () => {
      const req = new O.StartScavengeReq();
      req.setOptions(new O.StartScavengeReq.Options());
      const { err, bytes } = await rawUnary("/event_store.client.operations.Operations/StartScavenge", Buffer.from(req.serializeBinary()));
      assert.equal(err, null);
      return O.ScavengeResp.deserializeBinary(bytes);
    };
    const stop = async (id) => {
      const req = new O.StopScavengeReq();
      const opts = new O.StopScavengeReq.Options();
      opts.setScavengeId(id);
      req.setOptions(opts);
      const r = await rawUnary("/event_store.client.operations.Operations/StopScavenge", Buffer.from(req.serializeBinary()));
      return { err: r.err, resp: r.bytes && O.ScavengeResp.deserializeBinary(r.bytes) };
    };
    const status = async () => {
      const r = await srv.request("GET", "/admin/scavenge");
      assert.equal(r.status, 200);
      return r.json.scavenge;
    };
    const finished = async () => {
      for (;;) {
        const st = await status();
        if (st.status !== "running") return st;
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    // Something to scavenge: a deleted stream.
    const s = `scav-${randomUUID()}`;
    await client.appendToStream(s, kurrent.jsonEvent({ type: "A", data: { x: 1 } }));
    await client.deleteStream(s);

    const first = await start();
    assert.equal(first.getScavengeResult(), O.ScavengeResp.ScavengeResult.STARTED);
    const id = first.getScavengeId();
    assert.match(id, /^[1-9][0-9]*$/);
    // A second start while it runs reports that one; once it is done, a new one.
    const again = await start();
    if (again.getScavengeResult() === O.ScavengeResp.ScavengeResult.INPROGRESS) assert.equal(again.getScavengeId(), id);
    else {
      assert.equal(again.getScavengeResult(), O.ScavengeResp.ScavengeResult.STARTED);
      assert.equal(again.getScavengeId(), String(Number(id) + 1));
    }
    const done = await finished();
    assert.equal(String(done.id), again.getScavengeId());
    assert.equal(done.status, "done");

    // Stopping a scavenge that is not running: KurrentDB's scavenge-not-found.
    for (const bad of [again.getScavengeId(), "nope", "", "0", "999"]) {
      const { err } = await stop(bad);
      assert.ok(err, `stop ${JSON.stringify(bad)} fails`);
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(err.metadata.get("exception")[0], "scavenge-not-found");
      assert.equal(err.metadata.get("scavenge-id")[0] ?? "", bad);
    }
    // Start and stop at once: Stopped (or not found if it already finished).
    const third = await start();
    assert.equal(third.getScavengeResult(), O.ScavengeResp.ScavengeResult.STARTED);
    const { err, resp } = await stop(third.getScavengeId());
    const end = await finished();
    assert.equal(String(end.id), third.getScavengeId());
    if (err) {
      assert.equal(err.code, grpc.status.NOT_FOUND);
      assert.equal(end.status, "done");
    } else {
      assert.equal(resp.getScavengeResult(), O.ScavengeResp.ScavengeResult.STOPPED);
      assert.equal(resp.getScavengeId(), third.getScavengeId());
      assert.ok(end.status === "stopped" || end.status === "done", end.status);
    }
    await stillServes();
  });

  it("Operations.Shutdown stops the server cleanly", async () => {
    const { err } = await rawUnary("/event_store.client.operations.Operations/Shutdown", Buffer.alloc(0));
    assert.equal(err, null);
    const { code } = await srv.exited;
    assert.equal(code, 0);
  });
});
