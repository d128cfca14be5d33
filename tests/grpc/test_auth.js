// Users and access control over gRPC (server/access_grpc.c) with the
// official KurrentDB Node client over TLS (the client sends credentials only
// with tls=true): a server with an admin (STELE_ADMIN_PASSWORD) and users
// made over HTTPS, then per role and per ACL: allowed and denied appends,
// reads, $all reads, deletes and metadata; wrong passwords; per-call
// credentials; the error shapes as KurrentDB returns them (PERMISSION_DENIED
// with `exception: access-denied` -> AccessDeniedError; UNAUTHENTICATED for
// wrong credentials). Also: view streams ($et-, $ce-) read and subscribed
// filtered per user; multi-stream appends (AppendRecords, AppendSession)
// allowed with $w on every stream and refused whole, nothing written, when
// one stream (or a checked one) is not allowed; Users Details last_updated.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const https = require("node:https");
const os = require("node:os");
const path = require("node:path");
const { randomUUID } = require("node:crypto");
const { SteleServer, collect } = require("./stele_server");
const { KurrentDBClient, jsonEvent, FORWARDS, START, ANY, STREAM_STATE } = require("@kurrent/kurrentdb-client");

const ADMIN_PW = `adm-${randomUUID().slice(0, 8)}`;
let pki, srv;
const clients = [];

function openssl(...args) {
  execFileSync("openssl", args, { stdio: "ignore" });
}

function makePki() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "stele-auth-js-"));
  const f = (n) => path.join(d, n);
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "2", "-subj", "/CN=ca");
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost");
  fs.writeFileSync(f("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  openssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
          "-CAcreateserial", "-out", f("server.pem"), "-days", "2", "-extfile", f("server.ext"));
  return d;
}

// An HTTPS request with Basic credentials; resolves { status, json }.
function rest(method, p, body, user = "admin", pw = ADMIN_PW) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const req = https.request({
      host: "127.0.0.1", servername: "localhost", port: srv.port, method, path: p, agent: false,
      ca: fs.readFileSync(path.join(pki, "ca.pem")),
      headers: {
        authorization: "Basic " + Buffer.from(`${user}:${pw}`).toString("base64"),
        ...(data ? { "content-type": "application/json", "content-length": data.length } : {}),
      },
    }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const raw = Buffer.concat(chunks).toString();
        let json;
        try { json = JSON.parse(raw); } catch { json = undefined; }
        resolve({ status: res.statusCode, json, raw });
      });
    });
    req.on("error", reject);
    if (data) req.write(data);
    req.end();
  });
}

function client(user, pw) {
  const cred = user ? `${encodeURIComponent(user)}:${encodeURIComponent(pw)}@` : "";
  const c = KurrentDBClient.connectionString(
    `kurrentdb://${cred}localhost:${srv.port}?tls=true&tlsCAFile=${path.join(pki, "ca.pem")}`);
  clients.push(c);
  return c;
}

const ev = (i = 0) => jsonEvent({ type: "t", data: { i } });
const uniq = (p) => `${p}-${randomUUID().slice(0, 8)}`;

// Resolves to "ok" or the error's class name and type.
async function outcome(p) {
  try {
    await p;
    return "ok";
  } catch (e) {
    return `${e.constructor.name}/${e.type}`;
  }
}

const PW = { reader: "reader-pw-1", writer: "writer-pw-1", operator: "ops-pw-1", pm: "pm-pw-1" };
let locked, open;

