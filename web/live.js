// live.js - the live tail: GET /subscribe/all (or /subscribe/streams/S)
// over Server-Sent Events, from the end, with the server's filters.
//
// Staying responsive: events are queued as they arrive (their JSON is not
// even parsed) and drawn ten times a second, in one animation frame. When
// more arrived since the last draw than MAX_PER_DRAW (200 events/s: more
// than anyone reads), only the newest ones are drawn and the page says it
// is sampling, with the true rate beside; the table (fixed layout, so a
// new row does not re-measure the others) keeps the newest MAX_ROWS rows. Pausing stops drawing (the connection stays, the
// count of events missed is shown); resuming draws from the newest again.
import { stream as sse, enc } from './api.js';
import { h, link, fmtNum } from './dom.js';

const MAX_PER_DRAW = 20;
const DRAW_MS = 100;
const MAX_ROWS = 200;

export function livePage(main, segs, params) {
  const f = k => params.get(k) || '';
  const fields = ['stream', 'streamPrefix', 'category', 'type', 'tag'];
  const labels = { stream: 'one stream', streamPrefix: 'stream prefix', category: 'category', type: 'type', tag: 'tag' };
  const inputs = Object.fromEntries(fields.map(k => [k, h('input', { name: k, value: f(k), size: 14 })]));
  const excl = h('input', { type: 'checkbox', name: 'excludeSystem', checked: params.get('excludeSystem') !== 'false' });
  const rate = h('span.rate', { id: 'rate', role: 'status' }, '0 events/s');
  const sampling = h('span', { id: 'sampling', role: 'status' });
  const state = h('span.muted', { id: 'tail-state' }, 'connecting…');
  const pause = h('button', { type: 'button', id: 'pause', 'aria-pressed': 'false' }, 'Pause');
  const body = h('tbody', { id: 'tail' });
  main.append(h('h1', null, 'Live'),
    h('form', {
      onsubmit: e => {
        e.preventDefault();
        const q = new URLSearchParams();
        for (const k of fields) if (inputs[k].value) q.set(k, inputs[k].value);
        if (!excl.checked) q.set('excludeSystem', 'false');
        location.hash = '#/live' + (q.toString() ? '?' + q : '');
      }
    }, fields.map(k => h('label', null, labels[k], inputs[k])), h('label.inline', null, excl, ' no system streams'),
    h('button.primary', { type: 'submit' }, 'Tail')),
    h('div.bar', null, pause, rate, sampling, state),
    h('div.scroll', null, h('table.tail', null, h('colgroup', null, h('col.c-pos'), h('col.c-stream'), h('col.c-rev'), h('col.c-type'), h('col.c-created.hide-s')), h('thead', null, h('tr', null, h('th.num', null, 'position'),
      h('th', null, 'stream'), h('th.num', null, 'rev'), h('th', null, 'type'), h('th.hide-s', null, 'created'))), body)));

  let path;
  if (f('stream')) path = '/subscribe/streams/' + enc(f('stream')) + '?from=end';
  else {
    const q = new URLSearchParams({ from: 'end' });
    for (const k of fields.slice(1)) if (f(k)) q.set(k, f(k));
    if (params.get('excludeSystem') !== 'false') q.set('excludeSystem', 'true');
    path = '/subscribe/all?' + q;
  }
  let queue = [], paused = false, missed = 0, count = 0, dropped = 0;
  let raf = 0, timer = 0, lastRate = performance.now();
  const rateTimer = setInterval(() => {
    const now = performance.now(), dt = (now - lastRate) / 1000;
    rate.textContent = fmtNum(count / dt) + ' events/s';
    sampling.textContent = dropped ? `sampling: drawing ${fmtNum((count - dropped) / dt)} of ${fmtNum(count / dt)} events/s` : '';
    sampling.className = dropped ? 'msg warn' : '';
    count = 0; dropped = 0; lastRate = now;
    if (paused) state.textContent = `paused: ${fmtNum(missed)} events not shown`;
  }, 1000);
  function frame() {
    raf = 0; timer = 0;
    if (paused) { missed += queue.length; queue = []; return; }
    let batch = queue;
    queue = [];
    if (batch.length > MAX_PER_DRAW) { dropped += batch.length - MAX_PER_DRAW; batch = batch.slice(-MAX_PER_DRAW); }
    const frag = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i--) {
      let e;
      try { e = JSON.parse(batch[i]); } catch { continue; }
      frag.append(h('tr', null, h('td.num', null, String(e.position)),
        h('td', null, link(e.stream, 'stream', [e.stream])),
        h('td.num', null, link(String(e.revision), 'event', [e.stream, String(e.revision)])),
        h('td', null, e.type), h('td.hide-s', null, e.created)));
    }
    body.prepend(frag);
    while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  }
  const close = sse(path, {
    open: () => { state.textContent = 'live'; },
    error: (permanent, msg) => { state.textContent = permanent ? 'refused: ' + msg : 'disconnected: reconnecting…'; },
    message: data => {
      count++;
      queue.push(data);
      if (queue.length > 5000) { dropped += queue.length - 5000; queue = queue.slice(-5000); }
      if (!timer) timer = setTimeout(() => { raf = requestAnimationFrame(frame); }, DRAW_MS);
    },
    'caught-up': () => { state.textContent = 'live'; },
    'fell-behind': data => { state.textContent = 'fell behind the head, catching up from disk: ' + data; },
    deleted: () => { state.textContent = 'the stream was tombstoned'; },
  });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    pause.setAttribute('aria-pressed', String(paused));
    if (!paused) { missed = 0; state.textContent = 'live'; }
    else state.textContent = 'paused';
  });
  return () => { close(); clearInterval(rateTimer); clearTimeout(timer); if (raf) cancelAnimationFrame(raf); };
}
