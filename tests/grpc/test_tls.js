// The official KurrentDB Node client over TLS (server/tls.c): a test CA made
// here with the openssl tool, `stele serve --tls-cert --tls-key`, and the
// client with `tls=true&tlsCAFile=...`. Appends go over grpc-js, reads and
// subscriptions through the client's Rust core (tonic/hyper): both
// negotiate h2 by ALPN on the port that serves HTTP/1.1 to curl. A client
// that does not trust the CA, and one that speaks cleartext to the
// TLS-only port, fail with an error instead of hanging.
"use strict";

const { describe, it, before, after } = require("node:test");
const assert = require("node:assert/strict");
const { execFileSync } = require("node:child_process");
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const { randomUUID } = require("node:crypto");
const { SteleServer } = require("./stele_server");
const { KurrentDBClient, jsonEvent, START, FORWARDS } = require("@kurrent/kurrentdb-client");

let pki, srv;

function openssl(...args) {
  execFileSync("openssl", args, { stdio: "ignore" });
}

function makePki() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "stele-tls-js-"));
  const f = (n) => path.join(d, n);
  for (const ca of ["ca", "other-ca"])
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f(`${ca}.key`), "-out", f(`${ca}.pem`), "-days", "2", "-subj", `/CN=${ca}`);
  openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
          "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=localhost");
  fs.writeFileSync(f("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  openssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"),
          "-CAcreateserial", "-out", f("server.pem"), "-days", "2", "-extfile", f("server.ext"));
  return d;
}

const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer in ${ms} ms`)), ms).unref())]);

before(async () => {
  pki = makePki();
  srv = await new SteleServer(["--tls-cert", path.join(pki, "server.pem"),
                               "--tls-key", path.join(pki, "server.key")]).start();
});

after(async () => {
  const code = await srv.stop();
  srv.cleanup();
  fs.rmSync(pki, { recursive: true, force: true });
  assert.equal(code, 0, "the server stops cleanly");
});

describe("KurrentDB client over TLS", () => {
  it("appends, reads and subscribes with tls=true and the test CA", async () => {
    const client = KurrentDBClient.connectionString(
      `kurrentdb://localhost:${srv.port}?tls=true&tlsCAFile=${path.join(pki, "ca.pem")}`);
    try {
      const stream = `tls-${randomUUID().slice(0, 8)}`;
      const evs = [1, 2, 3].map((i) => jsonEvent({ type: "t", data: { i } }));
      const res = await client.appendToStream(stream, evs);
      assert.equal(res.success, true);
      const got = [];
      for await (const e of client.readStream(stream, { fromRevision: START, direction: FORWARDS }))
        got.push(e.event.data.i);
      assert.deepEqual(got, [1, 2, 3]);
      // A catch-up subscription: history, then a live event.
      const sub = client.subscribeToStream(stream, { fromRevision: START });
      const seen = [];
      let appended = false;
      for await (const e of sub) {
        seen.push(e.event.data.i);
        if (seen.length === 3 && !appended) {
          appended = true;
          await client.appendToStream(stream, jsonEvent({ type: "t", data: { i: 4 } }));
        }
        if (seen.length === 4) break;
      }
      await sub.unsubscribe();
      assert.deepEqual(seen, [1, 2, 3, 4]);
    } finally {
      await client.dispose();
    }
  });

  it("a client that does not trust the server's CA fails", async () => {
    const client = KurrentDBClient.connectionString(
      `kurrentdb://localhost:${srv.port}?tls=true&tlsCAFile=${path.join(pki, "other-ca.pem")}`);
    try {
      await assert.rejects(
        withTimeout(client.appendToStream("tls-untrusted", jsonEvent({ type: "t", data: {} })), 60000, "untrusted append"),
        (e) => !/no answer/.test(e.message));
    } finally {
      await client.dispose();
    }
    const r = await fetchJson(`/streams/tls-untrusted`);
    assert.equal(r.status, 404, "nothing was written");
  });

  it("a cleartext client of the TLS-only port fails instead of hanging", async () => {
    const client = KurrentDBClient.connectionString(`kurrentdb://localhost:${srv.port}?tls=false`);
    try {
      await assert.rejects(
        withTimeout(client.appendToStream("tls-cleartext", jsonEvent({ type: "t", data: {} })), 60000, "cleartext append"),
        (e) => !/no answer/.test(e.message));
    } finally {
      await client.dispose();
    }
  });
});

// GET over HTTPS on the same port (Node's https: ALPN http/1.1).
function fetchJson(p) {
  const https = require("node:https");
  return new Promise((resolve, reject) => {
    https.get({ host: "127.0.0.1", servername: "localhost", port: srv.port, path: p,
                ca: fs.readFileSync(path.join(pki, "ca.pem")), agent: false }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
    }).on("error", reject);
  });
}
