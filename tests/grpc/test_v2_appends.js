// KurrentDB's v2 protocol (multi-stream appends) through the official
// client, @kurrent/kurrentdb-client: multiStreamAppend (AppendSession) and
// appendRecords (AppendRecords) with consistency checks, against a real
// `stele serve`. Success: events readable afterwards with the right
// revisions, at contiguous positions in request order. Every failure kind:
// wrong expected revision (naming the stream and its current revision),
// tombstoned stream, failed consistency checks (all of them listed), bad
// input; after each failure nothing was written.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { randomUUID } = require("node:crypto");
const {
  KurrentDBClient,
  jsonEvent,
  binaryEvent,
  NO_STREAM,
  ANY,
  STREAM_EXISTS,
  STREAM_STATE,
  WrongExpectedVersionError,
  StreamTombstonedError,
  AppendConsistencyViolationError,
  StreamNotFoundError,
  UnsupportedError,
} = require("@kurrent/kurrentdb-client");
const { SteleServer, collect } = require("./stele_server");

const uniq = (p) => `${p}-${randomUUID().slice(0, 8)}`;
const ev = (type, data, metadata) => jsonEvent({ type, data, ...(metadata ? { metadata } : {}) });

let srv, client;
before(async () => {
  srv = await new SteleServer().start();
  client = KurrentDBClient.connectionString(srv.conn);
});
after(async () => {
  await client.dispose();
  const code = await srv.stop();
  assert.equal(code, 0, "the server stops cleanly");
  srv.cleanup();
});

// Every event of a stream (forwards), or [] if it has none.
async function readAll(stream) {
  try {
    return (await collect(client.readStream(stream))).map((r) => r.event);
  } catch (e) {
    if (e instanceof StreamNotFoundError) return [];
    throw e;
  }
}

// The events of $all at positions first..last (inclusive), in order.
async function allBetween(first, last) {
  const out = [];
  for await (const r of client.readAll({ fromPosition: { commit: first, prepare: first }, maxCount: Number(last - first) + 1 })) {
    if (r.event && !r.event.type.startsWith("$")) out.push(r.event);
  }
  return out.filter((e) => e.position.commit >= first && e.position.commit <= last);
}

