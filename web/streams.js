// streams.js - the stream browser, a stream's page and one event's JSON.
//
// Browsing: GET /streams, /categories and /types (the index's names in
// byte order, with counts), filtered by prefix on the server and paged by
// name ("More" follows the answer's next link); "Open" goes to any stream
// by its exact name. Categories link to their $ce- view, types to $et-.
//
// A stream's page reads one page of events (from, direction, limit are in
// the URL), newest first on screen, with links to the newest, newer, older
// and oldest pages. Data and metadata are folded; their pretty JSON is made
// only when opened, so a page of 1,000 events renders fast.
import { api, enc } from './api.js';
import { h, href, link, errBox, okBox, jsonFold, bodyOf, kv, confirmBox, fmtNum, pretty } from './dom.js';

const rev = e => (e.link ? e.link.revision : e.revision);
const isView = s => /^\$(ce-|et-|bc-|streams$)/.test(s);

// One paged list of names: `render(item)` makes a row.
function nameList(path, member, heads, render) {
  const body = h('tbody', { id: 'list-' + member }), err = h('div');
  const more = h('button', { type: 'button', hidden: true }, 'More ' + member);
  let next = null, gen = 0;
  async function load(url, g) {
    more.disabled = true;
    try {
      const r = await api(url);
      if (g !== gen) return; // a newer prefix was typed meanwhile
      for (const it of r[member]) body.append(render(it));
      if (!body.firstChild) body.append(h('tr', null, h('td', { colspan: heads.length }, 'None.')));
      next = r.next || null;
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errBox(e)); next = null; }
    more.hidden = !next; more.disabled = false;
  }
  more.addEventListener('click', () => next && load(next, gen));
  return {
    el: h('div', null, err, h('div.scroll', null, h('table', null, h('thead', null, h('tr', null,
      heads.map(([t, num]) => h(num ? 'th.num' : 'th', null, t)))), body)), more),
    reset(prefix, system) {
      gen++; body.replaceChildren();
      load(path + '?limit=100' + (system ? '' : '&excludeSystem=true') + (prefix ? '&prefix=' + enc(prefix) : ''), gen);
    },
  };
}

export function streamsPage(main, segs, params) {
  const prefix = params.get('prefix') || '';
  const open = h('input', { id: 'open-stream', 'aria-label': 'stream name', placeholder: 'stream name', size: 28 });
  const pre = h('input', { id: 'prefix', 'aria-label': 'prefix', placeholder: 'prefix', value: prefix, size: 20 });
  const sys = h('input', { type: 'checkbox', id: 'system', checked: params.get('system') === 'true' });
  const streams = nameList('/streams', 'streams', [['stream'], ['events', 1], ['last position', 1], ['state']], s => h('tr', null,
    h('td', null, link(s.name, 'stream', [s.name])), h('td.num', null, fmtNum(s.count)),
    h('td.num', null, s.lastPosition === null ? '–' : String(s.lastPosition)),
    h('td', null, s.tombstoned ? 'tombstoned' : s.deleted ? 'deleted' : '')));
  const cats = nameList('/categories', 'categories', [['category'], ['events', 1]], c => h('tr', null,
    h('td', null, link(c.name, 'stream', ['$ce-' + c.name])), h('td.num', null, fmtNum(c.count))));
  const types = nameList('/types', 'types', [['event type'], ['events', 1]], t => h('tr', null,
    h('td', null, link(t.name, 'stream', ['$et-' + t.name])), h('td.num', null, fmtNum(t.count))));
  main.append(h('h1', null, 'Streams'),
    h('form', { onsubmit: e => { e.preventDefault(); if (open.value) location.hash = href('stream', [open.value]); } },
      h('label', null, 'Open a stream', open), h('button.primary', { type: 'submit' }, 'Open')),
    h('form', { onsubmit: e => e.preventDefault() }, h('label', null, 'Names starting with', pre),
      h('label.inline', null, sys, ' system streams ($…)')),
    streams.el, h('h2', null, 'Categories'), cats.el, h('h2', null, 'Event types'), types.el,
    h('p.muted', null, 'Names in byte order with their event counts, from the index; the count of a category or type is of every event ever indexed under it (deleted ones too, until the index is rebuilt).'));
  let timer = 0;
  const reload = () => { for (const l of [streams, cats, types]) l.reset(pre.value, sys.checked); };
  const changed = () => {
    history.replaceState(null, '', href('streams', [], { prefix: pre.value, system: sys.checked ? 'true' : '' }));
    clearTimeout(timer);
    timer = setTimeout(reload, 150);
  };
  pre.addEventListener('input', changed);
  sys.addEventListener('change', changed);
  reload();
  return () => clearTimeout(timer);
}