before(async () => {
  pki = makePki();
  process.env.STELE_ADMIN_PASSWORD = ADMIN_PW;
  srv = await new SteleServer(["--tls-cert", path.join(pki, "server.pem"),
                               "--tls-key", path.join(pki, "server.key"),
                               "--auth-fail-limit", "1000"]).start();
  delete process.env.STELE_ADMIN_PASSWORD;
  for (const [u, groups] of [["reader", ["readers"]], ["writer", []], ["operator", ["$ops"]],
                             ["pm", ["$projection-managers"]]]) {
    const r = await rest("PUT", `/users/${u}`, { password: PW[u], groups });
    assert.equal(r.status, 201, r.raw);
  }
  locked = uniq("locked");
  open = uniq("open");
  for (const s of [locked, open]) {
    const r = await rest("POST", `/streams/${s}`, [{ type: "t", data: {} }]);
    assert.equal(r.status, 201, r.raw);
  }
  const r = await rest("PUT", `/streams/${locked}/metadata`,
                       { $acl: { $r: ["readers", "$ops"], $w: "writer", $d: "$admins", $mr: "$admins" } });
  assert.ok(r.status === 200 || r.status === 201, r.raw);
});

after(async () => {
  for (const c of clients) await c.dispose();
  const code = await srv.stop();
  srv.cleanup();
  fs.rmSync(pki, { recursive: true, force: true });
  assert.equal(code, 0, "the server stops cleanly");
});

