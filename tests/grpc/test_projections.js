// Projections managed and read through the official @kurrent/kurrentdb-client
// (the gRPC Projections service) against a real `stele serve`: the shapes
// of KurrentDB's projection documentation (count by type, per-stream
// state with foreachStream, partitionBy, emit, linkTo, outputState with
// transformBy, bi-state) give the states a fold done here gives; then
// status, list, update, disable, enable, reset (the same state again),
// delete with emitted streams, and the errors the client turns into typed
// ones.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { KurrentDBClient, jsonEvent } = require("@kurrent/kurrentdb-client");
const { SteleServer, waitFor } = require("./stele_server");

let srv, client;
before(async () => {
  srv = await new SteleServer().start();
  client = KurrentDBClient.connectionString(srv.conn);
});
after(async () => {
  await client.dispose();
  assert.equal(await srv.stop(), 0);
  srv.cleanup();
});

const Q = {
  countByType: `fromAll().when({
    $init: function () { return { ItemAdded: 0, ItemRemoved: 0, CheckedOut: 0 }; },
    $any: function (s, e) { if (s[e.eventType] !== undefined) s[e.eventType]++; }
  });`,
  perStream: `fromCategory('cart').foreachStream().when({
    $init: function () { return { items: 0, total: 0 }; },
    ItemAdded: function (s, e) { s.items++; s.total += e.data.price; },
    ItemRemoved: function (s, e) { s.items--; s.total -= e.data.price; }
  });`,
  byCustomer: `fromCategory('cart').partitionBy(function (e) { return e.data.customer; }).when({
    $init: function () { return { carts: 0, spent: 0 }; },
    ItemAdded: function (s, e) { s.spent += e.data.price; },
    CheckedOut: function (s, e) { s.carts++; }
  });`,
  emitter: `fromCategory('cart').when({
    CheckedOut: function (s, e) { emit('orders-' + e.data.customer, 'OrderCreated', { cart: e.streamId }); }
  });`,
  linker: `fromCategory('cart').when({
    ItemAdded: function (s, e) { if (e.data.price > 50) linkTo('expensive-items', e); }
  });`,
  output: `fromAll().when({
    $init: function () { return { n: 0 }; },
    ItemAdded: function (s, e) { s.n++; }
  }).transformBy(function (s) { return { items: s.n, label: 'items: ' + s.n }; }).outputState();`,
  biState: `fromCategory('cart').foreachStream().when({
    $init: function () { return { mine: 0 }; },
    $initShared: function () { return { all: 0 }; },
    ItemAdded: function (s, e) { s[0].mine++; s[1].all++; return s; }
  });`,
};

// The model: the same folds over what was appended.
const appended = [];
async function append(stream, type, data) {
  await client.appendToStream(stream, jsonEvent({ type, data }));
  appended.push({ stream, type, data });
}

async function caughtUp(name) {
  await waitFor(async () => {
    const r = await srv.request("GET", `/projections/${name}`);
    return r.json && (r.json.status !== "Running" || r.json.lag === 0);
  }, 20000, `${name} to catch up`);
}

