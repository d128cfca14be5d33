// rules.js - rules (docs/rules.md): the list with their counters; a rule's
// page with its definition, pause / resume, dead letters (redrive, drop)
// and replays of a time range with their progress.
import { api, enc } from './api.js';
import { h, link, errBox, okBox, kv, fmtNum, jsonFold, toRfc3339, confirmBox } from './dom.js';

const counters = s => s ? Object.entries(s).filter(([, v]) => typeof v === 'number') : [];

export function rulesPage(main) {
  const err = h('div'), body = h('tbody');
  main.append(h('h1', null, 'Rules'), err, h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, h('th', null, 'rule'),
    h('th', null, 'state'), h('th', null, 'counters'))), body)));
  let timer, stopped = false;
  async function tick() {
    try {
      const { rules } = await api('/rules');
      body.replaceChildren(...rules.map(r => h('tr', null, h('td', null, link(r.name, 'rule', [r.name])),
        h('td', null, r.enabled === false ? 'paused' : 'running', r.lastError ? h('div.msg.err', null, r.lastError) : null),
        h('td', null, counters(r.stats).map(([k, v]) => `${k} ${fmtNum(v)}`).join(' · ')))));
      if (!rules.length) body.append(h('tr', null, h('td', { colspan: 3 }, 'No rules.')));
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 2000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export function rulePage(main, segs) {
  const name = segs[0];
  const base = '/rules/' + enc(name);
  const info = h('div'), out = h('div'), dl = h('tbody'), reps = h('div'), slot = h('div');
  const post = (path, label, json) => async () => {
    try { const r = await api(base + path, { method: 'POST', json }); out.replaceChildren(okBox(label + (r ? ': ' + JSON.stringify(r) : ''))); tick(); } catch (e) { out.replaceChildren(errBox(e)); }
  };
  const from = h('input', { type: 'datetime-local', step: 1, 'aria-label': 'replay from' }), to = h('input', { type: 'datetime-local', step: 1, 'aria-label': 'replay to' });
  main.append(h('h1', null, h('span.muted', null, 'Rule '), name), info,
    h('div.bar', null, h('button', { type: 'button', onclick: post('/pause', 'paused') }, 'Pause'), h('button', { type: 'button', onclick: post('/resume', 'resumed') }, 'Resume')), out,
    h('h2', null, 'Dead letters'),
    h('div.bar', null, h('button', { type: 'button', onclick: post('/dead-letters/redrive', 'redriving') }, 'Redrive all'),
      h('button.danger', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Drop every dead letter', name, async () => {
        try { await api(base + '/dead-letters', { method: 'DELETE' }); slot.replaceChildren(); out.replaceChildren(okBox('dead letters dropped')); tick(); } catch (e) { out.replaceChildren(errBox(e)); }
      })) }, 'Drop…')), slot,
    h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, h('th.num', null, '#'), h('th', null, 'dead letter'))), dl)),
    h('h2', null, 'Replays'),
    h('form', { onsubmit: e => { e.preventDefault(); post('/replays', 'replay started', { from: toRfc3339(from.value), to: toRfc3339(to.value) })(); } },
      h('label', null, 'from (local time)', from), h('label', null, 'to', to), h('button.primary', { type: 'submit' }, 'Replay')), reps);
  let timer, stopped = false;
  async function tick() {
    clearTimeout(timer);
    try {
      const r = await api(base);
      info.replaceChildren(kv([['state', r.enabled === false ? 'paused' : 'running'], ...counters(r.stats).map(([k, v]) => [k, fmtNum(v)]),
        ['last error', r.lastError || '–']]), jsonFold('definition', r.definition ?? r));
      const rp = await api(base + '/replays');
      reps.replaceChildren(h('div.scroll', null, h('table', { id: 'replays' }, h('thead', null, h('tr', null,
        ['#', 'state', 'from', 'to', 'scanned', 'matched', 'delivered', 'failed'].map((t, i) => h(i > 3 || !i ? 'th.num' : 'th', null, t)))),
        h('tbody', null, rp.replays.map(x => h('tr', null, h('td.num', null, String(x.id)), h('td', null, x.state, x.lastError ? h('div.msg.err', null, x.lastError) : ''),
          h('td', null, x.from), h('td', null, x.to), ...['scanned', 'matched', 'delivered', 'failed'].map(k => h('td.num', null, fmtNum(x[k])))))))));
      const d = await api(base + '/dead-letters?limit=50');
      dl.replaceChildren(...(d.deadLetters || d.events || []).map((x, i) => h('tr', null, h('td.num', null, String(x.revision ?? i)), h('td', null, jsonFold(x.type || 'dead letter', x)))));
    } catch (e) { info.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 3000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
