// api.js - the one door to the server. Every request of the UI goes
// through api() (and every event stream through stream()), so that
// authentication (issue 17) is added in one place: authHeaders() returns
// the headers a request needs, and a 401 can send the user to a login.
// It also tracks whether the server answers, for the header's indicator.

// Credentials live in this module's memory only (docs/ui.md, "Signing
// in"): a reload or a new tab asks again. Every request also says
// X-Requested-With, so that a 401 comes without WWW-Authenticate and the
// browser never puts up its own prompt in front of the UI's login form
// (docs/security.md). onUnauthorized(fn): fn(err) on a 401 of the gate.
let credentials = null; // {header, value} once signed in
let unauthorized = null;
export function setCredentials(c) { credentials = c; }
export function onUnauthorized(fn) { unauthorized = fn; }
function authHeaders() {
  const hd = { 'X-Requested-With': 'stele-ui' };
  if (credentials) hd[credentials.header] = credentials.value;
  return hd;
}
// HTTP Basic for a user name and password (UTF-8, as the server reads it).
export function basicCredentials(name, password) {
  const bytes = new TextEncoder().encode(name + ':' + password);
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return { header: 'Authorization', value: 'Basic ' + btoa(bin) };
}

const listeners = new Set();
let up = null;
export function onConnection(fn) { listeners.add(fn); if (up !== null) fn(up); return () => listeners.delete(fn); }
function setUp(v) {
  if (v === up) return;
  up = v;
  for (const fn of listeners) fn(v);
}
export function isUp() { return up; }

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status; this.code = code; this.body = body;
  }
}

// path: an API path whose variable parts the caller encoded (enc()).
// opts: {method, json (a value sent as JSON), body+type (raw), headers, signal,
// noLogin (a 401 is the caller's: a wrong current password, a login try)}.
// Answers the parsed JSON (or text for non-JSON answers, null for 204).
export async function api(path, opts = {}) {
  const headers = { Accept: 'application/json', ...authHeaders(), ...(opts.headers || {}) };
  let body;
  if (opts.json !== undefined) { body = JSON.stringify(opts.json); headers['Content-Type'] = 'application/json'; }
  else if (opts.body !== undefined) { body = opts.body; headers['Content-Type'] = opts.type || 'application/json'; }
  let res;
  try {
    res = await fetch(path, { method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store' });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    setUp(false);
    throw new ApiError(0, 'DISCONNECTED', 'the server does not answer (' + e.message + ')');
  }
  setUp(true);
  if (res.status === 204) return null;
  const ct = res.headers.get('Content-Type') || '';
  const text = await res.text();
  let data = text;
  if (ct.startsWith('application/json')) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: 'HTTP_' + res.status, message: String(text).slice(0, 500) };
    const e = new ApiError(res.status, err.code, err.message, data);
    if (res.status === 401 && !opts.noLogin && unauthorized) unauthorized(e);
    throw e;
  }
  return data;
}

// Server-Sent Events, read with fetch() and parsed here rather than with
// EventSource: the request can carry the same headers as api() (the
// credentials), and a burst of thousands of events costs one string split
// per network chunk instead of one DOM event each (the live tail at
// 10,000 events/s). It reconnects by itself after a second, resuming with
// Last-Event-ID, like EventSource. handlers: {message(data, id),
// <event name>(data, id), open(), error(permanent)}. Returns a close
// function.
export function stream(path, handlers) {
  let lastId = null, closed = false, ctl = null, retry = null;
  const dispatch = block => {
    let ev = 'message', data = null, id = null;
    for (const line of block.split('\n')) {
      if (!line || line[0] === ':') continue;
      const c = line.indexOf(':');
      const f = c < 0 ? line : line.slice(0, c);
      let v = c < 0 ? '' : line.slice(c + 1);
      if (v[0] === ' ') v = v.slice(1);
      if (f === 'data') data = data === null ? v : data + '\n' + v;
      else if (f === 'event') ev = v;
      else if (f === 'id') id = v;
    }
    if (id !== null) lastId = id;
    if (data !== null && handlers[ev]) handlers[ev](data, id);
  };
  async function run() {
    ctl = new AbortController();
    const headers = { Accept: 'text/event-stream', ...authHeaders() };
    if (lastId !== null) headers['Last-Event-ID'] = lastId;
    try {
      const res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
      setUp(true);
      if (!res.ok) {
        let msg = 'HTTP ' + res.status;
        try { const j = await res.json(); msg = j.error.code + ': ' + j.error.message; } catch { /* not JSON */ }
        if (res.status === 401 && unauthorized) unauthorized(new ApiError(401, 'UNAUTHENTICATED', msg));
        handlers.error && handlers.error(true, msg);
        return; // a refused request (bad filter): retrying will not help
      }
      handlers.open && handlers.open();
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        if (buf.indexOf('\r') >= 0) buf = buf.replace(/\r\n?/g, '\n');
        const blocks = buf.split('\n\n');
        buf = blocks.pop();
        for (const b of blocks) dispatch(b);
      }
    } catch (e) {
      if (closed) return;
      if (e.name !== 'AbortError') setUp(false);
    }
    if (closed) return;
    handlers.error && handlers.error(false, 'disconnected');
    retry = setTimeout(run, 1000);
  }
  run();
  return () => { closed = true; clearTimeout(retry); if (ctl) ctl.abort(); };
}

// The health poll behind the indicator: every 2 s while the UI is open.
let pollTimer = null;
export function startHealthPoll() {
  if (pollTimer) return;
  const tick = async () => {
    try { await api('/health/live'); } catch { /* setUp(false) done */ }
    pollTimer = setTimeout(tick, 2000);
  };
  tick();
}

// One path segment, encoded ("/", "%", spaces, unicode are safe).
export const enc = encodeURIComponent;
