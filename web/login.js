// login.js - signing in (docs/ui.md, "Signing in"). With users on the
// server, the first request without credentials gets a 401 (without
// WWW-Authenticate: api.js says X-Requested-With), and the UI puts this
// form in place of the page. The name and password are checked by reading
// the user's own details (GET /users/{name}, allowed to itself), kept only
// in api.js's memory, and the page the user was on is drawn again. The
// header shows who is signed in, with "Sign out" (the credentials are
// forgotten and the form comes back). An open server (no users) never
// answers 401, so the form never shows.
import { api, enc, setCredentials, basicCredentials, onUnauthorized } from './api.js';
import { h, errBox } from './dom.js';

let current = null; // {loginName, fullName, groups, disabled} once signed in
let showing = false;
let hooks = null;

export const currentUser = () => current;
// Admin rights as far as the UI can tell: signed in as a member of
// $admins, or an open server (no one signed in and nothing refused).
export const isAdmin = () => !current || (current.groups || []).includes('$admins');

// hooks: {leave() (stop the current page), redraw() (draw it again)}.
export function setupLogin(h_) {
  hooks = h_;
  onUnauthorized(() => showLogin());
  drawWho();
}

function drawWho() {
  const slot = document.getElementById('who');
  if (!slot) return;
  if (!current) { slot.replaceChildren(); return; }
  slot.replaceChildren(h('span', { id: 'who-name' }, 'signed in as ', h('strong', null, current.loginName)), ' ',
    h('button', { type: 'button', id: 'sign-out', onclick: signOut }, 'Sign out'));
}

export function signOut() {
  setCredentials(null);
  current = null;
  drawWho();
  showLogin('Signed out.');
}

// The form, in place of the page; further 401s while it shows change nothing.
export function showLogin(note) {
  if (showing) return;
  showing = true;
  setCredentials(null);
  current = null;
  drawWho();
  if (hooks) hooks.leave();
  const main = document.getElementById('main');
  const name = h('input', { id: 'login-name', name: 'username', autocomplete: 'username', required: true, size: 24 });
  const pw = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true, size: 24 });
  const out = h('div', { id: 'login-msg' }, note ? h('div.msg.ok', { role: 'status' }, note) : null);
  const go = h('button.primary', { type: 'submit' }, 'Sign in');
  const form = h('form', { id: 'login-form', 'aria-label': 'Sign in' },
    h('label', null, 'user name', name), h('label', null, 'password', pw), go);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    go.disabled = true;
    const creds = basicCredentials(name.value, pw.value);
    setCredentials(creds);
    try {
      const me = await api('/users/' + enc(name.value), { noLogin: true });
      current = me;
      showing = false;
      drawWho();
      if (hooks) hooks.redraw();
    } catch (err) {
      setCredentials(null);
      pw.value = '';
      out.replaceChildren(err.status === 401
        ? h('div.msg.err', { role: 'alert' }, 'Wrong user name or password (' + err.message + ').')
        : errBox(err));
      pw.focus();
    } finally {
      go.disabled = false;
    }
  });
  main.replaceChildren(h('h1', null, 'Sign in'),
    h('p.muted', null, 'This server has users: sign in to use the UI. The password is kept in this tab\'s memory only.'),
    form, out);
  document.title = 'Stele · sign in';
  name.focus();
}
export const loginShowing = () => showing;
