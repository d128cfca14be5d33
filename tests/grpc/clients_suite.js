// The suite both client tests run (test_kurrentdb_client.js,
// test_eventstore_client.js: one client per process, since both packages
// register the same global protobuf names).
//
// The official KurrentDB / EventStoreDB Node.js clients against a real
// `stele serve`: appends with every expected-revision form (BatchAppend and
// Append), reads of streams and $all in both directions with counts and
// filters, missing, deleted and tombstoned streams, subscriptions, and
// events written over HTTP read back over gRPC and the other way round,
// byte for byte. Every check runs with both clients:
//   @kurrent/kurrentdb-client 1.x (appends over grpc-js, reads through its
//     Rust core: tonic/hyper), and
//   @eventstore/db-client 6.x (everything over grpc-js).
"use strict";

module.exports = function suite(which) {

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const { SteleServer, collect, waitFor } = require("./stele_server");

// What differs between the two clients, behind one shape.
const CLIENTS =
  which === "kurrent"
    ? [
        {
          name: "@kurrent/kurrentdb-client",
          lib: require("@kurrent/kurrentdb-client"),
          connect: (srv, q = "") => require("@kurrent/kurrentdb-client").KurrentDBClient.connectionString(srv.conn + q),
          expectOpt: (v) => ({ streamState: v }),
          wev: (e) => ({ expected: e.expectedState, actual: e.actualState }),
          filteredReads: true,
        },
      ]
    : [
        {
          name: "@eventstore/db-client",
          lib: require("@eventstore/db-client"),
          connect: (srv, q = "") => require("@eventstore/db-client").EventStoreDBClient.connectionString(srv.esdbConn + q),
          expectOpt: (v) => ({ expectedRevision: v }),
          wev: (e) => ({ expected: e.expectedVersion, actual: e.actualVersion }),
          // 6.x sends readAll without its filter option (no_filter): only
          // subscriptions are filtered with this client.
          filteredReads: false,
        },
      ];

let srv;
before(async () => {
  srv = await new SteleServer().start();
});
after(async () => {
  const code = await srv.stop();
  assert.equal(code, 0, "the server stops cleanly");
  srv.cleanup();
});

const uniq = (p) => `${p}-${randomUUID().slice(0, 8)}`;

for (const C of CLIENTS) {
  const { jsonEvent, binaryEvent, START, END, FORWARDS, BACKWARDS, ANY, NO_STREAM, STREAM_EXISTS } = C.lib;

  describe(C.name, () => {
    let client;
    before(() => {
      client = C.connect(srv);
    });
    after(async () => {
      await client.dispose();
    });

    // ---------------------------------------------------------------- appends

    for (const mode of ["BatchAppend", "Append"]) {
      // The clients use BatchAppend when the server lists it; with per-call
      // credentials they fall back to the streaming Append.
      const extra = mode === "Append" ? { credentials: { username: "admin", password: "changeit" } } : {};

      it(`${mode}: every expected-revision form, and WrongExpectedVersionError`, async () => {
        const s = uniq("order");
        const ev = (t) => jsonEvent({ type: t, data: { t } });
        let r = await client.appendToStream(s, ev("a"), { ...C.expectOpt(NO_STREAM), ...extra });
        assert.equal(r.success, true);
        assert.equal(r.nextExpectedRevision, 0n);
        assert.ok(r.position && r.position.commit === r.position.prepare);
        r = await client.appendToStream(s, [ev("b"), ev("c")], { ...C.expectOpt(0n), ...extra });
        assert.equal(r.nextExpectedRevision, 2n);
        r = await client.appendToStream(s, ev("d"), { ...C.expectOpt(STREAM_EXISTS), ...extra });
        assert.equal(r.nextExpectedRevision, 3n);
        r = await client.appendToStream(s, ev("e"), { ...C.expectOpt(ANY), ...extra });
        assert.equal(r.nextExpectedRevision, 4n);

        // no_stream on an existing stream
        await assert.rejects(client.appendToStream(s, ev("x"), { ...C.expectOpt(NO_STREAM), ...extra }), (e) => {
          assert.equal(e.constructor.name, "WrongExpectedVersionError");
          assert.deepEqual(C.wev(e), { expected: "no_stream", actual: 4n });
          return true;
        });
        // an exact revision that is not the last
        await assert.rejects(client.appendToStream(s, ev("x"), { ...C.expectOpt(2n), ...extra }), (e) => {
          assert.equal(e.constructor.name, "WrongExpectedVersionError");
          assert.deepEqual(C.wev(e), { expected: 2n, actual: 4n });
          return true;
        });
        // stream_exists on a stream that was never written
        const missing = uniq("never");
        await assert.rejects(
          client.appendToStream(missing, ev("x"), { ...C.expectOpt(STREAM_EXISTS), ...extra }),
          (e) => {
            assert.equal(e.constructor.name, "WrongExpectedVersionError");
            assert.deepEqual(C.wev(e), { expected: "stream_exists", actual: "no_stream" });
            return true;
          },
        );
        // an exact revision on a stream that was never written
        await assert.rejects(client.appendToStream(missing, ev("x"), { ...C.expectOpt(0n), ...extra }), (e) => {
          assert.deepEqual(C.wev(e), { expected: 0n, actual: "no_stream" });
          return true;
        });
        // Nothing of the failed appends was written.
        const got = await collect(client.readStream(s));
        assert.deepEqual(got.map((x) => x.event.type), ["a", "b", "c", "d", "e"]);
        assert.deepEqual(got.map((x) => x.event.revision), [0n, 1n, 2n, 3n, 4n]);
      });

      it(`${mode}: a retry with the same event ids is idempotent`, async () => {
        const s = uniq("idem");
        const events = [jsonEvent({ id: randomUUID(), type: "A", data: {} }), jsonEvent({ id: randomUUID(), type: "B", data: {} })];
        const r1 = await client.appendToStream(s, events, { ...C.expectOpt(NO_STREAM), ...extra });
        const r2 = await client.appendToStream(s, events, { ...C.expectOpt(NO_STREAM), ...extra });
        assert.equal(r2.nextExpectedRevision, r1.nextExpectedRevision);
        assert.deepEqual(r2.position, r1.position);
        assert.equal((await collect(client.readStream(s))).length, 2);
      });

      it(`${mode}: a tombstoned stream refuses appends with StreamDeletedError`, async () => {
        const s = uniq("tomb");
        await client.appendToStream(s, jsonEvent({ type: "A", data: {} }), extra);
        await client.tombstoneStream(s);
        await assert.rejects(client.appendToStream(s, jsonEvent({ type: "B", data: {} }), extra), (e) => {
          assert.equal(e.constructor.name, "StreamDeletedError");
          assert.equal(e.streamName, s);
          return true;
        });
      });
    }

    it("many concurrent appends over one BatchAppend call all succeed", async () => {
      const s = uniq("many");
      const n = 200;
      const rs = await Promise.all(
        Array.from({ length: n }, (_, i) => client.appendToStream(`${s}-${i % 10}`, jsonEvent({ type: "T", data: { i } }))),
      );
      assert.equal(rs.length, n);
      const positions = new Set(rs.map((r) => r.position.commit));
      assert.equal(positions.size, n, "every append has its own position");
    });

    it("throwOnAppendFailure=false returns success:false", async () => {
      const c2 = C.connect(srv, "&throwOnAppendFailure=false");
      try {
        const s = uniq("soft");
        await c2.appendToStream(s, jsonEvent({ type: "A", data: {} }));
        const r = await c2.appendToStream(s, jsonEvent({ type: "A", data: {} }), C.expectOpt(NO_STREAM));
        assert.equal(r.success, false);
      } finally {
        await c2.dispose();
      }
    });

    // ---------------------------------------------------------------- reads

    it("readStream forwards and backwards, fromRevision and maxCount", async () => {
      const s = uniq("rd");
      await client.appendToStream(s, Array.from({ length: 10 }, (_, i) => jsonEvent({ type: `e${i}`, data: { i } })));
      const revs = async (opts) => (await collect(client.readStream(s, opts))).map((x) => Number(x.event.revision));
      assert.deepEqual(await revs({}), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.deepEqual(await revs({ fromRevision: 3n, maxCount: 4 }), [3, 4, 5, 6]);
      assert.deepEqual(await revs({ direction: BACKWARDS, fromRevision: END, maxCount: 3 }), [9, 8, 7]);
      assert.deepEqual(await revs({ direction: BACKWARDS, fromRevision: 4n }), [4, 3, 2, 1, 0]);
      assert.deepEqual(await revs({ direction: FORWARDS, fromRevision: START, maxCount: 1 }), [0]);
      assert.deepEqual(await revs({ fromRevision: 50n }), []);
      const first = (await collect(client.readStream(s, { maxCount: 1 })))[0].event;
      assert.equal(first.type, "e0");
      assert.deepEqual(first.data, { i: 0 });
      assert.equal(first.streamId, s);
      assert.equal(first.isJson, true);
      assert.ok(first.created instanceof Date && Math.abs(first.created - Date.now()) < 60000);
    });

    // ------------------------------------------------------ stream metadata

    for (const mode of ["BatchAppend", "Append"]) {
      const extra = mode === "Append" ? { credentials: { username: "admin", password: "changeit" } } : {};
      it(`${mode}: setStreamMetadata / getStreamMetadata through $$stream; maxCount applies to readStream`, async () => {
        const s = uniq("md");
        // No metadata yet: the client reports none.
        const none = await client.getStreamMetadata(s, extra);
        assert.equal(none.metadata, undefined);
        await client.appendToStream(s, Array.from({ length: 5 }, (_, i) => jsonEvent({ type: "E", data: { i } })), extra);
        // Version 0; cacheControl is accepted and dropped; acl ($acl, access control) and
        // custom fields are kept.
        const r1 = await client.setStreamMetadata(
          s,
          { maxCount: 2, maxAge: 3600, acl: { readRoles: ["$all"] }, cacheControl: 5, owner: "team-a", n: [1, 2] },
          { ...extra, ...C.expectOpt(NO_STREAM) },
        );
        assert.equal(r1.success, true);
        assert.equal(r1.nextExpectedRevision, 0n);
        const g1 = await client.getStreamMetadata(s, extra);
        assert.deepEqual(g1.metadata, { maxAge: 3600, maxCount: 2, acl: { readRoles: ["$all"] }, owner: "team-a", n: [1, 2] });
        const revs = async (opts) => (await collect(client.readStream(s, { ...extra, ...opts }))).map((x) => Number(x.event.revision));
        assert.deepEqual(await revs({}), [3, 4]);
        assert.deepEqual(await revs({ direction: BACKWARDS, fromRevision: END }), [4, 3]);
        // The metastream read by hand: one $metadata event at revision = version.
        const ev = (await collect(client.readStream(`$$${s}`, { ...extra, direction: BACKWARDS, fromRevision: END, maxCount: 1 })))[0].event;
        assert.equal(ev.type, "$metadata");
        assert.equal(ev.revision, 0n);
        assert.equal(ev.streamId, `$$${s}`);
        assert.deepEqual(ev.data, { $maxAge: 3600, $maxCount: 2, $acl: { $r: ["$all"] }, owner: "team-a", n: [1, 2] });
        // The expected revision is the metadata's version.
        await assert.rejects(client.setStreamMetadata(s, { maxCount: 1 }, { ...extra, ...C.expectOpt(NO_STREAM) }), (e) => {
          assert.equal(e.constructor.name, "WrongExpectedVersionError");
          assert.equal(C.wev(e).actual, 0n);
          return true;
        });
        const r2 = await client.setStreamMetadata(s, { truncateBefore: 1 }, { ...extra, ...C.expectOpt(0n) });
        assert.equal(r2.nextExpectedRevision, 1n);
        assert.deepEqual((await client.getStreamMetadata(s, extra)).metadata, { truncateBefore: 1 });
        assert.deepEqual(await revs({}), [1, 2, 3, 4]);
        // Bad metadata is refused and changes nothing.
        await assert.rejects(client.setStreamMetadata(s, { maxCount: -1 }, extra));
        await assert.rejects(client.appendToStream(`$$${s}`, jsonEvent({ type: "other", data: {} }), extra));
        assert.deepEqual((await client.getStreamMetadata(s, extra)).metadata, { truncateBefore: 1 });
        assert.deepEqual(await revs({}), [1, 2, 3, 4]);
      });
    }

    it("a missing stream is StreamNotFoundError", async () => {
      const s = uniq("missing");
      await assert.rejects(collect(client.readStream(s)), (e) => {
        assert.equal(e.constructor.name, "StreamNotFoundError");
        return true;
      });
    });

    it("readAll forwards, backwards, and filtered by stream prefix and event type", async () => {
      const tag = randomUUID().slice(0, 8);
      const a = `ra${tag}-1`,
        b = `rb${tag}-1`;
      await client.appendToStream(a, [jsonEvent({ type: `X${tag}`, data: {} }), jsonEvent({ type: `Y${tag}`, data: {} })]);
      await client.appendToStream(b, [jsonEvent({ type: `X${tag}`, data: {} })]);
      const all = await collect(client.readAll({ maxCount: 100000 }));
      const mine = all.filter((x) => x.event.streamId.endsWith(`${tag}-1`));
      assert.deepEqual(mine.map((x) => x.event.streamId), [a, a, b]);
      const positions = all.map((x) => x.event.position.commit);
      assert.deepEqual([...positions].sort((p, q) => (p < q ? -1 : p > q ? 1 : 0)), positions, "$all is in position order");
      const back = await collect(client.readAll({ direction: BACKWARDS, fromPosition: END, maxCount: 3 }));
      assert.deepEqual(back.map((x) => x.event.streamId), [b, a, a]);
      // Backwards from an event's position: the events before it.
      const lastA = mine[1].event.position;
      const before = await collect(client.readAll({ direction: BACKWARDS, fromPosition: lastA, maxCount: 1 }));
      assert.equal(before[0].event.position.commit, mine[0].event.position.commit);
      // Forwards from a position includes the event there.
      const from = await collect(client.readAll({ fromPosition: lastA, maxCount: 1 }));
      assert.equal(from[0].event.position.commit, lastA.commit);

      if (!C.filteredReads) return;
      const byPrefix = await collect(client.readAll({ filter: C.lib.streamNameFilter({ prefixes: [`rb${tag}`] }), maxCount: 100000 }));
      assert.deepEqual(byPrefix.map((x) => x.event.streamId), [b]);
      const byType = await collect(client.readAll({ filter: C.lib.eventTypeFilter({ regex: `^X${tag}$` }), maxCount: 100000 }));
      assert.deepEqual(byType.map((x) => x.event.streamId), [a, b]);
      const byTypeBack = await collect(
        client.readAll({ direction: BACKWARDS, fromPosition: END, filter: C.lib.eventTypeFilter({ prefixes: [`Y${tag}`] }), maxCount: 5 }),
      );
      assert.deepEqual(byTypeBack.map((x) => x.event.type), [`Y${tag}`]);
      const counted = await collect(client.readAll({ filter: C.lib.eventTypeFilter({ prefixes: [`X${tag}`] }), maxCount: 1 }));
      assert.equal(counted.length, 1, "maxCount counts the events that pass the filter");
      const noSystem = await collect(client.readAll({ filter: C.lib.excludeSystemEvents(), maxCount: 100000 }));
      assert.ok(noSystem.every((x) => !x.event.type.startsWith("$")));
    });

    // ---------------------------------------------------------------- deletes

    it("deleteStream hides the stream; appending again continues its revisions", async () => {
      const s = uniq("del");
      await client.appendToStream(s, [jsonEvent({ type: "A", data: {} }), jsonEvent({ type: "B", data: {} })]);
      await assert.rejects(client.deleteStream(s, { expectedRevision: 0n }), (e) => {
        assert.equal(e.constructor.name, "WrongExpectedVersionError");
        return true;
      });
      await client.deleteStream(s, { expectedRevision: 1n });
      await assert.rejects(collect(client.readStream(s)), (e) => e.constructor.name === "StreamNotFoundError");
      const r = await client.appendToStream(s, jsonEvent({ type: "C", data: {} }));
      assert.equal(r.nextExpectedRevision, 2n);
      const got = await collect(client.readStream(s));
      assert.deepEqual(got.map((x) => [x.event.type, x.event.revision]), [["C", 2n]]);
    });

    it("tombstoneStream: reads fail with StreamDeletedError", async () => {
      const s = uniq("ts");
      await client.appendToStream(s, jsonEvent({ type: "A", data: {} }));
      await client.tombstoneStream(s);
      await assert.rejects(collect(client.readStream(s)), (e) => {
        assert.equal(e.constructor.name, "StreamDeletedError");
        return true;
      });
      await assert.rejects(client.deleteStream(s), (e) => e.constructor.name === "StreamDeletedError");
    });

    // ---------------------------------------------------------------- HTTP <-> gRPC

    it("events appended over HTTP read back over gRPC byte for byte", async () => {
      const s = uniq("h2g");
      const id = randomUUID();
      const data = '{"total" :  42, "items":[1,2, 3],"note":"h\\u00e9"}';
      const meta = '{"$correlationId":"c-1"}';
      const bin = Buffer.from([0, 1, 2, 255, 254, 10, 13]);
      const body =
        `[{"id":"${id}","type":"Placed","data":${data},"metadata":${meta}},` +
        `{"type":"Blob","dataBase64":"${bin.toString("base64")}"}]`;
      const res = await srv.request("POST", `/streams/${s}`, { body });
      assert.equal(res.status, 201, res.raw.toString());
      const got = await collect(client.readStream(s));
      assert.equal(got.length, 2);
      const [e0, e1] = got.map((x) => x.event);
      assert.equal(e0.id, id);
      assert.equal(e0.type, "Placed");
      assert.equal(e0.isJson, true);
      assert.deepEqual(e0.data, JSON.parse(data));
      assert.deepEqual(e0.metadata, JSON.parse(meta));
      assert.equal(e0.position.commit, BigInt(res.json.firstPosition));
      assert.equal(e1.isJson, false);
      assert.deepEqual(Buffer.from(e1.data), bin);
      // The exact bytes: a raw read (no JSON parsing in the client).
      const raw = await rawReadStream(srv, s, which);
      assert.equal(raw[0].data.toString("utf8"), data);
      assert.equal(raw[0].customMetadata.toString("utf8"), meta);
      assert.deepEqual(raw[1].data, bin);
      assert.equal(raw[0].metadata.get("content-type"), "application/json");
      assert.equal(raw[1].metadata.get("content-type"), "application/octet-stream");
      const http = await srv.request("GET", `/streams/${s}`);
      // created: HTTP's microseconds and gRPC's .NET ticks agree.
      const us = Date.parse(http.json.events[0].created) * 1000 + Number(/\.\d{3}(\d{3})Z$/.exec(http.json.events[0].created)[1]);
      assert.equal(BigInt(raw[0].metadata.get("created")), BigInt(us) * 10n);
    });

    it("events appended over gRPC read back over HTTP byte for byte", async () => {
      const s = uniq("g2h");
      const bin = Uint8Array.from([9, 8, 7, 0, 255]);
      const jid = randomUUID(),
        bid = randomUUID();
      await client.appendToStream(s, [
        jsonEvent({ id: jid, type: "J", data: { a: [1, "x"], b: null }, metadata: { who: "me" } }),
        binaryEvent({ id: bid, type: "B", data: bin, metadata: Uint8Array.from([1, 2, 3]) }),
      ]);
      const res = await srv.request("GET", `/streams/${s}`);
      assert.equal(res.status, 200);
      const [j, b] = res.json.events;
      assert.equal(j.id, jid);
      assert.equal(j.type, "J");
      // The HTTP API writes stored JSON verbatim: the client's own bytes.
      const text = res.raw.toString("utf8");
      assert.ok(text.includes(`"data":${JSON.stringify({ a: [1, "x"], b: null })}`), text);
      assert.ok(text.includes(`"metadata":${JSON.stringify({ who: "me" })}`), text);
      assert.equal(b.id, bid);
      assert.deepEqual(Buffer.from(b.dataBase64, "base64"), Buffer.from(bin));
      assert.deepEqual(Buffer.from(b.metadataBase64, "base64"), Buffer.from([1, 2, 3]));
    });

    // ---------------------------------------------------------------- subscriptions

    it("subscribeToStream: history, caught-up, then live events", async () => {
      const s = uniq("sub");
      await client.appendToStream(s, [jsonEvent({ type: "h0", data: {} }), jsonEvent({ type: "h1", data: {} })]);
      const sub = client.subscribeToStream(s, { fromRevision: START });
      const seen = [];
      let caughtUp = false;
      sub.on("caughtUp", () => {
        caughtUp = true;
      });
      const reader = (async () => {
        for await (const x of sub) {
          seen.push(x.event.type);
          if (seen.length === 4) break;
        }
      })();
      await waitFor(() => caughtUp && seen.length === 2, 10000, "catch-up");
      await client.appendToStream(s, jsonEvent({ type: "l0", data: {} }));
      await client.appendToStream(s, jsonEvent({ type: "l1", data: {} }));
      await reader;
      await sub.unsubscribe();
      assert.deepEqual(seen, ["h0", "h1", "l0", "l1"]);
    });

    it("subscribeToStream from a revision starts after it", async () => {
      const s = uniq("subr");
      await client.appendToStream(s, [0, 1, 2].map((i) => jsonEvent({ type: `e${i}`, data: {} })));
      const sub = client.subscribeToStream(s, { fromRevision: 1n });
      const seen = [];
      for await (const x of sub) {
        seen.push(Number(x.event.revision));
        if (seen.length === 1) break;
      }
      await sub.unsubscribe();
      assert.deepEqual(seen, [2]);
    });

    it("a stream subscription ends with StreamDeletedError when the stream is tombstoned", async () => {
      const s = uniq("subt");
      await client.appendToStream(s, jsonEvent({ type: "A", data: {} }));
      // Several subscriptions, so that one commit ends many calls at once.
      const subs = [0, 1, 2].map(() => client.subscribeToStream(s, { fromRevision: START }));
      const ends = subs.map(async (sub) => {
        try {
          for await (const x of sub) void x;
          return "ended";
        } catch (e) {
          return e.constructor.name;
        }
      });
      await new Promise((r) => setTimeout(r, 300));
      await client.tombstoneStream(s);
      assert.deepEqual(await Promise.all(ends), ["StreamDeletedError", "StreamDeletedError", "StreamDeletedError"]);
    });

    it("subscribeToAll with a filter receives live events and checkpoints", async () => {
      const tag = randomUUID().slice(0, 8);
      let checkpoints = 0;
      const sub = client.subscribeToAll({
        fromPosition: END,
        filter: C.lib.streamNameFilter({
          prefixes: [`live${tag}`],
          checkpointInterval: 1,
          checkpointReached: () => {
            checkpoints++;
          },
        }),
      });
      let confirmed = false;
      sub.on("confirmation", () => {
        confirmed = true;
      });
      const seen = [];
      const reader = (async () => {
        for await (const x of sub) {
          seen.push(x.event.streamId);
          if (seen.length === 2) break;
        }
      })();
      await waitFor(() => confirmed, 10000, "confirmation");
      await client.appendToStream(`other${tag}`, jsonEvent({ type: "N", data: {} }));
      await client.appendToStream(`live${tag}-1`, jsonEvent({ type: "Y", data: {} }));
      // Enough non-matching events to pass a checkpoint window (32).
      await client.appendToStream(`other${tag}`, Array.from({ length: 40 }, () => jsonEvent({ type: "N", data: {} })));
      await client.appendToStream(`live${tag}-2`, jsonEvent({ type: "Y", data: {} }));
      await reader;
      await sub.unsubscribe();
      assert.deepEqual(seen, [`live${tag}-1`, `live${tag}-2`]);
      assert.ok(checkpoints >= 1, "a checkpoint was sent while the filter skipped events");
    });

    // ---------------------------------------------------------------- persistent subscriptions

    it("persistent subscription to a stream: create, subscribe, ack, nack (park, retry), info, list, replay parked, delete", async () => {
      const { PARK, RETRY, persistentSubscriptionToStreamSettingsFromDefaults } = C.lib;
      const s = uniq("ps");
      const g = "workers";
      await client.appendToStream(s, [0, 1, 2, 3, 4].map((i) => jsonEvent({ type: `e${i}`, data: { i } })));
      await client.createPersistentSubscriptionToStream(s, g, persistentSubscriptionToStreamSettingsFromDefaults({ startFrom: START }));
      await assert.rejects(
        client.createPersistentSubscriptionToStream(s, g, persistentSubscriptionToStreamSettingsFromDefaults()),
        (e) => e.constructor.name === "PersistentSubscriptionExistsError",
      );
      const deliveries = [];
      const done = new Set();
      let sub = client.subscribeToPersistentSubscriptionToStream(s, g);
      for await (const ev of sub) {
        const t = ev.event.type;
        deliveries.push(`${t}/${ev.retryCount}`);
        if (t === "e1") await sub.nack(PARK, "cannot handle e1", ev);
        else if (t === "e2" && ev.retryCount === 0) await sub.nack(RETRY, "try again", ev);
        else {
          await sub.ack(ev);
          done.add(t);
        }
        if (done.size === 4) break;
      }
      await sub.unsubscribe();
      assert.deepEqual([...done].sort(), ["e0", "e2", "e3", "e4"]);
      assert.ok(deliveries.includes("e2/0") && deliveries.includes("e2/1"), deliveries.join(" "));
      assert.ok(deliveries.includes("e1/0"), deliveries.join(" "));

      const info = await waitFor(async () => {
        const i = await client.getPersistentSubscriptionToStreamInfo(s, g);
        return i.stats.parkedMessageCount === 1n ? i : null;
      }, 10000, "the parked event");
      assert.equal(info.eventSource, s);
      assert.equal(info.groupName, g);
      assert.equal(info.settings.maxRetryCount, 10);
      assert.equal(info.settings.messageTimeout, 30000);
      assert.equal(info.settings.startFrom, START);
      const listed = await client.listPersistentSubscriptionsToStream(s);
      assert.deepEqual(listed.map((x) => x.groupName), [g]);
      const everything = await client.listAllPersistentSubscriptions();
      assert.ok(everything.some((x) => x.eventSource === s && x.groupName === g));

      // The parked event comes back after a replay, and is acked this time.
      await client.replayParkedMessagesToStream(s, g);
      sub = client.subscribeToPersistentSubscriptionToStream(s, g);
      for await (const ev of sub) {
        assert.equal(ev.event.type, "e1");
        await sub.ack(ev);
        break;
      }
      await sub.unsubscribe();
      await waitFor(async () => (await client.getPersistentSubscriptionToStreamInfo(s, g)).stats.parkedMessageCount === 0n,
        10000, "the replayed event leaving the parked stream");

      // New events reach a live consumer.
      sub = client.subscribeToPersistentSubscriptionToStream(s, g);
      const live = (async () => {
        for await (const ev of sub) {
          await sub.ack(ev);
          if (ev.event.type === "late") return ev.event.revision;
        }
      })();
      await client.appendToStream(s, jsonEvent({ type: "late", data: {} }));
      assert.equal(await live, 5n);
      await sub.unsubscribe();

      await client.deletePersistentSubscriptionToStream(s, g);
      await assert.rejects(client.getPersistentSubscriptionToStreamInfo(s, g),
        (e) => e.constructor.name === "PersistentSubscriptionDoesNotExistError");
      await assert.rejects(client.deletePersistentSubscriptionToStream(s, g),
        (e) => e.constructor.name === "PersistentSubscriptionDoesNotExistError");
    });

    it("persistent subscription to $all with a filter", async () => {
      const { persistentSubscriptionToAllSettingsFromDefaults, streamNameFilter } = C.lib;
      const tag = randomUUID().slice(0, 8);
      const g = `all-${tag}`;
      await client.createPersistentSubscriptionToAll(g, persistentSubscriptionToAllSettingsFromDefaults({ startFrom: END }), {
        filter: streamNameFilter({ prefixes: [`pa${tag}`] }),
      });
      await client.appendToStream(`other${tag}`, jsonEvent({ type: "N", data: {} }));
      await client.appendToStream(`pa${tag}-1`, [jsonEvent({ type: "Y1", data: {} }), jsonEvent({ type: "Y2", data: {} })]);
      await client.appendToStream(`other${tag}`, jsonEvent({ type: "N", data: {} }));
      await client.appendToStream(`pa${tag}-2`, jsonEvent({ type: "Y3", data: {} }));
      const sub = client.subscribeToPersistentSubscriptionToAll(g);
      const got = [];
      for await (const ev of sub) {
        got.push(ev.event.type);
        await sub.ack(ev);
        if (got.length === 3) break;
      }
      await sub.unsubscribe();
      assert.deepEqual(got, ["Y1", "Y2", "Y3"]);
      const info = await client.getPersistentSubscriptionToAllInfo(g);
      assert.equal(info.eventSource, "$all");
      assert.ok(info.stats.totalItems >= 3n);
      await client.deletePersistentSubscriptionToAll(g);
      await assert.rejects(client.getPersistentSubscriptionToAllInfo(g),
        (e) => e.constructor.name === "PersistentSubscriptionDoesNotExistError");
    });
  });
}

// A raw Read of a stream with the protocol's stubs: the exact bytes.
async function rawReadStream(srv, stream, which) {
  const { protocol } = require("./stele_server");
  const grpc = require("@grpc/grpc-js");
  const P = protocol(which);
  const client = new P.streamsGrpc.StreamsClient(`127.0.0.1:${srv.port}`, grpc.credentials.createInsecure());
  const req = new P.streams.ReadReq();
  const o = new P.streams.ReadReq.Options();
  const so = new P.streams.ReadReq.Options.StreamOptions();
  const id = new P.shared.StreamIdentifier();
  id.setStreamName(Buffer.from(stream));
  so.setStreamIdentifier(id);
  so.setStart(new P.shared.Empty());
  o.setStream(so);
  o.setCount("1000");
  o.setNoFilter(new P.shared.Empty());
  const u = new P.streams.ReadReq.Options.UUIDOption();
  u.setStructured(new P.shared.Empty());
  o.setUuidOption(u);
  req.setOptions(o);
  const out = [];
  await new Promise((resolve, reject) => {
    const call = client.read(req);
    call.on("data", (r) => {
      if (!r.hasEvent()) return;
      const e = r.getEvent().getEvent();
      out.push({
        data: Buffer.from(e.getData_asU8()),
        customMetadata: Buffer.from(e.getCustomMetadata_asU8()),
        metadata: e.getMetadataMap(),
        structured: e.getId().hasStructured(),
      });
    });
    call.on("error", reject);
    call.on("end", resolve);
  });
  client.close();
  assert.ok(out.every((e) => e.structured), "ids in the structured form when asked");
  return out;
}
};
