// groups.js - consumer groups (docs/consumer-groups.md): the list with lag
// and parked counts, and a group's page: settings, counters, consumers,
// parked messages with replay and truncate. Both refresh every 2 s.
// Lag: the store's next position (or the stream's next revision) minus the
// group's checkpoint. In-flight messages are shown as counts (per group
// and per consumer): the API has no listing of them.
import { api, enc } from './api.js';
import { h, link, errBox, okBox, kv, fmtNum, jsonFold, confirmBox } from './dom.js';

async function headOf(stream, info) {
  if (stream === '$all') return info.store.events;
  try { const hd = await api('/streams/' + enc(stream) + '/head'); return hd.lastRevision === null ? 0 : hd.lastRevision + 1; } catch { return null; }
}

export function groupsPage(main) {
  const err = h('div'), body = h('tbody', { id: 'groups' });
  main.append(h('h1', null, 'Consumer groups'), err, h('div.scroll', null, h('table', null, h('thead', null, h('tr', null,
    ['stream', 'group', 'lag', 'parked', 'in flight', 'consumers', 'delivered', 'acked'].map((t, i) => h(i > 1 ? 'th.num' : 'th', null, t)))), body)));
  let timer, stopped = false;
  async function tick() {
    try {
      const [{ groups }, info] = await Promise.all([api('/subscriptions'), api('/info')]);
      const rows = [];
      for (const g of groups) {
        const head = await headOf(g.stream, info);
        rows.push(h('tr', null, h('td', null, g.stream), h('td', null, link(g.group, 'group', [g.stream, g.group])),
          h('td.num', null, head === null ? '–' : fmtNum(Math.max(0, head - g.checkpoint))), h('td.num', null, fmtNum(g.parked)),
          h('td.num', null, fmtNum(g.inFlight)), h('td.num', null, String(g.consumers.length)),
          h('td.num', null, fmtNum(g.delivered)), h('td.num', null, fmtNum(g.acked))));
      }
      body.replaceChildren(...rows);
      if (!groups.length) body.append(h('tr', null, h('td', { colspan: 8 }, 'No consumer groups.')));
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 2000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

export function groupPage(main, segs) {
  const [stream, group] = segs;
  const base = '/subscriptions/' + enc(stream) + '/' + enc(group);
  const infoEl = h('div'), cons = h('tbody'), parked = h('tbody', { id: 'parked' }), out = h('div', { id: 'group-result' }), slot = h('div');
  const parkedCount = h('span', { id: 'parked-count' });
  main.append(h('h1', null, group, h('span.muted', null, ' on '), stream), infoEl,
    h('h2', null, 'Consumers'), h('table', null, h('thead', null, h('tr', null, h('th', null, 'consumer'), h('th.num', null, 'in flight'), h('th.num', null, 'delivered'))), cons),
    h('h2', null, 'Parked messages ', parkedCount),
    h('div.bar', null,
      h('button', { type: 'button', id: 'replay-parked', onclick: async () => {
        try { const r = await api(base + '/parked/replay', { method: 'POST' }); out.replaceChildren(okBox(`replaying ${r.replaying} parked messages`)); tick(); } catch (e) { out.replaceChildren(errBox(e)); }
      } }, 'Replay all parked'),
      h('button.danger', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Delete every parked message', group, async () => {
        try { await api(base + '/parked', { method: 'DELETE' }); slot.replaceChildren(); out.replaceChildren(okBox('parked messages deleted')); tick(); } catch (e) { out.replaceChildren(errBox(e)); }
      })) }, 'Truncate…')), slot, out,
    h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, h('th.num', null, '#'), h('th', null, 'event'), h('th', null, 'reason'),
      h('th.num', null, 'retries'), h('th.hide-s', null, 'parked at'))), parked)));
  let timer, stopped = false;
  async function tick() {
    clearTimeout(timer);
    try {
      const g = await api(base);
      infoEl.replaceChildren(kv([['checkpoint', g.checkpoint], ['read position', g.readPosition], ['in flight', g.inFlight],
        ['parked', g.parked], ['replaying', g.replaying], ['delivered / acked / nacked / timed out', `${g.delivered} / ${g.acked} / ${g.nacked} / ${g.timedOut}`],
        ['last error', g.lastError || '–']]), jsonFold('settings', g.settings));
      parkedCount.textContent = `(${g.parked})`;
      cons.replaceChildren(...g.consumers.map(c => h('tr', null, h('td', null, c.name ?? c.consumer ?? ''), h('td.num', null, String(c.inFlight)), h('td.num', null, String(c.delivered)))));
      const p = await api(base + '/parked?limit=100');
      parked.replaceChildren(...p.messages.map(m => h('tr', null, h('td.num', null, String(m.parkedRevision)),
        h('td', null, m.parked ? link(`${m.parked.stream}@${m.parked.revision}`, 'event', [m.parked.stream, String(m.parked.revision)]) : m.link,
          m.parked ? h('div.muted', null, m.parked.eventType) : null, m.event ? jsonFold('event', m.event) : null),
        h('td', null, m.parked ? m.parked.reason : ''), h('td.num', null, m.parked ? String(m.parked.retryCount) : ''), h('td.hide-s', null, m.parkedAt))));
    } catch (e) { infoEl.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 2000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
