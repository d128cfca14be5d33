// Helpers for the gRPC integration tests: start a real `stele serve` on a
// free port in a temporary directory (the STELE_READY_FD protocol of
// tests/http/stele_server.py: the server writes "ready <port>\n" on that fd
// once it listens), a plain HTTP/1.1 client for the REST API on the same
// port, and the protocol's generated stubs for raw calls.
//
// To chase a failure: STELE_TEST_SERVER_ARGS adds arguments to every
// server (e.g. "--log-level debug": one line per gRPC call, and one per
// stream reset after its status), and STELE_TEST_LOGDIR names a directory
// where each server's log is copied before its temporary directory goes.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const http = require("node:http");
const os = require("node:os");
const path = require("node:path");

const STELE_BIN = process.env.STELE_BIN || path.resolve(__dirname, "../../build/stele");
const QUICK = !!process.env.TEST_QUICK;

class SteleServer {
  constructor(args = []) {
    const extra = (process.env.STELE_TEST_SERVER_ARGS || "").split(" ").filter(Boolean);
    this.args = [...args, ...extra];
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), "stele-grpc-"));
    this.dataDir = path.join(this.tmp, "data");
    this.logPath = path.join(this.tmp, "server.log");
    this.proc = null;
    this.port = null;
  }

  async start(timeoutMs = 30000) {
    if (!fs.existsSync(STELE_BIN)) throw new Error(`stele binary not found: ${STELE_BIN} (set STELE_BIN)`);
    const log = fs.openSync(this.logPath, "a");
    this.proc = spawn(
      STELE_BIN,
      ["serve", "--port", "0", "--data", this.dataDir, ...this.args],
      { stdio: ["ignore", log, log, "pipe"], env: { ...process.env, STELE_READY_FD: "3" } },
    );
    fs.closeSync(log);
    const exited = new Promise((resolve) => this.proc.once("exit", (code, sig) => resolve({ code, sig })));
    this.exited = exited;
    const ready = new Promise((resolve, reject) => {
      let got = "";
      this.proc.stdio[3].on("data", (chunk) => {
        got += chunk.toString();
        const m = /ready (\d+)\n/.exec(got);
        if (m) resolve(Number(m[1]));
      });
      exited.then(({ code, sig }) =>
        reject(new Error(`server exited (${code ?? sig}) before ready:\n${this.logTail()}`)));
      setTimeout(() => reject(new Error(`server not ready in ${timeoutMs} ms:\n${this.logTail()}`)), timeoutMs).unref();
    });
    this.port = await ready;
    return this;
  }

  get conn() {
    return `kurrentdb://127.0.0.1:${this.port}?tls=false`;
  }

  get esdbConn() {
    return `esdb://127.0.0.1:${this.port}?tls=false`;
  }

  logTail(n = 40) {
    try {
      return fs.readFileSync(this.logPath, "utf8").split("\n").slice(-n).join("\n");
    } catch {
      return "";
    }
  }

  // SIGTERM, wait for a clean exit; returns the exit code.
  async stop() {
    if (!this.proc) return null;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), 15000);
    const { code } = await this.exited;
    clearTimeout(timer);
    this.proc = null;
    return code;
  }

  cleanup() {
    const keep = process.env.STELE_TEST_LOGDIR;
    if (keep && fs.existsSync(this.logPath))
      fs.copyFileSync(this.logPath, path.join(keep, `server-${process.pid}-${path.basename(this.tmp)}.log`));
    fs.rmSync(this.tmp, { recursive: true, force: true });
  }

  // Resident memory of the server in KiB (Linux /proc).
  rssKiB() {
    const s = fs.readFileSync(`/proc/${this.proc.pid}/status`, "utf8");
    return Number(/VmRSS:\s+(\d+)/.exec(s)[1]);
  }

  // One HTTP/1.1 request to the REST API on the same port.
  request(method, urlPath, { body, headers = {} } = {}) {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(body);
      const req = http.request(
        {
          host: "127.0.0.1",
          port: this.port,
          method,
          path: urlPath,
          headers: { ...(data ? { "content-type": "application/json", "content-length": data.length } : {}), ...headers },
          agent: false,
        },
        (res) => {
          const chunks = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            const raw = Buffer.concat(chunks);
            let json;
            try {
              json = JSON.parse(raw.toString("utf8"));
            } catch {
              json = undefined;
            }
            resolve({ status: res.statusCode, headers: res.headers, raw, json });
          });
        },
      );
      req.on("error", reject);
      if (data) req.write(data);
      req.end();
    });
  }
}

// The protocol's generated code (messages and service stubs) as shipped
// inside one of the client packages ("kurrent" or "esdb"), for raw calls
// that check the wire. Load only one package's generated code per process:
// both register the same global protobuf names.
function protocol(which = "kurrent") {
  const v1 =
    which === "kurrent"
      ? path.join(path.dirname(require.resolve("@kurrent/kurrentdb-client/package.json")), "generated/kurrentdb/protocols/v1")
      : path.join(path.dirname(require.resolve("@eventstore/db-client/package.json")), "generated");
  const f = (a, b) => require(path.join(v1, which === "kurrent" ? a : b));
  return {
    streams: f("streams_pb", "streams_pb"),
    streamsGrpc: f("streams_grpc_pb", "streams_grpc_pb"),
    shared: f("shared_pb", "shared_pb"),
    features: f("serverfeatures_pb", "serverfeatures_pb"),
    featuresGrpc: f("serverfeatures_grpc_pb", "serverfeatures_grpc_pb"),
    gossip: f("gossip_pb", "gossip_pb"),
    gossipGrpc: f("gossip_grpc_pb", "gossip_grpc_pb"),
    operations: f("operations_pb", "operations_pb"),
    operationsGrpc: f("operations_grpc_pb", "operations_grpc_pb"),
    persistentGrpc: f("persistentsubscriptions_grpc_pb", "persistent_grpc_pb"),
    projectionsGrpc: f("projectionmanagement_grpc_pb", "projections_grpc_pb"),
    status: which === "kurrent" ? f("status_pb") : undefined,
    // The v2 protocol (multi-stream appends): @kurrent/kurrentdb-client only.
    ...(which === "kurrent"
      ? {
          v2streams: require(path.join(v1, "../v2/streams/streams_pb")),
          v2streamsGrpc: require(path.join(v1, "../v2/streams/streams_grpc_pb")),
          v2errors: require(path.join(v1, "../v2/streams/errors_pb")),
        }
      : {}),
  };
}

// Collect a readable of events into an array.
async function collect(iterable) {
  const out = [];
  for await (const x of iterable) out.push(x);
  return out;
}

// Run `fn` until it returns truthy or `ms` passes.
async function waitFor(fn, ms = 10000, what = "condition") {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

module.exports = { SteleServer, protocol, collect, waitFor, QUICK, STELE_BIN };
