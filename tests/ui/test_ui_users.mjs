// Browser tests of the web UI's login form and Users page (docs/ui.md,
// "Signing in", "Users and keys") against a real `stele serve` with users:
// Debian's chromium driven by playwright-core. Screenshots go to
// build/ui-artifacts (STELE_UI_ARTIFACTS). No timing assertions.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Server, launch, watchedPage, shot } from './lib.mjs';

const WAIT = { timeout: 30000 };
const ADMIN_PW = 'ui-users-admin-secret';
let srv, browser;

before(async () => {
  // (wrong passwords on purpose, from one address: a higher throttle limit)
  srv = await new Server({ args: ['--admin-password', ADMIN_PW, '--auth-fail-limit', '100'] }).start();
  browser = await launch();
});
after(async () => {
  try { if (browser) await browser.close(); } finally { if (srv) { await srv.stop(); srv.cleanup(); } }
});

function noProblems(page) {
  assert.deepEqual(page.problems, [], 'no dialog, page error or console error');
}
const basic = (u, p) => ({ Authorization: 'Basic ' + Buffer.from(u + ':' + p).toString('base64') });

async function signIn(page, user, password) {
  await page.locator('#login-form').waitFor(WAIT);
  await page.fill('#login-name', user);
  await page.fill('#login-password', password);
  await page.click('#login-form button[type=submit]');
}

test('the UI loads without a login; a 401 to its requests has no browser prompt', async () => {
  for (const p of ['/', '/ui/app.js', '/ui/login.js', '/ui/users.js']) {
    const r = await fetch(srv.url + p);
    assert.equal(r.status, 200, p);
  }
  // other clients still get the challenge (curl, the CLI, a browser on the API)
  const plain = await fetch(srv.url + '/metrics');
  assert.equal(plain.status, 401);
  assert.match(plain.headers.get('www-authenticate') || '', /^Basic/);
  // the UI's requests (X-Requested-With) get the 401 without it
  const x = await fetch(srv.url + '/metrics', { headers: { 'X-Requested-With': 'stele-ui' } });
  assert.equal(x.status, 401);
  assert.equal(x.headers.get('www-authenticate'), null);
  assert.equal((await x.json()).error.code, 'UNAUTHENTICATED');
  // the page's files are not a way around the gate: data still needs a login
  const r = await srv.api('GET', '/users', undefined, { 'X-Requested-With': 'stele-ui' });
  assert.equal(r.status, 401);
});

test('login: a wrong password is refused in the form, the right one opens the UI; sign out', async () => {
  const page = await watchedPage(browser);
  await page.goto(srv.url + '/');
  await page.locator('#login-form').waitFor(WAIT);
  await shot(page, 'login');
  await signIn(page, 'admin', 'not-the-password');
  await page.locator('#login-msg .msg.err', { hasText: 'Wrong user name or password' }).waitFor(WAIT);
  assert.equal(await page.inputValue('#login-password'), '', 'the wrong password is cleared');
  assert.equal(await page.locator('#who-name').count(), 0, 'nobody signed in');
  await shot(page, 'login-refused');
  await signIn(page, 'admin', ADMIN_PW);
  await page.locator('#who-name', { hasText: 'admin' }).waitFor(WAIT);
  await page.waitForFunction(() => /\d/.test(document.querySelector('#m-stored')?.textContent || ''), null, WAIT);
  // navigating keeps the login (credentials in memory)
  await page.goto(srv.url + '/#/streams');
  await page.locator('#main h1', { hasText: 'Streams' }).waitFor(WAIT);
  await page.click('#sign-out');
  await page.locator('#login-form').waitFor(WAIT);
  await page.locator('#login-msg', { hasText: 'Signed out' }).waitFor(WAIT);
  // a navigation while signed out still shows the form, not a page
  await page.goto(srv.url + '/#/rules');
  await page.locator('#login-form').waitFor(WAIT);
  assert.equal(await page.locator('#main h1', { hasText: 'Rules' }).count(), 0);
  noProblems(page);
  await page.context().close();
});

