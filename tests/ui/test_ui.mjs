// Browser tests of the web UI (docs/ui.md) against a real `stele serve`:
// Debian's chromium driven by playwright-core. Every page's screenshot is
// saved in build/ui-artifacts (STELE_UI_ARTIFACTS). No timing assertions:
// waits are for content, with generous timeouts for a loaded machine.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launch, watchedPage, shot } from './lib.mjs';

const WAIT = { timeout: 30000 };
let srv, browser;

before(async () => {
  srv = await new Server().start();
  browser = await launch();
});
after(async () => {
  try { if (browser) await browser.close(); } finally { if (srv) { await srv.stop(); srv.cleanup(); } }
});

function noProblems(page) {
  assert.deepEqual(page.problems, [], 'no dialog, page error or console error');
}
const enc = encodeURIComponent;

test('assets: content types, ETag revalidation, strict CSP', async () => {
  const r = await fetch(srv.url + '/');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type'), /^text\/html/);
  const csp = r.headers.get('content-security-policy');
  assert.match(csp, /script-src 'self'/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const html = await r.text();
  assert.doesNotMatch(html, /<script>(?!<)/, 'no inline script');
  assert.doesNotMatch(html, /https?:\/\//, 'nothing fetched from elsewhere');
  const js = await fetch(srv.url + '/ui/app.js');
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  const etag = js.headers.get('etag');
  assert.ok(etag);
  const again = await fetch(srv.url + '/ui/app.js', { headers: { 'If-None-Match': etag } });
  assert.equal(again.status, 304);
  assert.equal((await fetch(srv.url + '/ui/style.css')).headers.get('content-type'), 'text/css; charset=utf-8');
  assert.equal((await fetch(srv.url + '/ui/missing.js')).status, 404);
  const head = await fetch(srv.url + '/', { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(Number(head.headers.get('content-length')), Buffer.byteLength(html));
  assert.equal(await head.text(), '');
  // every file the page names is served, with a type the browser will run
  for (const m of html.matchAll(/(?:href|src)="(\/ui\/[^"]+)"/g)) {
    const r = await fetch(srv.url + m[1]);
    assert.equal(r.status, 200, m[1]);
    assert.match(r.headers.get('content-type'), /^(text\/(javascript|css)|image\/svg\+xml)/, m[1]);
  }
  assert.equal((await fetch(srv.url + '/', { method: 'POST' })).status, 405);
  // the API keeps its routes
  assert.equal((await fetch(srv.url + '/health/live')).status, 200);
});

test('name listings: GET /streams, /categories, /types with prefix and paging', async () => {
  for (const s of ['List-b', 'List-a', 'List-c x/%'])
    assert.equal((await srv.api('POST', '/streams/' + enc(s), [{ type: 'Listed' }, { type: 'Listed2' }])).status, 201);
  let r = await srv.api('GET', '/streams?prefix=List-&limit=2');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.streams.map(x => [x.name, x.count]), [['List-a', 2], ['List-b', 2]]);
  assert.equal(r.json.next, '/streams?prefix=List-&after=List-b&limit=2');
  r = await srv.api('GET', r.json.next);
  assert.deepEqual(r.json.streams.map(x => x.name), ['List-c x/%']);
  assert.equal(r.json.next, undefined);
  r = await srv.api('GET', '/categories?prefix=List');
  assert.deepEqual(r.json.categories, [{ name: 'List', count: 6 }]);
  r = await srv.api('GET', '/types?prefix=Listed');
  assert.deepEqual(r.json.types, [{ name: 'Listed', count: 3 }, { name: 'Listed2', count: 3 }]);
  r = await srv.api('GET', '/streams?excludeSystem=true&prefix=List-&limit=1');
  assert.equal(r.json.next, '/streams?excludeSystem=true&prefix=List-&after=List-a&limit=1');
  for (const bad of ['/streams?excludeSystem=yes', '/streams?limit=0', '/types?limit=10001', '/categories?limit=x', '/streams?prefix=%zz'])
    assert.equal((await srv.api('GET', bad)).json.error.code, 'INVALID_ARGUMENT', bad);
  assert.equal((await srv.api('DELETE', '/types')).status, 405);
  // POST /streams is still a multi-stream append
  assert.equal((await srv.api('POST', '/streams', { streams: [] })).json.error.code, 'INVALID_ARGUMENT');
});

test('dashboard shows live figures', async () => {
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/');
  await page.locator('#conn.up').waitFor(WAIT);
  await srv.api('POST', '/streams/Dash-1', [{ type: 'Tick', data: { n: 1 } }]);
  await page.waitForFunction(() => Number(document.querySelector('#m-stored').textContent) >= 1, null, WAIT);
  assert.equal(await page.textContent('#m-state'), 'writable');
  await page.waitForFunction(() => document.querySelector('#m-p50').textContent.startsWith('≤'), null, WAIT);
  await shot(page, 'dashboard');
  noProblems(page);
  await page.context().close();
});

test('append through the form: on the stream page, live in the tail, its JSON', async () => {
  const tail = await watchedPage(browser);
  await tail.goto(srv.url + '/#/live?category=Order');
  await tail.locator('#tail-state', { hasText: 'live' }).waitFor(WAIT);
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/stream/Order-1');
  await page.locator('#append-form').waitFor(WAIT);
  await page.fill('#append-type', 'OrderPlaced');
  await page.fill('#append-data', '{"total": 42, "lines": [1, 2]}');
  await page.fill('#append-metadata', '{"$correlationId": "c-1"}');
  await page.click('#append-form button[type=submit]');
  await page.locator('text=appended at revision 0').waitFor(WAIT);
  const row = page.locator('#events tbody tr[data-rev="0"]');
  await row.waitFor(WAIT);
  assert.match(await row.textContent(), /OrderPlaced/);
  // folded data opens to pretty JSON
  await row.locator('summary').getByText('data', { exact: true }).click();
  assert.equal(await row.locator('pre').first().textContent(), JSON.stringify({ total: 42, lines: [1, 2] }, null, 2));
  await shot(page, 'stream');
  // arrived live in the tail
  await tail.locator('#tail tr', { hasText: 'OrderPlaced' }).waitFor(WAIT);
  assert.match(await tail.locator('#tail tr').first().textContent(), /Order-1/);
  await shot(tail, 'live');
  // its JSON
  await row.locator('a', { hasText: '0' }).first().click();
  await page.locator('#event-json').waitFor(WAIT);
  const ev = JSON.parse(await page.textContent('#event-json'));
  assert.equal(ev.stream, 'Order-1');
  assert.equal(ev.type, 'OrderPlaced');
  assert.deepEqual(ev.data, { total: 42, lines: [1, 2] });
  assert.deepEqual(ev.metadata, { $correlationId: 'c-1' });
  await shot(page, 'event');
  // bad input in the form: a clear error, nothing written
  await page.goto(srv.url + '/#/stream/Order-1');
  await page.locator('#append-form').waitFor(WAIT);
  await page.fill('#append-type', 'OrderPlaced');
  await page.fill('#append-data', '{not json');
  await page.click('#append-form button[type=submit]');
  await page.locator('#append-result .err', { hasText: 'not JSON' }).waitFor(WAIT);
  await page.fill('#append-data', '{}');
  await page.fill('#append-expected', '7');
  await page.click('#append-form button[type=submit]');
  await page.locator('#append-result .err', { hasText: 'WRONG_EXPECTED_REVISION' }).waitFor(WAIT);
  const head = await srv.api('GET', '/streams/Order-1/head');
  assert.equal(head.json.lastRevision, 0);
  noProblems(page); noProblems(tail);
  await page.context().close(); await tail.context().close();
});

test('soft delete and tombstone ask for the name, then act', async () => {
  for (const s of ['Del-1', 'Tomb-1'])
    assert.equal((await srv.api('POST', '/streams/' + s, [{ type: 'X' }])).status, 201);
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/stream/Del-1');
  await page.click('button:text("Soft delete…")');
  const go = page.locator('.confirm button');
  assert.ok(await go.isDisabled(), 'nothing happens before the name is typed');
  await page.fill('.confirm input', 'Del-');
  assert.ok(await go.isDisabled());
  assert.equal((await srv.api('GET', '/streams/Del-1/head')).json.deleted, false);
  await page.fill('.confirm input', 'Del-1');
  await go.click();
  await page.locator('text=soft-deleted').waitFor(WAIT);
  assert.equal((await srv.api('GET', '/streams/Del-1/head')).json.deleted, true);
  await page.goto(srv.url + '/#/stream/Tomb-1');
  await page.click('button:text("Tombstone…")');
  await page.fill('.confirm input', 'Tomb-1');
  await page.locator('.confirm button').click();
  await page.locator('text=tombstoned: the name can never be written again').waitFor(WAIT);
  assert.equal((await srv.api('GET', '/streams/Tomb-1/head')).json.tombstoned, true);
  noProblems(page);
  await page.context().close();
});

test('page through 10,000 events both ways', async () => {
  for (let b = 0; b < 10; b++) {
    const evs = Array.from({ length: 1000 }, (_, i) => ({ type: 'Big', data: { n: b * 1000 + i } }));
    const r = await srv.api('POST', '/streams/Big-1', evs);
    assert.equal(r.status, 201);
  }
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/stream/Big-1?limit=1000');
  const info = () => page.textContent('#page-info');
  await page.locator('#page-info', { hasText: 'revisions 9000–9999 of 10000' }).waitFor(WAIT);
  assert.equal(await page.locator('#events tbody tr').count(), 1000);
  assert.ok(await page.isDisabled('#newer'));
  for (let p = 8; p >= 0; p--) {
    await page.click('#older');
    await page.locator('#page-info', { hasText: `revisions ${p * 1000}–${p * 1000 + 999} ` }).waitFor(WAIT);
  }
  assert.ok(await page.isDisabled('#older'), 'no page older than revision 0');
  assert.equal(await page.getAttribute('#events tbody tr:last-child', 'data-rev'), '0');
  for (let p = 1; p <= 9; p++) {
    await page.click('#newer');
    await page.locator('#page-info', { hasText: `revisions ${p * 1000}–${p * 1000 + 999} ` }).waitFor(WAIT);
  }
  assert.ok(await page.isDisabled('#newer'), 'no page newer than the head');
  assert.equal(await page.getAttribute('#events tbody tr:first-child', 'data-rev'), '9999');
  await page.click('#oldest');
  await page.locator('#page-info', { hasText: 'revisions 0–999 ' }).waitFor(WAIT);
  await page.click('#newest');
  await page.locator('#page-info', { hasText: 'revisions 9000–9999 ' }).waitFor(WAIT);
  assert.match(await info(), /of 10000/);
  noProblems(page);
  await page.context().close();
});

test('tricky names and bodies are text, never markup or script', async () => {
  const name = 'we ird/na%me ü 😀 <script>alert(1)</script>';
  const type = '<img src=x onerror=alert(2)>';
  const data = { x: '<script>alert(3)</script>', y: '"></td><b>bold</b>' };
  let r = await srv.api('POST', '/streams/' + enc(name), [{ type, data, metadata: { note: '<svg onload=alert(4)>' } }]);
  assert.equal(r.status, 201, r.text);
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/streams');
  const a = page.locator('#main table').first().locator('td:first-child a', { hasText: 'we ird/na%me' });
  await a.waitFor(WAIT);
  assert.equal(await a.textContent(), name);
  assert.equal(await a.getAttribute('href'), '#/stream/' + enc(name));
  await page.locator('#list-types td', { hasText: type }).first().waitFor(WAIT);
  assert.equal(await page.getAttribute('#list-types a:text("' + type.replace(/"/g, '\\"') + '")', 'href'), '#/stream/' + enc('$et-' + type));
  await shot(page, 'streams');
  // the prefix filters streams, categories and types on the server
  await page.fill('#prefix', 'Big');
  await page.locator('#list-streams tr', { hasText: 'Big-1' }).waitFor(WAIT);
  await page.waitForFunction(() => document.querySelectorAll('#list-streams tr').length === 1, null, WAIT);
  assert.match(await page.textContent('#list-streams'), /Big-1\s*10\.0k/);
  assert.match(await page.textContent('#list-categories'), /Big\s*10\.0k/);
  assert.match(await page.textContent('#list-types'), /Big\s*10\.0k/);
  await page.fill('#prefix', 'we ird/');
  await page.waitForFunction(() => !document.querySelector('#list-streams').textContent.includes('Big-1'), null, WAIT);
  await a.click();
  await page.locator('#stream-name', { hasText: name }).waitFor(WAIT);
  assert.equal(await page.textContent('#stream-name'), name);
  const row = page.locator('#events tbody tr[data-rev="0"]');
  await row.waitFor(WAIT);
  assert.match(await row.textContent(), /<img src=x onerror=alert\(2\)>/);
  await row.locator('summary').getByText('data', { exact: true }).click();
  await row.locator('summary').getByText('metadata', { exact: true }).click();
  assert.equal(JSON.parse(await row.locator('pre').first().textContent()).x, '<script>alert(3)</script>');
  // nothing became an element
  const n = await page.evaluate(() => document.querySelectorAll('main script, main img, main svg, main b').length);
  assert.equal(n, 0);
  // the event link and its page
  await row.locator('a').first().click();
  await page.locator('#event-json').waitFor(WAIT);
  assert.equal(JSON.parse(await page.textContent('#event-json')).stream, name);
  assert.ok(page.url().endsWith('#/event/' + enc(name) + '/0'));
  // the live tail and a query render it as text too
  const tail = await watchedPage(browser);
  await tail.goto(srv.url + '/#/live?excludeSystem=false');
  await tail.locator('#tail-state', { hasText: 'live' }).waitFor(WAIT);
  r = await srv.api('POST', '/streams/' + enc(name), [{ type, data }]);
  assert.equal(r.status, 201);
  await tail.locator('#tail td', { hasText: type }).first().waitFor(WAIT);
  await page.goto(srv.url + '/#/query?kind=type&key=' + enc(type));
  await page.locator('#main td', { hasText: type }).first().waitFor(WAIT);
  await shot(page, 'query');
  assert.equal(await page.evaluate(() => document.querySelectorAll('main script, main img, main svg, main b').length), 0);
  noProblems(page); noProblems(tail);
  await page.context().close(); await tail.context().close();
});

test('live tail: pause, and sampling said when events come faster than drawn', async () => {
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/live?category=Flood');
  await page.locator('#tail-state', { hasText: 'live' }).waitFor(WAIT);
  for (let b = 0; b < 5; b++) {
    const r = await srv.api('POST', '/streams/Flood-1', Array.from({ length: 2000 }, (_, i) => ({ type: 'Flood', data: { i } })));
    assert.equal(r.status, 201);
  }
  await page.locator('#sampling', { hasText: 'sampling' }).waitFor(WAIT);
  await page.locator('#tail td', { hasText: 'Flood-1' }).first().waitFor(WAIT);
  assert.ok(await page.locator('#tail tr').count() <= 200, 'the tail keeps at most 200 rows');
  // the newest event is on top once the flood is drawn
  await page.waitForFunction(() => document.querySelector('#tail tr td:nth-child(3)').textContent === '9999', null, WAIT);
  await page.click('#pause');
  await page.locator('#tail-state', { hasText: 'paused' }).waitFor(WAIT);
  await srv.api('POST', '/streams/Flood-1', [{ type: 'WhilePaused' }]);
  await page.locator('#tail-state', { hasText: 'paused: 1 events not shown' }).waitFor(WAIT);
  assert.equal(await page.locator('#tail td', { hasText: 'WhilePaused' }).count(), 0);
  await page.click('#pause');
  await page.locator('#tail-state', { hasText: 'live' }).waitFor(WAIT);
  await srv.api('POST', '/streams/Flood-1', [{ type: 'AfterResume' }]);
  await page.locator('#tail td', { hasText: 'AfterResume' }).waitFor(WAIT);
  noProblems(page);
  await page.context().close();
});

test('consumer group: parked messages after nacks, replay redelivers them', async () => {
  let r = await srv.api('PUT', '/subscriptions/Pay-1/billing', { maxRetries: 0 });
  assert.equal(r.status, 201, r.text);
  r = await srv.api('POST', '/streams/Pay-1', [1, 2, 3].map(n => ({ type: 'PaymentDue', data: { n } })));
  assert.equal(r.status, 201);
  const pull = async () => {
    const got = [];
    for (let i = 0; i < 40 && got.length < 3; i++) {
      const m = await srv.api('GET', '/subscriptions/Pay-1/billing/messages?count=10&consumer=w1&timeout=1000');
      assert.equal(m.status, 200, m.text);
      got.push(...m.json.messages);
    }
    return got;
  };
  const first = await pull();
  assert.equal(first.length, 3);
  r = await srv.api('POST', '/subscriptions/Pay-1/billing/nack?action=park&reason=' + enc('card <b>declined</b>') + '&consumer=w1',
    { ids: first.map(m => m.event.id) });
  assert.equal(r.status, 204, r.text);
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/groups');
  await page.locator('#groups tr', { hasText: 'billing' }).waitFor(WAIT);
  await shot(page, 'groups');
  await page.click('#groups a:text("billing")');
  await page.locator('#parked-count', { hasText: '(3)' }).waitFor(WAIT);
  await page.locator('#parked tr:nth-child(3)').waitFor(WAIT);
  assert.equal(await page.locator('#parked tr').count(), 3);
  assert.match(await page.locator('#parked tr').first().textContent(), /card <b>declined<\/b>/);
  await shot(page, 'group');
  // the group's parked messages live in a system stream: listed only on request
  const sp = await watchedPage(browser);
  await sp.goto(srv.url + '/#/streams?prefix=' + enc('$persistentsubscription-Pay-1'));
  await sp.locator('#list-streams td', { hasText: 'None.' }).waitFor(WAIT);
  await sp.check('#system');
  await sp.locator('#list-streams a', { hasText: '$persistentsubscription-Pay-1::billing-parked' }).waitFor(WAIT);
  noProblems(sp);
  await sp.context().close();
  await page.click('#replay-parked');
  await page.locator('#group-result', { hasText: 'replaying 3' }).waitFor(WAIT);
  const again = await pull();
  assert.deepEqual(again.map(m => m.event.data.n).sort(), [1, 2, 3]);
  r = await srv.api('POST', '/subscriptions/Pay-1/billing/ack?consumer=w1', again.map(m => m.event.id));
  assert.equal(r.status, 204, r.text);
  await page.locator('#parked-count', { hasText: '(0)' }).waitFor(WAIT);
  noProblems(page);
  await page.context().close();
});

test('projections: create with an error shown at its line, then state', async () => {
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/projection/new');
  await page.fill('#proj-name', 'by-type');
  await page.fill('#query-editor', 'fromAll()\n  .when({\n    $any: function (s, e) { return s +; }\n  });\n');
  await page.click('#main button[type=submit]');
  await page.locator('#proj-result .err').waitFor(WAIT);
  await page.locator('#error-line', { hasText: 'line 3' }).waitFor(WAIT);
  await shot(page, 'projection-error');
  await page.fill('#query-editor', 'fromAll().foreachStream().when({\n  $init: function () { return { n: 0 }; },\n  $any: function (s, e) { s.n++; return s; }\n});\n');
  await page.click('#main button[type=submit]');
  await page.waitForURL(/#\/projection\/by-type$/, WAIT);
  await page.locator('#main dd', { hasText: 'Running' }).waitFor(WAIT);
  await page.locator('#main td', { hasText: 'Order-1' }).first().waitFor(WAIT);
  await shot(page, 'projection');
  await page.goto(srv.url + '/#/projections');
  await page.locator('#main a', { hasText: 'by-type' }).waitFor(WAIT);
  await shot(page, 'projections');
  noProblems(page);
  await page.context().close();
});

test('rules and users pages', async () => {
  let r = await srv.api('PUT', '/rules/copy', { pattern: { type: ['OrderPlaced'] }, target: { type: 'stream', stream: 'Copies' } });
  assert.ok(r.status === 201 || r.status === 200, r.text);
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/#/rules');
  await page.locator('#main a', { hasText: 'copy' }).waitFor(WAIT);
  await shot(page, 'rules');
  await page.click('#main a:text("copy")');
  await page.locator('#main h2', { hasText: 'Dead letters' }).waitFor(WAIT);
  await page.locator('#main dt', { hasText: 'state' }).waitFor(WAIT);
  // a replay of every event so far, from the form: its progress appears
  await page.fill('input[aria-label="replay from"]', '2000-01-01T00:00:00');
  await page.fill('input[aria-label="replay to"]', '2100-01-01T00:00:00');
  await page.click('#main form button[type=submit]');
  await page.locator('#replays tbody tr', { hasText: 'done' }).waitFor(WAIT);
  const row = await page.textContent('#replays tbody tr');
  assert.match(row, /^1done2000-01-01T00:00:00\.000000Z2100-01-01T00:00:00\.000000Z/);
  await shot(page, 'rule');
  await page.goto(srv.url + '/#/users');
  await page.locator('#main h1', { hasText: 'Users' }).waitFor(WAIT);
  await shot(page, 'users');
  noProblems(page);
  await page.context().close();
});

test('keyboard and phone: nav reachable by Tab, no sideways scroll at 375 px', async () => {
  const phone = { viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true };
  let page = await watchedPage(browser, phone);
  await page.goto(srv.url + '/#/stream/Big-1?limit=20');
  await page.locator('#page-info', { hasText: 'revisions' }).waitFor(WAIT);
  // no stray "null"/"undefined" from a missing value (Big-1's data has neither)
  assert.doesNotMatch(await page.textContent('main'), /null|undefined|NaN/);
  const wide = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(wide <= 0, `page is ${wide} px wider than the screen`);
  await shot(page, 'phone-stream');
  for (const [hash, ready, name] of [['#/', '#m-stored', 'dashboard'], ['#/streams', '#list-streams tr', 'streams'],
    ['#/live', '#tail-state', 'live'], ['#/groups', '#groups tr', 'groups'], ['#/query', '#main form', 'query']]) {
    await page.goto(srv.url + '/' + hash);
    await page.locator(ready).first().waitFor(WAIT);
    const w = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(w <= 0, `${hash} is ${w} px wider than the screen`);
    await shot(page, 'phone-' + name);
  }
  noProblems(page);
  await page.context().close();
  // Tab from the top of a freshly opened page
  page = await watchedPage(browser, phone);
  await page.goto(srv.url + '/#/stream/Big-1?limit=20');
  await page.locator('#page-info', { hasText: 'revisions' }).waitFor(WAIT);
  const focused = [];
  for (let i = 0; i < 4; i++) {
    await page.keyboard.press('Tab');
    focused.push(await page.evaluate(() => document.activeElement.textContent.trim()));
  }
  assert.ok(focused.includes('Dashboard') && focused.includes('Streams'), 'Tab walks the navigation: ' + focused.join(','));
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter'); // "Live"
  await page.waitForURL(/#\/live/, WAIT);
  noProblems(page);
  await page.context().close();
});

test('with users: the UI asks for a login in its own form, then every page works with it', async () => {
  const own = await new Server({ args: ['--admin-password', 'ui-test-secret'] }).start();
  try {
    const r = await fetch(own.url + '/');
    assert.equal(r.status, 200, 'the UI\'s own files need no login (they hold no data)');
    const page = await watchedPage(browser);
    await page.goto(own.url + '/');
    await page.fill('#login-name', 'admin');
    await page.fill('#login-password', 'ui-test-secret');
    await page.click('#login-form button[type=submit]');
    await page.locator('#who-name', { hasText: 'admin' }).waitFor(WAIT);
    await page.locator('#conn.up').waitFor(WAIT);
    await page.waitForFunction(() => /\d/.test(document.querySelector('#m-stored')?.textContent || ''), null, WAIT);
    await page.goto(own.url + '/#/stream/Auth-1');
    await page.fill('#append-type', 'WithLogin');
    await page.click('#append-form button[type=submit]');
    await page.locator('text=appended at revision 0').waitFor(WAIT);
    await page.goto(own.url + '/#/streams');
    await page.locator('#list-streams a', { hasText: 'Auth-1' }).waitFor(WAIT);
    noProblems(page);
    await page.context().close();
  } finally {
    await own.stop(); own.cleanup();
  }
});

test('server stopped: the UI says disconnected, and reconnects when it returns', async () => {
  const own = await new Server().start();
  try {
    const page = await watchedPage(browser);
    await page.goto(own.url + '/');
    await page.locator('#conn.up').waitFor(WAIT);
    const tail = await watchedPage(browser);
    await tail.goto(own.url + '/#/live');
    await tail.locator('#tail-state', { hasText: 'live' }).waitFor(WAIT);
    await own.api('POST', '/streams/Before-1', [{ type: 'BeforeStop' }]);
    await tail.locator('#tail td', { hasText: 'BeforeStop' }).waitFor(WAIT);
    await own.stop();
    await page.locator('#conn.down', { hasText: 'disconnected' }).waitFor(WAIT);
    await tail.locator('#tail-state', { hasText: 'reconnecting' }).waitFor(WAIT);
    await shot(page, 'disconnected');
    await own.start();
    await page.locator('#conn.up', { hasText: 'connected' }).waitFor(WAIT);
    await own.api('POST', '/streams/Back-1', [{ type: 'Back' }]);
    await page.waitForFunction(() => Number(document.querySelector('#m-stored').textContent) >= 2, null, WAIT);
    // the tail resumed after the last event it had (Last-Event-ID): the new
    // event arrives, the old one is not repeated
    await tail.locator('#tail td', { hasText: 'Back' }).first().waitFor(WAIT);
    assert.equal(await tail.locator('#tail td', { hasText: 'BeforeStop' }).count(), 1);
    noProblems(page); noProblems(tail);
    await page.context().close(); await tail.context().close();
  } finally {
    await own.stop(); own.cleanup();
  }
});
