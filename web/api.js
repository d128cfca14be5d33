// api.js - the one door to the server. Every request of the UI goes
// through api() (and every event stream through stream()), so that
// authentication (issue 17) is added in one place: authHeaders() returns
// the headers a request needs, and a 401 can send the user to a login.
// It also tracks whether the server answers, for the header's indicator.

let credentials = null; // {header, value} once a login exists (issue 17)
export function setCredentials(c) { credentials = c; }
function authHeaders() {
  return credentials ? { [credentials.header]: credentials.value } : {};
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
// opts: {method, json (a value sent as JSON), body+type (raw), headers, signal}.
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
    throw new ApiError(res.status, err.code, err.message, data);
  }
  return data;
}

// Server-Sent Events through EventSource (it reconnects by itself and
// resumes with Last-Event-ID). handlers: {message(ev), <event name>(ev),
// open(), error()}. Returns a close function. EventSource cannot send
// headers: with authentication this is where a cookie or a token in the
// query string comes in.
export function stream(path, handlers) {
  const es = new EventSource(path);
  es.onopen = () => { setUp(true); handlers.open && handlers.open(); };
  es.onerror = () => { handlers.error && handlers.error(es.readyState); };
  es.onmessage = handlers.message;
  for (const k of Object.keys(handlers))
    if (!['message', 'open', 'error'].includes(k)) es.addEventListener(k, handlers[k]);
  return () => es.close();
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