test('admin creates a user and a key; the user sees only its own; revoking the key refuses it', async () => {
  const admin = await watchedPage(browser);
  await admin.goto(srv.url + '/#/users');
  await signIn(admin, 'admin', ADMIN_PW);
  await admin.locator('#users-table tr[data-user="admin"]').waitFor(WAIT);
  await admin.locator('#own dd', { hasText: '$admins' }).waitFor(WAIT);

  // create a user (a name with HTML in the full name stays text)
  await admin.fill('#new-user-name', 'carol');
  await admin.fill('#new-user-full', 'Carol <img src=x onerror=alert(1)>');
  await admin.fill('#new-user-groups', 'billing, auditors');
  await admin.fill('#new-user-password', 'carol-first-pw');
  await admin.click('#new-user button[type=submit]');
  const row = admin.locator('#users-table tr[data-user="carol"]');
  await row.waitFor(WAIT);
  assert.match(await row.textContent(), /Carol <img src=x onerror=alert\(1\)>billing, auditorsenabled/);
  assert.equal(await admin.locator('#users-table img').count(), 0, 'the full name is text');
  // an API key for carol: its token is shown once
  await admin.fill('#new-key-user', 'carol');
  await admin.fill('#new-key-name', 'carol-worker');
  await admin.click('#new-key button[type=submit]');
  const tokenBox = admin.locator('#key-token-value');
  await tokenBox.waitFor(WAIT);
  const token = (await tokenBox.textContent()).trim();
  assert.match(token, /^stele_/);
  const keyRow = admin.locator('#keys-table tr', { hasText: 'carol-worker' });
  await keyRow.waitFor(WAIT);
  const keyId = await keyRow.getAttribute('data-key');
  assert.ok(keyId);
  assert.ok(!(await admin.locator('#keys-table').textContent()).includes(token.slice(-20)), 'the list never shows the secret');
  await shot(admin, 'users-admin');
  // bad input: the same name again is refused with the server's message, nothing changes
  await admin.fill('#new-user-name', 'carol');
  await admin.fill('#new-user-password', 'whatever-pw');
  await admin.click('#new-user button[type=submit]');
  await admin.locator('#users-msg .msg.err', { hasText: 'the user exists already' }).waitFor(WAIT);
  let r = await srv.api('GET', '/users/carol', undefined, basic('carol', 'carol-first-pw'));
  assert.equal(r.status, 200, 'the first password still works');

  r = await srv.api('GET', '/streams/Carol-1', undefined, { Authorization: 'Bearer ' + token });
  assert.ok([200, 404].includes(r.status), 'the new key authenticates: ' + r.status + ' ' + r.text);

  // carol signs in: her own details, no users or keys; an admin page is refused with the message
  const carol = await watchedPage(browser);
  await carol.goto(srv.url + '/#/users');
  await signIn(carol, 'carol', 'carol-first-pw');
  await carol.locator('#who-name', { hasText: 'carol' }).waitFor(WAIT);
  await carol.locator('#own dd', { hasText: 'billing, auditors' }).waitFor(WAIT);
  assert.equal(await carol.locator('#users-table').count(), 0);
  assert.equal(await carol.locator('#keys-table').count(), 0);
  await carol.locator('#not-admin', { hasText: 'managed by $admins' }).waitFor(WAIT);
  await shot(carol, 'users-self');
  await carol.goto(srv.url + '/#/rules');
  await carol.locator('#main .msg.err', { hasText: 'Not allowed: this operation needs $admins or $rule-managers' }).waitFor(WAIT);
  await shot(carol, 'denied');
  // her own password: a wrong current one is an error (she stays signed in), then the change
  await carol.goto(srv.url + '/#/users');
  await carol.fill('#own-current', 'wrong-current');
  await carol.fill('#own-new', 'carol-second-pw');
  await carol.click('#own-password button[type=submit]');
  await carol.locator('#own-msg .msg.err', { hasText: 'the current password is wrong' }).waitFor(WAIT);
  assert.equal(await carol.locator('#login-form').count(), 0);
  await carol.fill('#own-current', 'carol-first-pw');
  await carol.fill('#own-new', 'carol-second-pw');
  await carol.click('#own-password button[type=submit]');
  await carol.locator('#own-msg .msg.ok', { hasText: 'Password changed' }).waitFor(WAIT);
  r = await srv.api('GET', '/users/carol', undefined, basic('carol', 'carol-second-pw'));
  assert.equal(r.status, 200);
  r = await srv.api('GET', '/users/carol', undefined, basic('carol', 'carol-first-pw'));
  assert.equal(r.status, 401, 'the old password stops working');
  // the UI now signs her requests with the new password
  await carol.goto(srv.url + '/#/stream/Carol-1');
  await carol.locator('#append-form').waitFor(WAIT);
  await carol.fill('#append-type', 'ByCarol');
  await carol.click('#append-form button[type=submit]');
  await carol.locator('text=appended at revision 0').waitFor(WAIT);
  assert.equal(await carol.locator('#login-form').count(), 0);

  // the admin revokes the key (confirmed by typing its id): it is refused from then on
  await admin.click(`#keys-table tr[data-key="${keyId}"] button`);
  const confirmGo = admin.locator('#keys .confirm button.danger');
  assert.ok(await confirmGo.isDisabled(), 'nothing happens until the id is typed');
  await admin.fill('#keys .confirm input', keyId);
  await confirmGo.click();
  await admin.locator(`#keys-table tr[data-key="${keyId}"] td.state`, { hasText: 'revoked' }).waitFor(WAIT);
  r = await srv.api('GET', '/streams/Carol-1', undefined, { Authorization: 'Bearer ' + token });
  assert.equal(r.status, 401, 'a revoked key is refused');

  // admin: reset, disable (her next request goes to the form and she cannot sign in), enable, delete
  await admin.fill('#users-table tr[data-user="carol"] input[type=password]', 'carol-reset-pw');
  await admin.click('#users-table tr[data-user="carol"] button:text("Reset password")');
  await admin.locator('#users-msg .msg.ok', { hasText: 'password of carol reset' }).waitFor(WAIT);
  r = await srv.api('GET', '/users/carol', undefined, basic('carol', 'carol-reset-pw'));
  assert.equal(r.status, 200);
  await admin.click('#users-table tr[data-user="carol"] button:text("Disable")');
  await admin.locator('#users-table tr[data-user="carol"] td.state', { hasText: 'disabled' }).waitFor(WAIT);
  r = await srv.api('GET', '/users/carol', undefined, basic('carol', 'carol-reset-pw'));
  assert.equal(r.status, 401, 'a disabled user is refused');
  // her next request in the UI sends her to the form, where she cannot sign in
  await carol.goto(srv.url + '/#/streams');
  await carol.locator('#login-form').waitFor(WAIT);
  await signIn(carol, 'carol', 'carol-reset-pw');
  await carol.locator('#login-msg .msg.err').waitFor(WAIT);
  assert.equal(await carol.locator('#who-name').count(), 0);
  await admin.click('#users-table tr[data-user="carol"] button:text("Enable")');
  await admin.locator('#users-table tr[data-user="carol"] td.state', { hasText: 'enabled' }).waitFor(WAIT);
  await admin.click('#users-table tr[data-user="carol"] button:text("Delete…")');
  await admin.fill('#users .confirm input', 'carol');
  await admin.click('#users .confirm button.danger');
  await admin.locator('#users-msg .msg.ok', { hasText: 'deleted carol' }).waitFor(WAIT);
  await admin.locator('#users-table tr[data-user="carol"]').waitFor({ state: 'detached', ...WAIT });
  r = await srv.api('GET', '/users', undefined, basic('admin', ADMIN_PW));
  assert.deepEqual(r.json.map(u => u.loginName), ['admin']);
  noProblems(admin);
  noProblems(carol);
  await admin.context().close();
  await carol.context().close();
});

test('login: a throttled address is told so in the form', async () => {
  const own = await new Server({ args: ['--admin-password', ADMIN_PW, '--auth-fail-limit', '2'] }).start();
  try {
    const page = await watchedPage(browser);
    await page.goto(own.url + '/');
    let text = '';
    for (let i = 0; i < 5 && !/429/.test(text); i++) {
      await signIn(page, 'admin', 'wrong-' + i);
      await page.locator('#login-msg .msg.err').waitFor(WAIT);
      await page.waitForFunction(() => !document.querySelector('#login-form button[type=submit]').disabled, null, WAIT);
      text = await page.textContent('#login-msg');
    }
    assert.match(text, /429 TOO_MANY_FAILED_LOGINS/);
    assert.equal(await page.locator('#who-name').count(), 0, 'nobody signed in');
    assert.equal(await page.inputValue('#login-password'), '');
    await shot(page, 'login-throttled');
    noProblems(page);
    await page.context().close();
  } finally {
    await own.stop(); own.cleanup();
  }
});
