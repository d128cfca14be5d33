// dashboard.js - the server at a glance, from GET /metrics (Prometheus
// text) and GET /info, polled every second. Rates are differences of
// counters between two polls; append latency p50/p99 come from the
// differences of the histogram's buckets over the last 10 s (the bucket's
// upper bound: "≤ 2.5 ms").
import { api } from './api.js';
import { h, fmtNum, fmtBytes, errBox } from './dom.js';

export function parseMetrics(text) {
  const m = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const sp = line.lastIndexOf(' ');
    m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return m;
}
function buckets(m, name) {
  const out = [];
  for (const [k, v] of m) {
    if (!k.startsWith(name + '_bucket{le="')) continue;
    const le = k.slice(name.length + 12, -2);
    out.push([le === '+Inf' ? Infinity : Number(le), v]);
  }
  return out.sort((a, b) => a[0] - b[0]);
}
function quantile(prev, cur, q) {
  const d = cur.map(([le, v], i) => [le, v - (prev[i] ? prev[i][1] : 0)]);
  const total = d.length ? d[d.length - 1][1] : 0;
  if (!total) return null;
  for (const [le, v] of d) if (v >= q * total) return le;
  return Infinity;
}
const ms = s => s === null ? '–' : s === Infinity ? '> 2.5 s' : '≤ ' + (s * 1000).toPrecision(2) + ' ms';

function card(label, id) {
  const v = h('div.v', { id: 'm-' + id }, '–');
  const c = h('canvas', { width: 200, height: 36, 'aria-hidden': 'true' });
  return { el: h('div.card', null, h('div.k', null, label), v, c), v, c, pts: [] };
}
function draw(cd) {
  const ctx = cd.c.getContext('2d');
  const w = cd.c.width, ht = cd.c.height;
  ctx.clearRect(0, 0, w, ht);
  const pts = cd.pts.filter(x => Number.isFinite(x));
  if (pts.length < 2) return;
  const max = Math.max(...pts, 1e-9);
  ctx.strokeStyle = getComputedStyle(document.body).getPropertyValue('--acc') || '#1f5fa8';
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  cd.pts.forEach((p, i) => {
    const x = (i / 59) * w, y = ht - 2 - ((Number.isFinite(p) ? p : 0) / max) * (ht - 4);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

export function dashboard(main) {
  const defs = [['appends/s', 'appends'], ['events/s', 'events'], ['append p50', 'p50'], ['append p99', 'p99'],
    ['reads/s', 'reads'], ['connections', 'conns'], ['subscribers', 'subs'], ['store size', 'size'],
    ['events stored', 'stored'], ['segments', 'segments'], ['streams', 'streams'], ['state', 'state']];
  const cards = Object.fromEntries(defs.map(([l, id]) => [id, card(l, id)]));
  const err = h('div');
  main.append(h('h1', null, 'Dashboard'), err, h('div.cards', null, defs.map(([, id]) => cards[id].el)),
    h('p.muted', null, 'Live from /metrics and /info every second; latency quantiles over the last 10 s.'));
  let prev = null;
  const hist = [];
  let timer = null, stopped = false;
  const set = (id, text, val) => {
    const cd = cards[id];
    cd.v.textContent = text;
    cd.pts.push(val); if (cd.pts.length > 60) cd.pts.shift();
    draw(cd);
  };
  async function tick() {
    try {
      const [text, info] = await Promise.all([api('/metrics', { headers: { Accept: 'text/plain' } }), api('/info')]);
      const m = parseMetrics(text);
      const now = performance.now();
      const b = buckets(m, 'stele_append_latency_seconds');
      hist.push(b); if (hist.length > 11) hist.shift();
      if (prev) {
        const dt = (now - prev.t) / 1000;
        const rate = k => Math.max(0, ((m.get(k) || 0) - (prev.m.get(k) || 0)) / dt);
        const ap = rate('stele_appends_total'), ev = rate('stele_append_events_total'), rd = rate('stele_reads_total');
        set('appends', fmtNum(ap), ap); set('events', fmtNum(ev), ev); set('reads', fmtNum(rd), rd);
        const p50 = quantile(hist[0], b, 0.5), p99 = quantile(hist[0], b, 0.99);
        set('p50', ms(p50), p50); set('p99', ms(p99), p99);
      }
      prev = { m, t: now };
      const conns = m.get('stele_connections_open'), subs = m.get('stele_subscribers');
      set('conns', fmtNum(conns), conns); set('subs', fmtNum(subs), subs);
      set('size', fmtBytes(info.store.logBytes), info.store.logBytes);
      set('stored', fmtNum(info.store.events), info.store.events);
      set('segments', fmtNum(info.store.segments), info.store.segments);
      set('streams', fmtNum(info.store.streams), info.store.streams);
      set('state', info.store.readOnly ? 'READ-ONLY' : 'writable', info.store.readOnly ? 1 : 0);
      cards.state.v.className = 'v ' + (info.store.readOnly ? 'msg err' : '');
      err.replaceChildren();
    } catch (e) {
      err.replaceChildren(errBox(e));
    }
    if (!stopped) timer = setTimeout(tick, 1000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
