// The system view streams $ce-{category}, $et-{type}, $bc-{correlationId}
// and $streams through an official Node client against a real `stele
// serve` (test_views_kurrent.js, test_views_esdb.js: one client package
// per process, as clients_suite.js).
//
// - readStream of $ce-/$et-/$bc- with resolveLinkTos gives the events of
//   the matching HTTP query (/categories, /types, /correlations) in order,
//   each with its link (stream = the view, revisions 0, 1, 2 ...); without
//   resolveLinkTos the link events themselves, as KurrentDB sends them
//   (type "$>", data "{revision}@{stream}"); backwards, maxCount and
//   fromRevision page the same sequence.
// - subscribeToStream on a view: history, caught-up, then live events
//   appended while it runs, with the revisions a read gives; from END only
//   the live ones.
// - $streams holds each new stream's first event; an unknown category is
//   StreamNotFoundError.
"use strict";

module.exports = function suite(which) {

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const { SteleServer, collect, waitFor } = require("./stele_server");

const lib = which === "kurrent" ? require("@kurrent/kurrentdb-client") : require("@eventstore/db-client");
const connect = (srv) =>
  which === "kurrent"
    ? lib.KurrentDBClient.connectionString(srv.conn)
    : lib.EventStoreDBClient.connectionString(srv.esdbConn);
const { jsonEvent, START, END, BACKWARDS } = lib;

let srv, client;
before(async () => {
  srv = await new SteleServer().start();
  client = connect(srv);
});
after(async () => {
  await client.dispose();
  const code = await srv.stop();
  assert.equal(code, 0, "the server stops cleanly");
  srv.cleanup();
});

// A fresh category, types and correlation ids for each test (no '-').
const fresh = () => {
  const t = randomUUID().slice(0, 8);
  return { cat: `Vw${t}`, types: [`Placed${t}`, `Paid${t}`], corr: `corr${t}` };
};

// Write `n` appends over 3 streams of the category; returns nothing.
async function writeSome(k, n, from = 0) {
  for (let i = from; i < from + n; i++) {
    const events = [];
    for (let j = 0; j <= i % 3; j++)
      events.push(
        jsonEvent({
          type: k.types[(i + j) % 2],
          data: { i, j },
          metadata: (i + j) % 2 ? { $correlationId: k.corr } : {},
        }),
      );
    await client.appendToStream(`${k.cat}-${i % 3}`, events);
  }
}

// The positions of an HTTP query, all pages.
async function queryPositions(pathStart) {
  const out = [];
  let url = `${pathStart}?limit=7`;
  for (;;) {
    const r = await srv.request("GET", url);
    assert.equal(r.status, 200, r.raw.toString());
    for (const e of r.json.events) out.push(BigInt(e.position));
    if (!r.json.next) return out;
    url = r.json.next;
  }
}

const views = (k) => [
  [`$ce-${k.cat}`, `/categories/${k.cat}`],
  [`$et-${k.types[0]}`, `/types/${k.types[0]}`],
  [`$et-${k.types[1]}`, `/types/${k.types[1]}`],
  [`$bc-${k.corr}`, `/correlations/${k.corr}`],
];

describe(`view streams (${which})`, () => {
  it("readStream of $ce-/$et-/$bc- with resolveLinkTos equals the query, with links", async () => {
    const k = fresh();
    await writeSome(k, 20);
    for (const [view, q] of views(k)) {
      const want = await queryPositions(q);
      assert.ok(want.length > 3, `${view} has events`);
      const got = await collect(client.readStream(view, { fromRevision: START, resolveLinkTos: true }));
      assert.equal(got.length, want.length, view);
      got.forEach((x, i) => {
        assert.equal(x.event.position.commit, want[i], `${view} #${i}`);
        assert.ok(x.event.streamId.startsWith(`${k.cat}-`));
        assert.equal(typeof x.event.data.i, "number");
        assert.ok(x.link, "a link");
        assert.equal(x.link.streamId, view);
        assert.equal(x.link.revision, BigInt(i));
        assert.equal(x.link.type, "$>");
      });
      // Backwards, a count, and from a revision page the same sequence.
      const back = await collect(
        client.readStream(view, { direction: BACKWARDS, fromRevision: END, maxCount: 5, resolveLinkTos: true }),
      );
      assert.deepEqual(back.map((x) => x.event.position.commit), want.slice(-5).reverse());
      assert.deepEqual(back.map((x) => x.link.revision), [...want.keys()].slice(-5).reverse().map(BigInt));
      const mid = await collect(client.readStream(view, { fromRevision: 2n, maxCount: 3, resolveLinkTos: true }));
      assert.deepEqual(mid.map((x) => x.link.revision), [2n, 3n, 4n]);
      assert.deepEqual(mid.map((x) => x.event.position.commit), want.slice(2, 5));
    }
  });

  it("without resolveLinkTos the link events come as KurrentDB sends them", async () => {
    const k = fresh();
    await writeSome(k, 6);
    const view = `$ce-${k.cat}`;
    const resolved = await collect(client.readStream(view, { resolveLinkTos: true }));
    const links = await collect(client.readStream(view));
    assert.equal(links.length, resolved.length);
    links.forEach((x, i) => {
      assert.equal(x.link, undefined);
      assert.equal(x.event.type, "$>");
      assert.equal(x.event.streamId, view);
      assert.equal(x.event.revision, BigInt(i));
      assert.equal(x.event.isJson, false);
      const o = resolved[i].event;
      assert.equal(Buffer.from(x.event.data).toString(), `${o.revision}@${o.streamId}`);
      assert.equal(x.event.id, resolved[i].link.id, "the link's id is the same either way");
    });
  });

  it("subscribeToStream on a view: history, caught-up, then live", async () => {
    const k = fresh();
    await writeSome(k, 5);
    const view = `$ce-${k.cat}`;
    const history = await collect(client.readStream(view, { resolveLinkTos: true }));
    const sub = client.subscribeToStream(view, { fromRevision: START, resolveLinkTos: true });
    const tail = client.subscribeToStream(view, { fromRevision: END, resolveLinkTos: true });
    let caughtUp = false;
    sub.on("caughtUp", () => {
      caughtUp = true;
    });
    const seen = [], tailSeen = [];
    const reading = (async () => {
      for await (const x of sub) seen.push(x);
    })();
    const tailing = (async () => {
      for await (const x of tail) tailSeen.push(x);
    })();
    await waitFor(() => caughtUp && seen.length === history.length, 10000, "catch-up");
    await new Promise((r) => setTimeout(r, 200)); // both subscriptions are live
    await writeSome(k, 5, 5);
    const all = await collect(client.readStream(view, { resolveLinkTos: true }));
    assert.ok(all.length > history.length);
    await waitFor(() => seen.length === all.length && tailSeen.length === all.length - history.length, 10000, "live events");
    await sub.unsubscribe();
    await tail.unsubscribe();
    await reading;
    await tailing;
    const key = (x) => `${x.link.revision}:${x.event.position.commit}`;
    assert.deepEqual(seen.map(key), all.map(key));
    assert.deepEqual(tailSeen.map(key), all.slice(history.length).map(key));
  });

  it("$et- and $bc- subscriptions follow live appends too", async () => {
    const k = fresh();
    await writeSome(k, 3);
    for (const view of [`$et-${k.types[1]}`, `$bc-${k.corr}`]) {
      const sub = client.subscribeToStream(view, { fromRevision: START, resolveLinkTos: true });
      const seen = [];
      let caughtUp = false;
      sub.on("caughtUp", () => {
        caughtUp = true;
      });
      const reading = (async () => {
        for await (const x of sub) seen.push(x);
      })();
      await waitFor(() => caughtUp, 10000, "catch-up");
      await writeSome(k, 4, 100);
      const all = await collect(client.readStream(view, { resolveLinkTos: true }));
      await waitFor(() => seen.length === all.length, 10000, `live events of ${view}`);
      await sub.unsubscribe();
      await reading;
      assert.deepEqual(seen.map((x) => x.link.revision), all.map((x) => x.link.revision));
      assert.deepEqual(seen.map((x) => x.event.id), all.map((x) => x.event.id));
    }
  });

  it("$streams lists each stream's first event; unknown views are not found", async () => {
    const k = fresh();
    await writeSome(k, 3);
    const all = await collect(client.readStream("$streams", { resolveLinkTos: true }));
    for (let s = 0; s < 3; s++) {
      const first = await collect(client.readStream(`${k.cat}-${s}`, { maxCount: 1 }));
      const hits = all.filter((x) => x.event.streamId === `${k.cat}-${s}`);
      assert.equal(hits.length, 1);
      assert.equal(hits[0].event.id, first[0].event.id);
      assert.equal(hits[0].link.streamId, "$streams");
    }
    const revs = all.map((x) => x.link.revision);
    assert.deepEqual(revs, [...revs].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)));
    await assert.rejects(collect(client.readStream(`$ce-Nothing${randomUUID().slice(0, 8)}`)), (e) => {
      assert.equal(e.constructor.name, "StreamNotFoundError");
      return true;
    });
  });
});

};
