// projections.js - projections (docs/projections.md): the list with status
// and progress; a projection's page with its counters, its query in an
// editor with line numbers (a refused query's error is shown at its line),
// enable / disable / reset, and its state per partition; a form to create
// one. Queries are sent as application/javascript.
import { api, enc } from './api.js';
import { h, href, link, errBox, okBox, kv, fmtNum, jsonFold, confirmBox, pretty } from './dom.js';

export function projectionsPage(main) {
  const err = h('div'), body = h('tbody');
  main.append(h('h1', null, 'Projections'), h('p', null, link('New projection', 'projection', ['new'])), err,
    h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, ['name', 'mode', 'status', 'progress', 'lag', 'processed']
      .map((t, i) => h(i > 2 ? 'th.num' : 'th', null, t)))), body)));
  let timer, stopped = false;
  async function tick() {
    try {
      const { projections } = await api('/projections');
      body.replaceChildren(...projections.map(p => h('tr', null, h('td', null, link(p.name, 'projection', [p.name])), h('td', null, p.mode),
        h('td', null, p.status, p.fault ? h('div.msg.err', null, p.fault) : null), h('td.num', null, p.progress !== undefined ? Number(p.progress).toFixed(1) + ' %' : '–'),
        h('td.num', null, fmtNum(p.lag)), h('td.num', null, fmtNum(p.eventsProcessed)))));
      if (!projections.length) body.append(h('tr', null, h('td', { colspan: 6 }, 'No projections.')));
      err.replaceChildren();
    } catch (e) { err.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 2000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

// A textarea with a line-number gutter; mark(n) highlights line n.
function editor(text) {
  const ta = h('textarea.code', { id: 'query-editor', spellcheck: 'false', 'aria-label': 'query (JavaScript)' });
  ta.value = text;
  const gutter = h('pre.gutter', { 'aria-hidden': 'true' });
  let bad = 0;
  const draw = () => {
    const n = ta.value.split('\n').length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => h(i + 1 === bad ? 'div.errline' : 'div', null, String(i + 1))));
  };
  ta.addEventListener('input', draw);
  ta.addEventListener('scroll', () => { gutter.scrollTop = ta.scrollTop; });
  ta.addEventListener('keydown', e => { // Tab indents; Esc then Tab leaves (keyboard users)
    if (e.key === 'Tab' && !e.shiftKey && !ta.dataset.esc) { e.preventDefault(); ta.setRangeText('  ', ta.selectionStart, ta.selectionEnd, 'end'); draw(); }
    ta.dataset.esc = e.key === 'Escape' ? '1' : '';
  });
  draw();
  return {
    el: h('div.editor', null, gutter, ta), ta,
    mark(line) {
      bad = line || 0; draw();
      if (line) {
        const lines = ta.value.split('\n');
        const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
        ta.focus(); ta.setSelectionRange(start, start + (lines[line - 1] || '').length);
      }
    },
  };
}
// The engine's messages name the line as "line N" or ":N" (duktape).
function errorLine(msg) {
  const m = /line[: ]+(\d+)/i.exec(msg || '') || /:(\d+)\)?\s*$/.exec(msg || '');
  return m ? Number(m[1]) : 0;
}
function showError(out, ed, e) {
  const line = errorLine(e.message);
  ed.mark(line);
  out.replaceChildren(errBox(e), line ? h('p', { id: 'error-line' }, 'at line ' + line + ': ', h('code', null, ed.ta.value.split('\n')[line - 1] || '')) : '');
}

const sample = "fromAll()\n  .when({\n    $init: function () { return { count: 0 }; },\n    $any: function (s, e) { s.count++; return s; }\n  });\n";