describe("projections over gRPC with @kurrent/kurrentdb-client", () => {
  it("runs KurrentDB's documented projection shapes and gives the model's states", async () => {
    for (let i = 0; i < 20; i++) {
      const cart = `cart-${i % 4}`;
      const customer = `c${i % 3}`;
      await append(cart, "ItemAdded", { customer, price: 10 * (i % 7) + 5 });
      if (i % 5 === 4) await append(cart, "ItemRemoved", { customer, price: 10 * (i % 7) + 5 });
      if (i % 6 === 5) await append(cart, "CheckedOut", { customer });
    }
    await client.createProjection("count-by-type", Q.countByType);
    await client.createProjection("per-stream", Q.perStream);
    await client.createProjection("by-customer", Q.byCustomer);
    await client.createProjection("emitter", Q.emitter, { emitEnabled: true, trackEmittedStreams: true });
    await client.createProjection("linker", Q.linker, { emitEnabled: true });
    await client.createProjection("output", Q.output);
    await client.createProjection("bi-state", Q.biState);
    // more events after the projections exist (live)
    for (let i = 20; i < 30; i++) {
      await append(`cart-${i % 4}`, "ItemAdded", { customer: `c${i % 3}`, price: 7 });
    }
    await append("cart-1", "CheckedOut", { customer: "c1" });
    for (const n of Object.keys(Q).map((k) => ({ countByType: "count-by-type", perStream: "per-stream",
      byCustomer: "by-customer", emitter: "emitter", linker: "linker", output: "output", biState: "bi-state" })[k])) {
      await caughtUp(n);
    }

    const count = { ItemAdded: 0, ItemRemoved: 0, CheckedOut: 0 };
    const carts = {}, customers = {}, checkouts = {};
    let expensive = 0, added = 0;
    for (const e of appended) {
      count[e.type]++;
      const c = (carts[e.stream] ??= { items: 0, total: 0 });
      const u = (customers[e.data.customer] ??= { carts: 0, spent: 0 });
      if (e.type === "ItemAdded") {
        c.items++; c.total += e.data.price; u.spent += e.data.price; added++;
        if (e.data.price > 50) expensive++;
      } else if (e.type === "ItemRemoved") {
        c.items--; c.total -= e.data.price;
      } else {
        u.carts++;
        checkouts[e.data.customer] = (checkouts[e.data.customer] ?? 0) + 1;
      }
    }
    assert.deepEqual(await client.getProjectionState("count-by-type"), count);
    for (const [cart, want] of Object.entries(carts)) {
      assert.deepEqual(await client.getProjectionState("per-stream", { partition: cart }), want, cart);
    }
    for (const [cust, want] of Object.entries(customers)) {
      assert.deepEqual(await client.getProjectionState("by-customer", { partition: cust }), want, cust);
    }
    for (const [cust, n] of Object.entries(checkouts)) {
      const got = [];
      for await (const r of client.readStream(`orders-${cust}`)) got.push(r.event);
      assert.equal(got.length, n, `orders-${cust}`);
      assert.ok(got.every((ev) => ev.type === "OrderCreated"));
    }
    const links = [];
    for await (const r of client.readStream("expensive-items")) links.push(r);
    assert.equal(links.length, expensive, "one link per expensive item");
    assert.deepEqual(await client.getProjectionResult("output"), { items: added, label: `items: ${added}` });
    for (const [cart] of Object.entries(carts)) {
      const mine = appended.filter((e) => e.stream === cart && e.type === "ItemAdded").length;
      assert.deepEqual(await client.getProjectionState("bi-state", { partition: cart }), { mine }, cart);
    }
  });

  it("reports status and lists projections", async () => {
    const st = await client.getProjectionStatus("count-by-type");
    assert.equal(st.name, "count-by-type");
    assert.equal(st.status, "Running");
    assert.equal(st.projectionStatus, "Running");
    assert.equal(st.effectiveName, "count-by-type");
    assert.ok(st.progress > 99, "progress");
    const all = (await client.listProjections()).map((p) => p.name);
    for (const n of ["count-by-type", "per-stream", "by-customer", "emitter", "linker", "output", "bi-state"]) {
      assert.ok(all.includes(n), n);
    }
  });

  it("updates, disables, enables, resets and deletes", async () => {
    await client.updateProjection("count-by-type", Q.countByType.replace("]++", "] += 2"));
    await append("cart-0", "ItemAdded", { customer: "c0", price: 1 });
    await caughtUp("count-by-type");
    const before = await client.getProjectionState("count-by-type");
    await client.disableProjection("count-by-type");
    assert.equal((await client.getProjectionStatus("count-by-type")).status, "Stopped");
    await client.enableProjection("count-by-type");
    await client.resetProjection("count-by-type");
    await caughtUp("count-by-type");
    const after = await client.getProjectionState("count-by-type");
    const count = { ItemAdded: 0, ItemRemoved: 0, CheckedOut: 0 };
    for (const e of appended) count[e.type] += 2;
    assert.deepEqual(after, count, "reset rebuilds with the new query");
    assert.notDeepEqual(before, after);
    // reset of an emitting projection: each emitted event still once
    await client.resetProjection("emitter");
    await caughtUp("emitter");
    const got = [];
    for await (const r of client.readStream("orders-c1")) got.push(r.event);
    assert.equal(got.length, appended.filter((e) => e.type === "CheckedOut" && e.data.customer === "c1").length);
    await client.deleteProjection("emitter", { deleteEmittedStreams: true, deleteStateStream: true });
    await assert.rejects(client.getProjectionStatus("emitter"));
    await assert.rejects(async () => {
      for await (const r of client.readStream("orders-c1")) void r;
    }, "emitted streams deleted");
  });

  it("refuses bad queries and unknown projections", async () => {
    await assert.rejects(client.createProjection("bad", "fromAll().when({X: function(s, e) { s.x = ; }});"),
      (e) => /SyntaxError/.test(e.message));
    await assert.rejects(client.createProjection("count-by-type", Q.countByType), (e) => /exists/.test(e.message));
    // as KurrentDB: $deleted only with foreachStream() (docs/projections.md)
    await assert.rejects(client.createProjection("deleted-by-part",
      "fromAll().partitionBy(function(e){ return 'p'; }).when({$any: function(s, e){ s.n = 1; }, $deleted: function(s, e){ return null; }});"),
      (e) => /foreachStream\(\)/.test(e.message));
    await assert.rejects(client.updateProjection("count-by-type",
      "fromAll().when({$any: function(s, e){ s.n = 1; }, $deleted: function(s, e){ return null; }});"),
      (e) => /foreachStream\(\)/.test(e.message));
    await assert.rejects(client.getProjectionState("nope"), (e) => /no projection/.test(e.message));
    await assert.rejects(client.enableProjection("nope"));
    await client.restartSubsystem();
  });
});
