// dom.js - building the page. Untrusted text (stream names, types, event
// bodies, error messages) only ever becomes a Text node or an attribute
// value through h(); nothing here assigns innerHTML.

// h('tag.class', {attr: v, onclick: f}, child...) with children strings
// (made Text nodes), nodes, arrays, or null/false (skipped).
export function h(spec, attrs, ...kids) {
  const [tag, ...cls] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (cls.length) el.className = cls.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    kids.unshift(attrs); attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'value') el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  add(el, kids);
  return el;
}
function add(el, kids) {
  for (const k of kids) {
    if (k === null || k === undefined || k === false) continue;
    if (Array.isArray(k)) add(el, k);
    else el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
}

// A hash link: #/page/seg1/seg2?k=v, each segment encoded.
export function href(page, segs = [], params = null) {
  let s = '#/' + page + segs.map(x => '/' + encodeURIComponent(x)).join('');
  if (params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
    const qs = q.toString();
    if (qs) s += '?' + qs;
  }
  return s;
}
export const link = (text, page, segs, params) => h('a', { href: href(page, segs, params) }, text);

export function errBox(e) {
  const where = e.status ? ` (${e.status} ${e.code})` : e.code ? ` (${e.code})` : '';
  // A refusal says so first, with the server's reason (which right is missing).
  const lead = e.status === 403 ? 'Not allowed: ' : '';
  return h('div.msg.err', { role: 'alert' }, lead + (e.message || String(e)) + where);
}
export const okBox = t => h('div.msg.ok', { role: 'status' }, t);

export function fmtNum(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return '–';
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(2) + 'G';
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(2) + 'M';
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}
export function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + u[i];
}

// Pretty JSON of a stored value, folded: a <details> whose <pre> is only
// filled when opened (a page of 1,000 events stays cheap).
export function jsonFold(label, value, open = false) {
  const pre = h('pre');
  const d = h('details', null, h('summary', null, label));
  const fill = () => { if (!pre.firstChild) { pre.textContent = pretty(value); d.append(pre); } };
  d.addEventListener('toggle', fill);
  if (open) { d.open = true; fill(); }
  return d;
}
export function pretty(v) {
  try { return JSON.stringify(v, null, 2); } catch { return String(v); }
}
// An event's body: data (JSON) or dataBase64.
export function bodyOf(e, key) {
  if (e[key] !== undefined) return e[key];
  if (e[key + 'Base64'] !== undefined) return { base64: e[key + 'Base64'] };
  return undefined;
}

// A key/value list.
export function kv(pairs) {
  const dl = h('dl.kv');
  for (const [k, v] of pairs) dl.append(h('dt', null, k), h('dd', null, v));
  return dl;
}

// A confirmation that asks for the name to be typed (no window.confirm):
// calls act() when the typed text equals `expect`.
export function confirmBox(label, expect, act) {
  const box = h('div.confirm', { role: 'group', 'aria-label': label });
  const inp = h('input', { 'aria-label': 'type the name to confirm', placeholder: expect, size: 30 });
  const go = h('button.danger', { type: 'button', disabled: true }, label);
  inp.addEventListener('input', () => { go.disabled = inp.value !== expect; });
  go.addEventListener('click', () => { if (inp.value === expect) act(); });
  box.append(h('p', null, `Type the name to confirm: `, h('code', null, expect)), inp, ' ', go);
  return box;
}

// Local time input <-> RFC 3339 UTC.
export function toRfc3339(local) {
  if (!local) return '';
  const d = new Date(local);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}