export function projectionPage(main, segs) {
  const name = segs[0];
  if (name === 'new') return newProjection(main);
  const base = '/projections/' + enc(name);
  const status = h('div'), out = h('div', { id: 'proj-result' }), parts = h('tbody'), slot = h('div');
  const ed = editor('');
  const act = verb => async () => {
    try { await api(base + '/' + verb, { method: 'POST' }); out.replaceChildren(okBox(verb + ': done')); tick(); } catch (e) { out.replaceChildren(errBox(e)); }
  };
  const partKey = h('input', { 'aria-label': 'partition', placeholder: 'partition (empty: the whole)', size: 24 });
  const partOut = h('div');
  main.append(h('h1', null, h('span.muted', null, 'Projection '), name), status,
    h('div.bar', null, h('button', { type: 'button', onclick: act('enable') }, 'Enable'), h('button', { type: 'button', onclick: act('disable') }, 'Disable'),
      h('button', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Reset', name, act('reset'))) }, 'Reset…'),
      h('button.danger', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Delete', name, async () => {
        try { await api(base + '?deleteState=true', { method: 'DELETE' }); location.hash = href('projections'); } catch (e) { out.replaceChildren(errBox(e)); }
      })) }, 'Delete…')), slot, out,
    h('h2', null, 'Query'), ed.el,
    h('div.bar', null, h('button.primary', { type: 'button', onclick: async () => {
      try { await api(base + '/query', { method: 'PUT', body: ed.ta.value, type: 'application/javascript' }); ed.mark(0); out.replaceChildren(okBox('query saved')); tick(); } catch (e) { showError(out, ed, e); }
    } }, 'Save query')),
    h('h2', null, 'State'),
    h('form', { onsubmit: async e => {
      e.preventDefault();
      try { partOut.replaceChildren(h('pre', null, pretty(await api(base + '/state' + (partKey.value ? '?partition=' + enc(partKey.value) : ''))))); } catch (x) { partOut.replaceChildren(errBox(x)); }
    } }, h('label', null, 'partition', partKey), h('button', { type: 'submit' }, 'Show state')), partOut,
    h('h2', null, 'Partitions'), h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, h('th', null, 'key'), h('th', null, 'state'))), parts)));
  let timer, stopped = false;
  async function tick() {
    clearTimeout(timer);
    try {
      const p = await api(base);
      status.replaceChildren(kv([['status', p.status], ['mode', p.mode], ['enabled', String(p.enabled)], ['progress', p.progress !== undefined ? Number(p.progress).toFixed(1) + ' %' : '–'],
        ['position / head', `${p.position} / ${p.head}`], ['events processed', fmtNum(p.eventsProcessed)], ['partitions cached', fmtNum(p.partitionsCached)]]),
        p.fault ? h('div.msg.err', null, 'fault: ' + p.fault + (p.faultPosition !== undefined ? ' at position ' + p.faultPosition : '')) : '');
      if (!ed.ta.value && p.query !== undefined) { ed.ta.value = p.query; ed.mark(0); }
      const pl = await api(base + '/partitions?limit=50');
      parts.replaceChildren(...pl.partitions.map(x => h('tr', null, h('td', null, x.key), h('td', null, jsonFold('state', x.state)))));
    } catch (e) { status.replaceChildren(errBox(e)); }
    if (!stopped) timer = setTimeout(tick, 3000);
  }
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

function newProjection(main) {
  const name = h('input', { id: 'proj-name', required: true, 'aria-label': 'name', size: 24 });
  const mode = h('select', { 'aria-label': 'mode' }, ['continuous', 'onetime', 'inline'].map(m => h('option', null, m)));
  const emit = h('input', { type: 'checkbox' });
  const ed = editor(sample);
  const out = h('div', { id: 'proj-result' });
  main.append(h('h1', null, 'New projection'), h('form', { onsubmit: async e => {
    e.preventDefault();
    try {
      await api('/projections/' + enc(name.value) + '?mode=' + mode.value + (emit.checked ? '&emit=true' : ''), { method: 'POST', body: ed.ta.value, type: 'application/javascript' });
      location.hash = href('projection', [name.value]);
    } catch (x) { showError(out, ed, x); }
  } }, h('label', null, 'name', name), h('label', null, 'mode', mode), h('label.inline', null, emit, ' may emit'),
  h('label.wide', null, 'query (JavaScript; docs/projections.md)', ed.el), h('button.primary', { type: 'submit' }, 'Create')), out);
}