describe("KurrentDB client with users and ACLs over TLS", () => {
  it("per role and ACL: appends, reads, $all, deletes, metadata", async () => {
    const who = {
      admin: client("admin", ADMIN_PW),
      reader: client("reader", PW.reader),
      writer: client("writer", PW.writer),
      operator: client("operator", PW.operator),
    };
    const DENIED = "AccessDeniedError/access-denied";
    // [name, operation, { principal: expected }]
    const table = [
      ["append open", (c) => c.appendToStream(open, ev()),
       { admin: "ok", reader: "ok", writer: "ok", operator: "ok" }],
      ["read open", (c) => collect(c.readStream(open)),
       { admin: "ok", reader: "ok", writer: "ok", operator: "ok" }],
      ["append locked", (c) => c.appendToStream(locked, ev()),
       { admin: "ok", reader: DENIED, writer: "ok", operator: DENIED }],
      ["read locked", (c) => collect(c.readStream(locked)),
       { admin: "ok", reader: "ok", writer: DENIED, operator: "ok" }],
      ["read $all", (c) => collect(c.readAll({ maxCount: 5 })),
       { admin: "ok", reader: "ok", writer: "ok", operator: "ok" }],
      ["metadata of locked", (c) => c.getStreamMetadata(locked),
       { admin: "ok", reader: DENIED, writer: DENIED, operator: DENIED }],
      ["read $users", (c) => collect(c.readStream("$users")),
       { admin: "ok", reader: DENIED, writer: DENIED, operator: DENIED }],
    ];
    const bad = [];
    for (const [name, op, want] of table)
      for (const [u, c] of Object.entries(who)) {
        const got = await outcome(op(c));
        if (got !== want[u]) bad.push(`${name} as ${u}: want ${want[u]}, got ${got}`);
      }
    // Deletes last: each principal deletes its own fresh stream (default
    // ACL: allowed), and the locked one ($d: $admins).
    for (const [u, c] of Object.entries(who)) {
      const s = uniq(`del-${u}`);
      await who.admin.appendToStream(s, ev());
      const got = await outcome(c.deleteStream(s));
      if (got !== "ok") bad.push(`delete own stream as ${u}: want ok, got ${got}`);
    }
    for (const u of ["reader", "writer", "operator"]) {
      const got = await outcome(who[u].deleteStream(locked));
      if (got !== DENIED) bad.push(`delete locked as ${u}: want ${DENIED}, got ${got}`);
    }
    assert.deepEqual(bad, []);
  });

  it("projection management: $admins and $projection-managers only", async () => {
    const name = uniq("proj");
    const q = "fromAll().when({$init: function () { return {n: 0}; }, $any: function (s) { s.n++; return s; }})";
    assert.equal(await outcome(client("reader", PW.reader).createProjection(name, q)),
                 "AccessDeniedError/access-denied");
    assert.equal(await outcome(client("operator", PW.operator).createProjection(name, q)),
                 "AccessDeniedError/access-denied");
    assert.equal(await outcome(client("pm", PW.pm).createProjection(name, q)), "ok");
    // Reading its status is open to any user.
    assert.equal(await outcome(client("reader", PW.reader).getProjectionStatus(name)), "ok");
  });

  it("$all reads and subscriptions are filtered to the streams the user may read", async () => {
    const streamsOf = (evs) => new Set(evs.map((e) => e.event && e.event.streamId));
    const w = streamsOf(await collect(client("writer", PW.writer).readAll({ maxCount: 100000 })));
    assert.ok(w.has(open) && !w.has(locked) && !w.has("$users"), [...w].join(","));
    const r = streamsOf(await collect(client("reader", PW.reader).readAll({ maxCount: 100000 })));
    assert.ok(r.has(open) && r.has(locked) && !r.has("$users"));
    const a = streamsOf(await collect(client("admin", ADMIN_PW).readAll({ maxCount: 100000 })));
    assert.ok(a.has(open) && a.has(locked) && a.has("$users"));
    // A catch-up subscription to $all: history filtered the same way.
    const sub = client("writer", PW.writer).subscribeToAll({ fromPosition: START });
    const seen = new Set();
    for await (const e of sub) {
      seen.add(e.event.streamId);
      if (seen.has(open)) break;
    }
    await sub.unsubscribe();
    assert.ok(!seen.has(locked) && !seen.has("$users"), [...seen].join(","));
  });

  it("view streams ($et-, $ce-) are filtered to the streams the user may read", async () => {
    const streamsOf = async (c, view) => new Set((await collect(c.readStream(view, { resolveLinkTos: true, maxCount: 100000 })))
      .map((e) => e.event && e.event.streamId));
    const w = await streamsOf(client("writer", PW.writer), "$et-t");
    assert.ok(w.has(open) && !w.has(locked), [...w].join(","));
    const r = await streamsOf(client("reader", PW.reader), "$et-t");
    assert.ok(r.has(open) && r.has(locked), [...r].join(","));
    const wc = await streamsOf(client("writer", PW.writer), "$ce-locked");
    assert.ok(!wc.has(locked), [...wc].join(","));
    const rc = await streamsOf(client("reader", PW.reader), "$ce-locked");
    assert.ok(rc.has(locked), [...rc].join(","));
    // A subscription to a view: history filtered the same way.
    const sub = client("writer", PW.writer).subscribeToStream("$et-t", { fromRevision: START, resolveLinkTos: true });
    const seen = new Set();
    for await (const e of sub) {
      seen.add(e.event.streamId);
      if (seen.has(open)) break;
    }
    await sub.unsubscribe();
    assert.ok(!seen.has(locked), [...seen].join(","));
  });

  it("multi-stream appends: $w on every stream, all or nothing", async () => {
    const DENIED = "AccessDeniedError/access-denied";
    const rec = (streamName, i) => ({ streamName, record: ev(i) });
    const count = async (s) => (await rest("GET", `/streams/${s}?limit=10000`)).json.events.length;
    const secret = uniq("secret");
    let r = await rest("POST", `/streams/${secret}`, [{ type: "t", data: {} }]);
    assert.equal(r.status, 201, r.raw);
    r = await rest("PUT", `/streams/${secret}/metadata`, { $acl: { $r: "$admins", $w: "$admins" } });
    assert.ok(r.status === 200 || r.status === 201, r.raw);
    const writer = client("writer", PW.writer), reader = client("reader", PW.reader);
    const before = [await count(open), await count(locked)];
    // A writer appends atomically to two streams it may write.
    assert.equal(await outcome(writer.appendRecords([rec(open, 1), rec(locked, 2), rec(open, 3)])), "ok");
    assert.equal(await outcome(writer.multiStreamAppend([
      { streamName: open, expectedState: ANY, events: [ev(4)] },
      { streamName: locked, expectedState: ANY, events: [ev(5)] }])), "ok");
    assert.deepEqual([await count(open), await count(locked)], [before[0] + 3, before[1] + 2]);
    // Refused as a whole when one stream is not writable: nothing written.
    const mid = [await count(open), await count(locked), await count(secret)];
    const refused = [
      ["reader, AppendRecords", () => reader.appendRecords([rec(open, 6), rec(locked, 7)])],
      ["writer, AppendRecords", () => writer.appendRecords([rec(open, 6), rec(secret, 7)])],
      ["writer, a check on a stream it may neither read nor write",
       () => writer.appendRecords([rec(open, 6)], [{ type: STREAM_STATE, streamName: secret, expectedState: ANY }])],
      ["reader, AppendSession", () => reader.multiStreamAppend([
        { streamName: open, expectedState: ANY, events: [ev(6)] },
        { streamName: locked, expectedState: ANY, events: [ev(7)] }])],
    ];
    for (const [name, f] of refused) assert.equal(await outcome(f()), DENIED, name);
    assert.deepEqual([await count(open), await count(locked), await count(secret)], mid, "nothing written");
    // A check on a stream the user may read passes.
    assert.equal(await outcome(reader.appendRecords([rec(open, 8)],
      [{ type: STREAM_STATE, streamName: locked, expectedState: ANY }])), "ok");
  });

  it("wrong passwords and unknown users are refused (UNAUTHENTICATED); nothing is written", async () => {
    const s = uniq("wrongpw");
    for (const c of [client("admin", "not-the-password"), client("nobody", "x")]) {
      await assert.rejects(c.appendToStream(s, ev()), (e) => {
        assert.match(e.message, /UNAUTHENTICATED|wrong user name or password/);
        return true;
      });
      await assert.rejects(collect(c.readStream(open)));
    }
    const r = await rest("GET", `/streams/${s}`);
    assert.equal(r.status, 404, "nothing was written");
  });

  it("per-call credentials override the connection's", async () => {
    const c = client("reader", PW.reader);
    assert.equal(await outcome(c.appendToStream(locked, ev())), "AccessDeniedError/access-denied");
    assert.equal(await outcome(c.appendToStream(locked, ev(), {
      credentials: { username: "writer", password: PW.writer } })), "ok");
  });

  it("the Users service (grpc-js with our proto/users.proto): every method, admins only", async () => {
    const grpc = require("@grpc/grpc-js");
    const loader = require("@grpc/proto-loader");
    const def = loader.loadSync(path.resolve(__dirname, "../../proto/users.proto"),
                                { keepCase: false, longs: String, defaults: true });
    const Users = grpc.loadPackageDefinition(def).event_store.client.users.Users;
    const stub = new Users(`localhost:${srv.port}`,
                           grpc.credentials.createSsl(fs.readFileSync(path.join(pki, "ca.pem"))));
    const md = (u, p) => {
      const m = new grpc.Metadata();
      m.set("authorization", "Basic " + Buffer.from(`${u}:${p}`).toString("base64"));
      return m;
    };
    const unary = (method, req, m) => new Promise((resolve) =>
      stub[method](req, m, (err, res) => resolve(err ? { code: err.code, details: err.details,
        exception: err.metadata.get("exception")[0] } : { code: 0, res })));
    const details = (name, m) => new Promise((resolve) => {
      const out = [];
      const call = stub.Details({ options: { loginName: name } }, m);
      call.on("data", (d) => out.push(d.userDetails));
      call.on("error", (err) => resolve({ code: err.code, out }));
      call.on("end", () => resolve({ code: 0, out }));
    });
    const admin = md("admin", ADMIN_PW);
    const name = uniq("u");
    const t0 = BigInt(Date.now() - 3600000) * 10000n; // .NET ticks since the Unix epoch
    let r = await unary("Create", { options: { loginName: name, password: "pw-1", fullName: "U One", groups: ["readers"] } }, admin);
    assert.equal(r.code, 0, JSON.stringify(r));
    r = await unary("Create", { options: { loginName: name, password: "pw-1" } }, admin);
    assert.equal(r.code, grpc.status.ALREADY_EXISTS);
    r = await details(name, admin);
    assert.equal(r.code, 0);
    assert.deepEqual([r.out[0].loginName, r.out[0].fullName, r.out[0].groups, r.out[0].disabled],
                     [name, "U One", ["readers"], false]);
    const created = BigInt(r.out[0].lastUpdated.ticksSinceEpoch);
    assert.ok(created > t0 && created < BigInt(Date.now() + 3600000) * 10000n,
              `last_updated is the creation time: ${created}`);
    // The new user reads the locked stream through its group.
    assert.equal(await outcome(collect(client(name, "pw-1").readStream(locked))), "ok");
    // Not an admin: denied as KurrentDB does.
    r = await unary("Create", { options: { loginName: uniq("x"), password: "p" } }, md(name, "pw-1"));
    assert.deepEqual([r.code, r.exception], [grpc.status.PERMISSION_DENIED, "access-denied"]);
    r = await details("", md(name, "pw-1"));
    assert.equal(r.code, grpc.status.PERMISSION_DENIED);
    r = await details(name, md(name, "pw-1"));
    assert.equal(r.code, 0, "own details");
    // Update, disable, enable.
    r = await unary("Update", { options: { loginName: name, fullName: "U Two", groups: [] } }, admin);
    assert.equal(r.code, 0);
    assert.equal(await outcome(collect(client(name, "pw-1").readStream(locked))), "AccessDeniedError/access-denied");
    assert.equal((await unary("Disable", { options: { loginName: name } }, admin)).code, 0);
    const dis = (await details(name, admin)).out[0];
    assert.equal(dis.disabled, true);
    assert.ok(BigInt(dis.lastUpdated.ticksSinceEpoch) > created, "an update and a disable move last_updated");
    assert.equal((await unary("Enable", { options: { loginName: name } }, admin)).code, 0);
    // Passwords: a wrong current one, the right one, a reset.
    r = await unary("ChangePassword", { options: { loginName: name, currentPassword: "nope", newPassword: "pw-2" } }, md(name, "pw-1"));
    assert.equal(r.code, grpc.status.UNAUTHENTICATED);
    r = await unary("ChangePassword", { options: { loginName: name, currentPassword: "pw-1", newPassword: "pw-2" } }, md(name, "pw-1"));
    assert.equal(r.code, 0, JSON.stringify(r));
    assert.equal((await details(name, md(name, "pw-1"))).code, grpc.status.UNAUTHENTICATED, "the old password is refused at once");
    assert.equal((await details(name, md(name, "pw-2"))).code, 0);
    r = await unary("ResetPassword", { options: { loginName: name, newPassword: "pw-3" } }, admin);
    assert.equal(r.code, 0);
    assert.equal((await details(name, md(name, "pw-3"))).code, 0);
    // Bad input and unknown users.
    assert.equal((await unary("Create", { options: { loginName: "bad name", password: "p" } }, admin)).code, grpc.status.INVALID_ARGUMENT);
    assert.equal((await unary("Create", { options: { loginName: uniq("e"), password: "" } }, admin)).code, grpc.status.INVALID_ARGUMENT);
    assert.equal((await unary("Delete", { options: { loginName: uniq("none") } }, admin)).code, grpc.status.NOT_FOUND);
    assert.equal((await unary("Delete", { options: { loginName: name } }, admin)).code, 0);
    assert.equal((await details(name, admin)).code, grpc.status.NOT_FOUND);
    stub.close();
  });

  it("a denial is audited in the server log", async () => {
    const log = fs.readFileSync(srv.logPath, "utf8");
    assert.match(log, /msg=audit user="reader" .*action="\/event_store\.client\.streams\.Streams\/[A-Za-z]*Append" result=denied/);
    assert.doesNotMatch(log, new RegExp(PW.reader));
    assert.doesNotMatch(log, new RegExp(ADMIN_PW));
  });
});