function eventRow(e, stream) {
  const data = bodyOf(e, 'data'), meta = bodyOf(e, 'metadata');
  const r = rev(e);
  return h('tr', { 'data-rev': r },
    h('td.num', null, link(String(r), 'event', [stream, String(r)])),
    h('td.num.hide-s', null, String(e.position)),
    h('td', null, h('div', null, e.type),
      e.link ? h('div.muted', null, link(e.stream, 'stream', [e.stream]), '@', String(e.revision)) : null,
      data !== undefined ? jsonFold('data', data) : null,
      meta !== undefined ? jsonFold('metadata', meta) : null,
      e.tags ? h('div.muted', null, 'tags: ', e.tags.join(', ')) : null),
    h('td.hide-s', null, e.created));
}

export function streamPage(main, segs, params) {
  const stream = segs[0] || '';
  const from = params.get('from') || 'end';
  const dir = params.get('dir') === 'forwards' ? 'forwards' : 'backwards';
  const limit = Math.min(1000, Math.max(1, Number(params.get('limit')) || 100));
  const go = (f, d, l = limit) => { location.hash = href('stream', [stream], { from: f, dir: d, limit: l }); };
  const view = isView(stream);
  const headEl = h('div'), err = h('div'), body = h('tbody'), info = h('span.muted', { id: 'page-info' });
  const btn = (label, id) => h('button', { type: 'button', id, disabled: true }, label);
  const bNewest = btn('⇤ Newest', 'newest'), bNewer = btn('← Newer', 'newer'), bOlder = btn('Older →', 'older'), bOldest = btn('Oldest ⇥', 'oldest');
  const size = h('select', { 'aria-label': 'events per page', id: 'page-size' },
    [20, 100, 500, 1000].map(n => h('option', { value: n, selected: n === limit }, n + ' per page')));
  size.addEventListener('change', () => go(from, dir, size.value));
  main.append(h('h1', null, h('span.muted', null, view ? 'View ' : 'Stream '), h('span', { id: 'stream-name' }, stream)),
    headEl, h('div', null, params.has('appended') ? okBox(`appended at revision ${params.get('appended')} (position ${params.get('at')})`) : null), err,
    h('div.bar', { role: 'navigation', 'aria-label': 'pages' }, bNewest, bNewer, bOlder, bOldest, size, info),
    h('div.scroll', null, h('table', { id: 'events' }, h('thead', null, h('tr', null, h('th.num', null, 'rev'),
      h('th.num.hide-s', null, 'position'), h('th', null, 'type, data, metadata'), h('th.hide-s', null, 'created'))), body)));
  const sections = h('div');
  main.append(sections);
  let last = null;
  (async () => {
    let head = null;
    // the head and the page in parallel (one round trip before the rows)
    const pageP = api('/streams/' + enc(stream) + '?from=' + enc(from) + '&direction=' + dir + '&limit=' + limit);
    pageP.catch(() => {}); // awaited below
    try {
      head = await api('/streams/' + enc(stream) + '/head');
      last = head.lastRevision;
      headEl.replaceChildren(kv([['last revision', head.lastRevision ?? 'none'], ['last position', head.lastPosition ?? 'none'],
        ['truncate before', head.truncateBefore], ['deleted', head.deleted ? 'soft-deleted' : head.tombstoned ? 'tombstoned' : 'no']]));
    } catch (e) { headEl.replaceChildren(errBox(e)); }
    try {
      const page = await pageP;
      const evs = dir === 'forwards' ? page.events.slice().reverse() : page.events;
      const frag = document.createDocumentFragment();
      for (const e of evs) frag.append(eventRow(e, stream));
      body.replaceChildren(frag);
      if (evs.length) {
        const hi = rev(evs[0]), lo = rev(evs[evs.length - 1]);
        info.textContent = `revisions ${lo}–${hi}` + (last !== null && !view ? ` of ${last + 1}` : '');
        const atTop = dir === 'backwards' ? (from === 'end' || (last !== null && hi >= last)) : !page.next;
        const atBottom = dir === 'forwards' ? (from === 'start' || lo === 0) : !page.next;
        bNewer.disabled = atTop; bNewest.disabled = atTop && dir === 'backwards' && from === 'end';
        bOlder.disabled = atBottom; bOldest.disabled = atBottom;
        bNewer.onclick = () => go(String(hi + 1), 'forwards');
        bOlder.onclick = () => go(String(lo - 1), 'backwards');
      } else {
        info.textContent = 'no events on this page';
        bNewest.disabled = false; bOldest.disabled = false;
      }
      bNewest.onclick = () => go('end', 'backwards');
      bOldest.onclick = () => go('start', 'forwards');
    } catch (e) { err.replaceChildren(errBox(e)); bNewest.disabled = false; bNewest.onclick = () => go('end', 'backwards'); }
    if (!view) sections.append(appendForm(stream, head), await metaSection(stream), await snapSection(stream), dangerZone(stream));
  })();
}

