// Helpers for the web UI's browser tests and benchmark: a real `stele
// serve` on a free port in a temporary directory (the STELE_READY_FD
// protocol: the server writes "ready <port>\n" on fd 3 once it listens),
// restartable on the same port and store, a JSON client for the API, and
// Debian's chromium driven by playwright-core.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const STELE_BIN = process.env.STELE_BIN || path.resolve(here, '../../build/stele');
export const ARTIFACTS = process.env.STELE_UI_ARTIFACTS || path.resolve(here, '../../build/ui-artifacts');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Temporary directories are removed at exit whatever happened (a failed
// test, a hook that did not finish), and servers still running are killed.
const live = new Set();
process.on('exit', () => {
  for (const s of live) {
    try { if (s.proc) s.proc.kill('SIGKILL'); } catch { /* gone */ }
    fs.rmSync(s.tmp, { recursive: true, force: true });
  }
});

export class Server {
  constructor({ dataDir = null, args = [] } = {}) {
    this.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'stele-ui-'));
    live.add(this);
    this.dataDir = dataDir || path.join(this.tmp, 'data');
    this.ownData = !dataDir;
    this.logPath = path.join(this.tmp, 'server.log');
    this.args = args;
    this.port = 0;
    this.proc = null;
  }
  async start(timeoutMs = 60000) {
    if (!fs.existsSync(STELE_BIN)) throw new Error(`stele binary not found: ${STELE_BIN}`);
    const log = fs.openSync(this.logPath, 'a');
    this.proc = spawn(STELE_BIN, ['serve', '--port', String(this.port), '--data', this.dataDir, ...this.args],
      { stdio: ['ignore', log, log, 'pipe'], env: { ...process.env, STELE_READY_FD: '3' } });
    fs.closeSync(log);
    this.exited = new Promise(r => this.proc.once('exit', (code, sig) => r({ code, sig })));
    this.port = await new Promise((resolve, reject) => {
      let got = '';
      this.proc.stdio[3].on('data', c => { got += c; const m = /ready (\d+)\n/.exec(got); if (m) resolve(Number(m[1])); });
      this.exited.then(({ code, sig }) => reject(new Error(`server exited (${code ?? sig}) before ready:\n${this.logTail()}`)));
      setTimeout(() => reject(new Error(`server not ready in ${timeoutMs} ms`)), timeoutMs).unref();
    });
    return this;
  }
  get url() { return `http://127.0.0.1:${this.port}`; }
  logTail(n = 30) { try { return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-n).join('\n'); } catch { return ''; } }
  async stop() {
    if (!this.proc) return;
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc && this.proc.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(t);
    this.proc = null;
  }
  cleanup() { fs.rmSync(this.tmp, { recursive: true, force: true }); live.delete(this); }

  // The JSON API: answers {status, json}; throws on a network error.
  async api(method, p, body, headers = {}) {
    const res = await fetch(this.url + p, {
      method, headers: { ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json; try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: res.status, json, text };
  }
}

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
}

// A page that records every dialog (alert/confirm/prompt: the UI opens
// none, so any is a script that should not have run), every uncaught
// error and every console error (a CSP violation is one).
export async function watchedPage(browser, opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, timezoneId: 'UTC', ...opts });
  const page = await ctx.newPage();
  page.problems = [];
  page.on('dialog', d => { page.problems.push('dialog: ' + d.message()); d.dismiss().catch(() => {}); });
  page.on('pageerror', e => page.problems.push('pageerror: ' + e.message));
  // (answers with an error status and refused connections are logged by
  // the browser itself as "Failed to load resource": expected, not kept)
  page.on('console', m => {
    if (m.type() === 'error' && !/Failed to load resource|net::ERR_/.test(m.text())) page.problems.push('console: ' + m.text());
  });
  return page;
}

export function shot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  return page.screenshot({ path: path.join(ARTIFACTS, name + '.png'), fullPage: false });
}
