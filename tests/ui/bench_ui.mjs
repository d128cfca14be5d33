// The web UI's benchmark (make bench-ui; docs/benchmarks.md): on a served
// store (STORE, e.g. 10M events made by bench_engine build),
//   1. time to first paint and to data shown, dashboard and a stream page
//      and the $ce- view of the store's category (its millions of events),
//      each in a fresh browser context (no HTTP cache), ROUNDS times;
//   2. the live tail while a writer appends RATE events/s for SECS s:
//      frame intervals (requestAnimationFrame), long tasks (> 50 ms,
//      PerformanceObserver), the rate the page shows and whether it says
//      it samples.
// Prints one line per measure (name key=value ...). Nothing is judged.
import { Server, launch } from './lib.mjs';

const STORE = process.env.STORE;
const ROUNDS = Number(process.env.ROUNDS || 7);
const RATE = Number(process.env.RATE || 10000);
const SECS = Number(process.env.SECS || 10);
if (!STORE) { console.error('STORE=<store directory> is required'); process.exit(2); }

const med = a => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const pct = (a, p) => { const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };

const srv = await new Server({ dataDir: STORE }).start(600000);
const browser = await launch();
try {
  const info = (await srv.api('GET', '/info')).json;
  console.log(`store events=${info.store.events} streams=${info.store.streams} log_bytes=${info.store.logBytes} segments=${info.store.segments}`);
  // a stream of the store, and its category: the one with the most events
  // (bench_engine build: stream-NNNNNN, category "stream", all but 2,000)
  const cats = (await srv.api('GET', '/categories?excludeSystem=true&limit=10000')).json.categories;
  const top = cats.reduce((a, b) => (b.count > a.count ? b : a));
  const cat = top.name;
  const s = (await srv.api('GET', '/streams?prefix=' + encodeURIComponent(cat + '-') + '&limit=1')).json.streams[0].name;
  console.log(`pages stream=${s} category=${cat} category_events=${top.count}`);
  const pages = [
    ['dashboard', '/', () => /\d/.test(document.querySelector('#m-stored')?.textContent || '')],
    ['stream', '/#/stream/' + encodeURIComponent(s), () => document.querySelectorAll('#events tbody tr').length > 0],
    ['category_view', '/#/stream/' + encodeURIComponent('$ce-' + cat), () => document.querySelectorAll('#events tbody tr').length > 0],
    ['streams_list', '/#/streams', () => document.querySelectorAll('#main tbody tr').length > 0],
  ];
  for (const [name, url, ready] of pages) {
    const fcp = [], shown = [];
    for (let i = 0; i < ROUNDS; i++) {
      const ctx = await browser.newContext();
      const page = await ctx.newPage();
      await page.goto(srv.url + url);
      await page.waitForFunction(ready, null, { timeout: 60000, polling: 'raf' });
      const t = await page.evaluate(() => ({
        shown: performance.now(),
        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
      }));
      fcp.push(t.fcp); shown.push(t.shown);
      await ctx.close();
    }
    console.log(`first_paint page=${name} rounds=${ROUNDS} fcp_ms_median=${med(fcp).toFixed(0)} fcp_ms_max=${Math.max(...fcp).toFixed(0)} ` +
      `data_shown_ms_median=${med(shown).toFixed(0)} data_shown_ms_max=${Math.max(...shown).toFixed(0)}`);
  }

  // live tail under RATE events/s
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  await page.goto(srv.url + '/#/live?excludeSystem=true');
  await page.locator('#tail-state', { hasText: 'live' }).waitFor({ timeout: 60000 });
  await page.evaluate(() => {
    window.__frames = []; window.__long = [];
    let last = performance.now();
    const f = t => { window.__frames.push(t - last); last = t; if (!window.__stop) requestAnimationFrame(f); };
    requestAnimationFrame(f);
    new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: false });
    window.__rates = []; window.__sampling = 0;
    window.__probe = setInterval(() => {
      window.__rates.push(document.querySelector('#rate').textContent);
      if (document.querySelector('#sampling').textContent) window.__sampling++;
    }, 1000);
  });
  const batch = 100, perTick = RATE / batch; // appends per second
  const body = JSON.stringify(Array.from({ length: batch }, (_, i) => ({ type: 'Tail', data: { i, pad: 'x'.repeat(150) } })));
  let sent = 0, failed = 0;
  const t0 = Date.now();
  const inflight = new Set();
  while (Date.now() - t0 < SECS * 1000) {
    const due = Math.floor(((Date.now() - t0) / 1000) * perTick);
    while (sent < due && inflight.size < 64) {
      const p = fetch(srv.url + '/streams/Tail-' + (sent % 16), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body })
        .then(r => { if (r.status !== 201) failed++; return r.arrayBuffer(); }).catch(() => { failed++; })
        .finally(() => inflight.delete(p));
      inflight.add(p); sent++;
    }
    await new Promise(r => setTimeout(r, 5));
  }
  await Promise.all(inflight);
  const secs = (Date.now() - t0) / 1000;
  const r = await page.evaluate(() => { window.__stop = 1; clearInterval(window.__probe); return { frames: window.__frames.slice(5), long: window.__long, rates: window.__rates, sampling: window.__sampling }; });
  console.log(`live_tail target_events_per_s=${RATE} written_events_per_s=${((sent - failed) * batch / secs).toFixed(0)} failed_appends=${failed} secs=${secs.toFixed(1)} ` +
    `frames=${r.frames.length} frame_ms_p50=${pct(r.frames, 0.5).toFixed(1)} frame_ms_p99=${pct(r.frames, 0.99).toFixed(1)} frame_ms_max=${Math.max(...r.frames).toFixed(1)} ` +
    `long_tasks=${r.long.length} long_task_ms_max=${(r.long.length ? Math.max(...r.long) : 0).toFixed(0)} seconds_sampling=${r.sampling} ` +
    `shown_rates="${r.rates.slice(2, -1).join(',')}"`);
  await ctx.close();
} finally {
  await browser.close();
  await srv.stop();
  srv.cleanup();
}