function appendForm(stream) {
  const type = h('input', { name: 'type', id: 'append-type', required: true, 'aria-label': 'event type', size: 24 });
  const data = h('textarea.code', { name: 'data', id: 'append-data', 'aria-label': 'data (JSON)' });
  data.value = '{}';
  const meta = h('textarea.code', { name: 'metadata', id: 'append-metadata', 'aria-label': 'metadata (JSON, optional)' });
  const exp = h('input', { name: 'expected', id: 'append-expected', value: 'any', size: 12, 'aria-label': 'expected revision' });
  const out = h('div', { id: 'append-result' });
  const form = h('form', {
    id: 'append-form',
    onsubmit: async ev => {
      ev.preventDefault();
      const e = { type: type.value };
      try {
        e.data = JSON.parse(data.value || 'null');
        if (meta.value.trim()) e.metadata = JSON.parse(meta.value);
      } catch (x) { out.replaceChildren(errBox({ message: 'not JSON: ' + x.message })); return; }
      try {
        const r = await api('/streams/' + enc(stream), { method: 'POST', json: [e], headers: { 'Stele-Expected-Revision': exp.value || 'any' } });
        // reload the page at the newest events, saying what was written
        location.hash = href('stream', [stream], { from: 'end', dir: 'backwards', appended: r.firstRevision, at: r.firstPosition });
      } catch (x) { out.replaceChildren(errBox(x)); }
    }
  }, h('label', null, 'type', type), h('label', null, 'expected revision', exp),
  h('label.wide', null, 'data (JSON)', data), h('label.wide', null, 'metadata (JSON, optional)', meta),
  h('button.primary', { type: 'submit' }, 'Append'));
  return h('section', null, h('h2', null, 'Append an event'), form, out);
}

async function metaSection(stream) {
  const sec = h('section', null, h('h2', null, 'Metadata and retention'));
  let cur = null;
  try { cur = await api('/streams/' + enc(stream) + '/metadata'); } catch (e) { sec.append(errBox(e)); return sec; }
  const ta = h('textarea.code', { 'aria-label': 'metadata JSON', id: 'meta-edit' });
  ta.value = pretty(cur.metadata);
  const out = h('div');
  sec.append(h('p.muted', null, `version ${cur.version ?? 'none'}; maxAge (s), maxCount, truncateBefore, maxSnapshots and custom fields (docs/streams.md)`), ta,
    h('button', {
      type: 'button', onclick: async () => {
        let v;
        try { v = JSON.parse(ta.value); } catch (x) { out.replaceChildren(errBox({ message: 'not JSON: ' + x.message })); return; }
        try {
          const r = await api('/streams/' + enc(stream) + '/metadata?expectedVersion=' + (cur.version ?? 'none'), { method: 'PUT', json: v });
          cur = r; out.replaceChildren(okBox('saved, version ' + r.version));
        } catch (x) { out.replaceChildren(errBox(x)); }
      }
    }, 'Save metadata'), out);
  return sec;
}

async function snapSection(stream) {
  const sec = h('section', null, h('h2', null, 'Snapshot'));
  try {
    const s = await api('/streams/' + enc(stream) + '/snapshots');
    sec.append(kv([['revision', s.revision], ['schema version', s.schemaVersion], ['created', s.created]]),
      jsonFold('state', s.state !== undefined ? s.state : { base64: s.stateBase64 }));
  } catch (e) {
    sec.append(e.code === 'SNAPSHOT_NOT_FOUND' || e.code === 'STREAM_NOT_FOUND' ? h('p.muted', null, 'No snapshot.') : errBox(e));
  }
  return sec;
}

function dangerZone(stream) {
  const out = h('div'), slot = h('div');
  const ask = tomb => slot.replaceChildren(confirmBox(tomb ? 'Tombstone for ever' : 'Soft delete', stream, async () => {
    try {
      await api('/streams/' + enc(stream) + (tomb ? '?tombstone=true' : ''), { method: 'DELETE' });
      slot.replaceChildren(); out.replaceChildren(okBox(tomb ? 'tombstoned: the name can never be written again' : 'soft-deleted: appending again restarts it'));
    } catch (x) { out.replaceChildren(errBox(x)); }
  }));
  return h('section', null, h('h2', null, 'Delete'),
    h('p.muted', null, 'A soft delete hides the events (a new append continues the stream); a tombstone is final.'),
    h('div.bar', null, h('button.danger', { type: 'button', onclick: () => ask(false) }, 'Soft delete…'),
      h('button.danger', { type: 'button', onclick: () => ask(true) }, 'Tombstone…')), slot, out);
}

export function eventPage(main, segs) {
  const [stream, r] = segs;
  main.append(h('h1', null, h('span', { id: 'stream-name' }, link(stream, 'stream', [stream])), ' @ ', r));
  api('/streams/' + enc(stream) + '?from=' + enc(r) + '&limit=1').then(page => {
    const e = page.events[0];
    if (!e || String(rev(e)) !== r) { main.append(h('p', null, 'No event at revision ' + r + ' (deleted or hidden by retention).')); return; }
    main.append(h('pre', { id: 'event-json' }, pretty(e)));
  }).catch(e => main.append(errBox(e)));
}
