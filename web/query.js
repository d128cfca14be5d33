// query.js - events across streams through the secondary indexes:
// /categories/K, /types/K, /tags/K, /actors/K, /correlations/K, or $all,
// with an optional type and time range (docs/queries.md). The form is in
// the URL, so a query can be bookmarked; "Next page" follows the server's
// next link.
import { api, enc } from './api.js';
import { h, href, link, errBox, jsonFold, bodyOf, toRfc3339 } from './dom.js';

const kinds = { category: 'categories', type: 'types', tag: 'tags', actor: 'actors', correlation: 'correlations', all: 'all' };

export function queryPage(main, segs, params) {
  const kind = kinds[params.get('kind')] ? params.get('kind') : 'category';
  const sel = h('select', { name: 'kind', 'aria-label': 'by' }, Object.keys(kinds).map(k => h('option', { value: k, selected: k === kind }, k)));
  const key = h('input', { name: 'key', value: params.get('key') || '', 'aria-label': 'key', size: 20 });
  const type = h('input', { name: 'type', value: params.get('type') || '', 'aria-label': 'only type', size: 16 });
  const after = h('input', { type: 'datetime-local', step: 1, name: 'after', value: params.get('after') || '', 'aria-label': 'after' });
  const before = h('input', { type: 'datetime-local', step: 1, name: 'before', value: params.get('before') || '', 'aria-label': 'before' });
  const dir = h('select', { name: 'direction', 'aria-label': 'direction' }, ['forwards', 'backwards'].map(d => h('option', { selected: d === params.get('direction') }, d)));
  const out = h('div');
  main.append(h('h1', null, 'Queries'), h('form', {
    onsubmit: e => {
      e.preventDefault();
      location.hash = href('query', [], { kind: sel.value, key: key.value, type: type.value, after: after.value, before: before.value, direction: dir.value });
    }
  }, h('label', null, 'by', sel), h('label', null, 'key', key), h('label', null, 'only type', type),
  h('label', null, 'created at or after (local time)', after), h('label', null, 'before', before), h('label', null, 'direction', dir),
  h('button.primary', { type: 'submit' }, 'Run')), out);
  if (!params.has('kind')) return;
  if (kind !== 'all' && !key.value) { out.append(h('div.msg.err', { role: 'alert' }, `give the ${kind} to query by`)); return; }
  const q = new URLSearchParams();
  if (type.value && kind !== 'type' && kind !== 'all') q.set('type', type.value);
  if (after.value) q.set('after', toRfc3339(after.value));
  if (before.value) q.set('before', toRfc3339(before.value));
  q.set('direction', dir.value);
  q.set('limit', '100');
  let path = kind === 'all' ? '/all?' + q : '/' + kinds[kind] + '/' + enc(key.value) + '?' + q;
  const tbody = h('tbody');
  const more = h('button', { type: 'button' }, 'Next page');
  const count = h('span.muted');
  let n = 0;
  out.append(h('div.scroll', null, h('table', null, h('thead', null, h('tr', null, h('th.num', null, 'position'), h('th', null, 'stream'),
    h('th', null, 'type, data'), h('th.hide-s', null, 'created'))), tbody)), h('div.bar', null, more, count));
  async function load() {
    more.disabled = true;
    try {
      const page = await api(path);
      for (const e of page.events) tbody.append(h('tr', null, h('td.num', null, String(e.position)),
        h('td', null, link(e.stream, 'stream', [e.stream]), '@', link(String(e.revision), 'event', [e.stream, String(e.revision)])),
        h('td', null, e.type, bodyOf(e, 'data') !== undefined ? jsonFold('data', bodyOf(e, 'data')) : null), h('td.hide-s', null, e.created)));
      n += page.events.length;
      count.textContent = n + ' events';
      path = page.next || null;
      more.disabled = !path;
    } catch (e) { out.append(errBox(e)); }
  }
  more.addEventListener('click', load);
  load();
}