// Assert that `p` rejects with an error of class `cls`; returns it.
async function rejects(p, cls) {
  try {
    await p;
  } catch (e) {
    if (cls) assert.ok(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("multiStreamAppend (AppendSession)", () => {
  it("the client no longer reports 'requires server version 25.1'", async () => {
    const s = uniq("Probe");
    const res = await client.multiStreamAppend([{ streamName: s, expectedState: ANY, events: [ev("Probed", {})] }]);
    assert.ok(!(res instanceof UnsupportedError));
    assert.equal(res.responses.length, 1);
  });

  it("appends to several streams atomically: revisions, contiguous positions in request order", async () => {
    const a = uniq("Account"), b = uniq("Account");
    const res = await client.multiStreamAppend([
      { streamName: a, expectedState: NO_STREAM, events: [ev("Opened", { n: 1 }), ev("Debited", { amount: 10 })] },
      { streamName: b, expectedState: NO_STREAM, events: [ev("Opened", { n: 2 }), ev("Credited", { amount: 10 }, { actor: "teller" })] },
    ]);
    assert.deepEqual(
      res.responses.map((r) => [r.streamName, r.revision]),
      [[a, 1n], [b, 1n]],
    );
    const ea = await readAll(a), eb = await readAll(b);
    assert.deepEqual(ea.map((e) => [e.type, e.revision]), [["Opened", 0n], ["Debited", 1n]]);
    assert.deepEqual(eb.map((e) => [e.type, e.revision]), [["Opened", 0n], ["Credited", 1n]]);
    assert.deepEqual(ea[1].data, { amount: 10 });
    assert.deepEqual(eb[1].metadata, { actor: "teller" });
    // One commit: positions gapless, in request order, the last one is the result's.
    const pos = [...ea, ...eb].map((e) => e.position.commit);
    assert.equal(pos[3], res.position);
    for (let i = 1; i < 4; i++) assert.equal(pos[i], pos[0] + BigInt(i), `positions ${pos} are contiguous`);
    const all = await allBetween(pos[0], pos[3]);
    assert.deepEqual(all.map((e) => `${e.streamId}/${e.revision}`), [`${a}/0`, `${a}/1`, `${b}/0`, `${b}/1`]);

    // Exact expected revisions on both, then stream_exists and any.
    const res2 = await client.multiStreamAppend([
      { streamName: a, expectedState: 1n, events: [ev("Debited", { amount: 5 })] },
      { streamName: b, expectedState: STREAM_EXISTS, events: [ev("Credited", { amount: 5 })] },
      { streamName: uniq("Audit"), expectedState: ANY, events: [binaryEvent({ type: "Raw", data: Buffer.from([0, 1, 2]) })] },
    ]);
    assert.deepEqual(res2.responses.map((r) => r.revision), [2n, 2n, 0n]);
    assert.equal(res2.position, res.position + 3n);
  });

  it("a wrong expected revision fails the whole session, naming the stream and its current revision", async () => {
    const a = uniq("Account"), b = uniq("Account");
    await client.appendToStream(a, [ev("Opened", {}), ev("Debited", {})]);
    const e = await rejects(
      client.multiStreamAppend([
        { streamName: b, expectedState: NO_STREAM, events: [ev("Opened", {})] },
        { streamName: a, expectedState: 0n, events: [ev("Debited", {})] },
      ]),
      WrongExpectedVersionError,
    );
    assert.equal(e.streamName, a);
    assert.equal(e.expectedState, 0n);
    assert.equal(e.actualState, 1n);
    assert.equal((await readAll(b)).length, 0, "nothing was written to the other stream");
    assert.equal((await readAll(a)).length, 2);

    const e2 = await rejects(
      client.multiStreamAppend([
        { streamName: b, expectedState: STREAM_EXISTS, events: [ev("Opened", {})] },
        { streamName: a, expectedState: ANY, events: [ev("Debited", {})] },
      ]),
      WrongExpectedVersionError,
    );
    assert.equal(e2.streamName, b);
    assert.equal(e2.expectedState, "stream_exists");
    assert.equal(e2.actualState, "no_stream");
    const e3 = await rejects(
      client.multiStreamAppend([{ streamName: a, expectedState: NO_STREAM, events: [ev("Opened", {})] }]),
      WrongExpectedVersionError,
    );
    assert.equal(e3.expectedState, "no_stream");
    assert.equal(e3.actualState, 1n);
    assert.equal((await readAll(a)).length, 2);
    assert.equal((await readAll(b)).length, 0);
  });

  it("a tombstoned stream fails the session with StreamTombstonedError", async () => {
    const a = uniq("Closed"), b = uniq("Other");
    await client.appendToStream(a, ev("Opened", {}));
    await client.tombstoneStream(a);
    const e = await rejects(
      client.multiStreamAppend([
        { streamName: b, expectedState: ANY, events: [ev("X", {})] },
        { streamName: a, expectedState: ANY, events: [ev("Reopened", {})] },
      ]),
      StreamTombstonedError,
    );
    assert.equal(e.stream, a);
    assert.equal((await readAll(b)).length, 0);
  });

  it("soft-deleted streams: -5 (deleted) and no_stream pass, stream_exists fails with -10", async () => {
    const soft = uniq("Soft"), other = uniq("Other");
    await client.appendToStream(soft, [ev("Opened", {}), ev("Closed", {})]);
    await client.deleteStream(soft);
    const e = await rejects(
      client.multiStreamAppend([
        { streamName: other, expectedState: NO_STREAM, events: [ev("X", {})] },
        { streamName: soft, expectedState: STREAM_EXISTS, events: [ev("Again", {})] },
      ]),
      WrongExpectedVersionError,
    );
    assert.deepEqual([e.streamName, e.expectedState, e.actualState], [soft, "stream_exists", -10n]);
    const e2 = await rejects(
      client.multiStreamAppend([{ streamName: soft, expectedState: 0n, events: [ev("Again", {})] }]),
      WrongExpectedVersionError,
    );
    assert.deepEqual([e2.expectedState, e2.actualState], [0n, 1n], "an exact mismatch reports the revision it kept");
    assert.equal((await readAll(other)).length, 0);
    const res = await client.multiStreamAppend([
      { streamName: soft, expectedState: -5n, events: [ev("Reopened", {})] },
      { streamName: other, expectedState: NO_STREAM, events: [ev("X", {})] },
    ]);
    assert.deepEqual(res.responses.map((r) => r.revision), [2n, 0n]);
    assert.deepEqual((await readAll(soft)).map((x) => [x.type, x.revision]), [["Reopened", 2n]]);
    // Now it is not deleted any more: -5 fails.
    const e3 = await rejects(
      client.multiStreamAppend([{ streamName: soft, expectedState: -5n, events: [ev("Again", {})] }]),
      WrongExpectedVersionError,
    );
    assert.equal(e3.actualState, 2n);
  });

  it("bad input: no requests, a stream twice; clear errors and nothing written", async () => {
    const e = await rejects(client.multiStreamAppend([]));
    assert.match(e.message, /FAILED_PRECONDITION.*without any append request/);
    const a = uniq("Twice"), b = uniq("Once");
    const e2 = await rejects(
      client.multiStreamAppend([
        { streamName: a, expectedState: ANY, events: [ev("X", {})] },
        { streamName: b, expectedState: ANY, events: [ev("X", {})] },
        { streamName: a, expectedState: ANY, events: [ev("Y", {})] },
      ]),
    );
    assert.match(e2.message, new RegExp(`ABORTED.*'${a}' appears twice`));
    assert.equal((await readAll(a)).length, 0);
    assert.equal((await readAll(b)).length, 0);
  });
});

describe("appendRecords (AppendRecords) with consistency checks", () => {
  const check = (streamName, expectedState) => ({ type: STREAM_STATE, streamName, expectedState });
  const rec = (streamName, type, data = {}) => ({ streamName, record: ev(type, data) });

  it("interleaved records: revisions per stream, positions in request order", async () => {
    const a = uniq("Order"), b = uniq("Stock");
    const res = await client.appendRecords([
      rec(a, "Placed", { i: 0 }),
      rec(b, "Reserved", { i: 1 }),
      rec(a, "Paid", { i: 2 }),
      rec(b, "Picked", { i: 3 }),
      rec(a, "Shipped", { i: 4 }),
    ]);
    assert.deepEqual(res.responses.map((r) => [r.streamName, r.revision]), [[a, 2n], [b, 1n]]);
    const all = await allBetween(res.position - 4n, res.position);
    assert.deepEqual(all.map((e) => e.data.i), [0, 1, 2, 3, 4]);
    assert.deepEqual(all.map((e) => e.position.commit), [0n, 1n, 2n, 3n, 4n].map((d) => res.position - 4n + d));
    assert.deepEqual((await readAll(a)).map((e) => [e.type, e.revision]), [["Placed", 0n], ["Paid", 1n], ["Shipped", 2n]]);
    assert.deepEqual((await readAll(b)).map((e) => [e.type, e.revision]), [["Reserved", 0n], ["Picked", 1n]]);
  });

  it("checks on written and unwritten streams pass: the append goes ahead", async () => {
    const a = uniq("Cart"), decided = uniq("Policy"), fresh = uniq("New");
    await client.appendToStream(decided, [ev("Set", {}), ev("Changed", {})]);
    await client.appendToStream(a, ev("Created", {}));
    const res = await client.appendRecords(
      [rec(a, "ItemAdded"), rec(fresh, "Started")],
      [check(decided, 1n), check(a, 0n), check(fresh, NO_STREAM)],
    );
    assert.deepEqual(res.responses.map((r) => [r.streamName, r.revision]), [[a, 1n], [fresh, 0n]]);
    assert.equal((await readAll(decided)).length, 2, "a check-only stream is not written");
    const r2 = await client.appendRecords([rec(a, "ItemAdded")], [check(decided, STREAM_EXISTS), check(a, ANY)]);
    assert.deepEqual(r2.responses.map((r) => r.revision), [2n]);
  });

  it("failed checks: every failing check listed with expected and actual states, nothing written", async () => {
    const a = uniq("Cart"), x = uniq("Seen"), y = uniq("Missing"), w = uniq("Write");
    await client.appendToStream(a, [ev("Created", {}), ev("ItemAdded", {})]);
    await client.appendToStream(x, [ev("One", {}), ev("Two", {}), ev("Three", {})]);
    const e = await rejects(
      client.appendRecords(
        [rec(w, "Decided"), rec(a, "ItemAdded")],
        [check(x, 5n), check(a, 1n), check(y, STREAM_EXISTS), check(w, NO_STREAM)],
      ),
      AppendConsistencyViolationError,
    );
    const got = e.violations
      .map((v) => [v.checkIndex, v.streamName, v.expectedState, v.actualState])
      .sort((p, q) => p[0] - q[0]);
    assert.deepEqual(got, [
      [0, x, 5n, 2n],
      [2, y, "stream_exists", "no_stream"],
    ]);
    assert.equal((await readAll(w)).length, 0);
    assert.equal((await readAll(a)).length, 2);

    const e2 = await rejects(client.appendRecords([rec(w, "Decided")], [check(x, NO_STREAM)]), AppendConsistencyViolationError);
    assert.deepEqual(
      e2.violations.map((v) => [v.checkIndex, v.streamName, v.expectedState, v.actualState]),
      [[0, x, "no_stream", 2n]],
    );
    assert.equal((await readAll(w)).length, 0);
  });

  it("tombstoned and soft-deleted streams in checks and writes", async () => {
    const dead = uniq("Dead"), soft = uniq("Soft"), w = uniq("Write");
    await client.appendToStream(dead, ev("Opened", {}));
    await client.tombstoneStream(dead);
    await client.appendToStream(soft, [ev("Opened", {}), ev("Closed", {})]);
    await client.deleteStream(soft);
    // Writing to a tombstoned stream (no check): a violation with actual -100.
    const e = await rejects(client.appendRecords([rec(w, "X"), rec(dead, "Again")]), AppendConsistencyViolationError);
    assert.deepEqual(e.violations.map((v) => [v.streamName, v.expectedState, v.actualState]), [[dead, "any", -100n]]);
    // Checking it, too.
    const e2 = await rejects(client.appendRecords([rec(w, "X")], [check(dead, NO_STREAM)]), AppendConsistencyViolationError);
    assert.deepEqual(e2.violations.map((v) => [v.checkIndex, v.actualState]), [[0, -100n]]);
    // A soft-deleted stream: exists fails (actual -10), no_stream passes.
    const e3 = await rejects(client.appendRecords([rec(w, "X")], [check(soft, STREAM_EXISTS)]), AppendConsistencyViolationError);
    assert.deepEqual(e3.violations.map((v) => [v.streamName, v.actualState]), [[soft, -10n]]);
    assert.equal((await readAll(w)).length, 0);
    const ok = await client.appendRecords([rec(w, "X")], [check(soft, NO_STREAM)]);
    assert.deepEqual(ok.responses.map((r) => r.revision), [0n]);
    const e4 = await rejects(client.appendRecords([rec(w, "X")], [check(soft, 0n)]), AppendConsistencyViolationError);
    assert.deepEqual(e4.violations.map((v) => [v.streamName, v.expectedState, v.actualState]), [[soft, 0n, 1n]]);
    const ok5 = await client.appendRecords([rec(w, "Y")], [check(soft, -5n)]);
    assert.deepEqual(ok5.responses.map((r) => r.revision), [1n]);
    // Recreating it: its last revision is accepted as the expected one.
    const re = await client.appendRecords([rec(soft, "Reopened")], [check(soft, 1n)]);
    assert.deepEqual(re.responses.map((r) => [r.streamName, r.revision]), [[soft, 2n]]);
  });

  it("bad input: no records, a stream checked twice; clear errors and nothing written", async () => {
    const e = await rejects(client.appendRecords([]));
    assert.match(e.message, /INVALID_ARGUMENT.*at least one record/);
    const a = uniq("A");
    const e2 = await rejects(client.appendRecords([rec(a, "X")], [check(a, ANY), check(a, NO_STREAM)]));
    assert.match(e2.message, new RegExp(`INVALID_ARGUMENT.*both check stream '${a}'`));
    const e3 = await rejects(client.appendRecords([rec(a, "X")], [check(a, -3n)]));
    assert.match(e3.message, /INVALID_ARGUMENT.*expected state -3/);
    assert.equal((await readAll(a)).length, 0);
  });

  it("retrying the same records (same ids) is idempotent", async () => {
    const a = uniq("Retry"), b = uniq("Retry");
    const records = [rec(a, "One"), rec(b, "Two")];
    const r1 = await client.appendRecords(records);
    const r2 = await client.appendRecords(records);
    assert.equal(r2.position, r1.position);
    assert.deepEqual(r2.responses, r1.responses);
    assert.equal((await readAll(a)).length, 1);
    assert.equal((await readAll(b)).length, 1);
  });
});
