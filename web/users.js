// users.js - users and API keys (docs/security.md): for $admins (or an
// open server) the list of users with their groups and state, creating,
// enabling / disabling, resetting a password, deleting (confirmed by
// typing the name); the API keys with creating (the token is shown once,
// here, and never again) and revoking (confirmed). Everyone signed in sees
// their own details and may change their own password. What the server
// refuses is shown with its message.
import { api, enc, setCredentials, basicCredentials } from './api.js';
import { h, errBox, okBox, kv, confirmBox } from './dom.js';
import { currentUser, isAdmin } from './login.js';

const groupsText = u => (u.groups || []).join(', ') || '–';
const parseGroups = t => t.split(',').map(s => s.trim()).filter(Boolean);

export function usersPage(main) {
  const me = currentUser();
  main.append(h('h1', null, 'Users and keys'));
  if (me) main.append(ownSection(me));
  if (!isAdmin()) {
    main.append(h('p.muted', { id: 'not-admin' }, 'Other users and the API keys are managed by $admins.'));
    return;
  }
  if (!me) main.append(h('p.msg.warn', null, 'This server has no users yet: it lets every request in. ' +
    'Creating the first user turns authentication on for every client (docs/security.md); sign in with it then.'));
  main.append(usersSection(), keysSection());
}

function ownSection(me) {
  const out = h('div', { id: 'own-msg' });
  const cur = h('input', { id: 'own-current', type: 'password', autocomplete: 'current-password', required: true });
  const np = h('input', { id: 'own-new', type: 'password', autocomplete: 'new-password', required: true });
  const form = h('form', { id: 'own-password' }, h('label', null, 'current password', cur),
    h('label', null, 'new password', np), h('button.primary', { type: 'submit' }, 'Change my password'));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    try {
      await api('/users/' + enc(me.loginName) + '/password', { method: 'POST', noLogin: true,
        json: { currentPassword: cur.value, newPassword: np.value } });
      setCredentials(basicCredentials(me.loginName, np.value)); // the old one stops working at once
      out.replaceChildren(okBox('Password changed.'));
      cur.value = np.value = '';
    } catch (err) { out.replaceChildren(errBox(err)); }
  });
  return h('section', { id: 'own' }, h('h2', null, 'Me'),
    kv([['user', me.loginName], ['full name', me.fullName || '–'], ['groups', groupsText(me)],
      ['state', me.disabled ? 'disabled' : 'enabled']]), form, out);
}

function usersSection() {
  const out = h('div', { id: 'users-msg' }), body = h('tbody'), slot = h('div');
  const say = (e, ok) => out.replaceChildren(e ? errBox(e) : okBox(ok));
  const act = (label, fn) => async () => { try { await fn(); say(null, label); load(); } catch (e) { say(e); } };
  async function load() {
    try {
      const users = await api('/users');
      body.replaceChildren(...users.map(u => {
        const resetPw = h('input', { type: 'password', 'aria-label': 'new password for ' + u.loginName, autocomplete: 'new-password', size: 14 });
        const reset = h('form.inline', { 'aria-label': 'reset password of ' + u.loginName },
          resetPw, h('button', { type: 'submit' }, 'Reset password'));
        reset.addEventListener('submit', e => {
          e.preventDefault();
          act('password of ' + u.loginName + ' reset', () => api('/users/' + enc(u.loginName) + '/reset-password',
            { method: 'POST', json: { newPassword: resetPw.value } }))();
        });
        return h('tr', { 'data-user': u.loginName }, h('td', null, u.loginName), h('td', null, u.fullName || ''),
          h('td', null, groupsText(u)), h('td.state', null, u.disabled ? 'disabled' : 'enabled'),
          h('td', null, h('div.bar', null,
            h('button', { type: 'button', onclick: act((u.disabled ? 'enabled ' : 'disabled ') + u.loginName,
              () => api('/users/' + enc(u.loginName) + (u.disabled ? '/enable' : '/disable'), { method: 'POST' })) },
              u.disabled ? 'Enable' : 'Disable'),
            reset,
            h('button.danger', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Delete user ' + u.loginName, u.loginName,
              () => { slot.replaceChildren(); act('deleted ' + u.loginName, () => api('/users/' + enc(u.loginName), { method: 'DELETE' }))(); })) },
              'Delete…'))));
      }));
      if (!users.length) body.append(h('tr', null, h('td', { colspan: 5 }, 'No users.')));
    } catch (e) { say(e); }
  }
  const name = h('input', { id: 'new-user-name', required: true, autocomplete: 'off' });
  const full = h('input', { id: 'new-user-full' });
  const groups = h('input', { id: 'new-user-groups', placeholder: '$admins, billing' });
  const pw = h('input', { id: 'new-user-password', type: 'password', autocomplete: 'new-password', required: true });
  const form = h('form', { id: 'new-user' }, h('label', null, 'user name', name), h('label', null, 'full name', full),
    h('label', null, 'groups (comma separated)', groups), h('label', null, 'password', pw),
    h('button.primary', { type: 'submit' }, 'Create user'));
  form.addEventListener('submit', e => {
    e.preventDefault();
    const n = name.value;
    act('created ' + n, async () => {
      await api('/users/' + enc(n), { method: 'PUT', json: { password: pw.value, fullName: full.value, groups: parseGroups(groups.value) } });
      name.value = full.value = groups.value = pw.value = '';
    })();
  });
  load();
  return h('section', { id: 'users' }, h('h2', null, 'Users'), out, slot,
    h('div.scroll', null, h('table', { id: 'users-table' }, h('thead', null, h('tr', null,
      ['user', 'full name', 'groups', 'state', ''].map(t => h('th', null, t)))), body)),
    h('h2', null, 'New user'), form);
}

function keysSection() {
  const out = h('div', { id: 'keys-msg' }), body = h('tbody'), slot = h('div'), token = h('div', { id: 'key-token' });
  const say = (e, ok) => out.replaceChildren(e ? errBox(e) : okBox(ok));
  async function load() {
    try {
      const keys = await api('/api-keys');
      body.replaceChildren(...keys.map(k => h('tr', { 'data-key': k.id }, h('td', null, h('code', null, k.id)), h('td', null, k.loginName),
        h('td', null, k.name || ''), h('td.state', null, k.revoked ? 'revoked' : 'active'),
        h('td', null, k.revoked ? '' : h('button.danger', { type: 'button', onclick: () => slot.replaceChildren(confirmBox('Revoke key ' + k.id, k.id, async () => {
          slot.replaceChildren();
          try { await api('/api-keys/' + enc(k.id), { method: 'DELETE' }); say(null, 'revoked ' + k.id); load(); } catch (e) { say(e); }
        })) }, 'Revoke…')))));
      if (!keys.length) body.append(h('tr', null, h('td', { colspan: 5 }, 'No API keys.')));
    } catch (e) { say(e); }
  }
  const user = h('input', { id: 'new-key-user', required: true, autocomplete: 'off' });
  const name = h('input', { id: 'new-key-name', placeholder: 'billing-worker' });
  const form = h('form', { id: 'new-key' }, h('label', null, 'for user', user), h('label', null, 'key name', name),
    h('button.primary', { type: 'submit' }, 'Create key'));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    try {
      const k = await api('/api-keys', { method: 'POST', json: { loginName: user.value, name: name.value } });
      token.replaceChildren(h('div.msg.warn', { role: 'status' }, 'Key ', h('code', null, k.id), ' for ', k.loginName,
        ': copy its token now, it is shown only this once:', h('pre', { id: 'key-token-value' }, k.token)));
      out.replaceChildren();
      user.value = name.value = '';
      load();
    } catch (err) { token.replaceChildren(); say(err); }
  });
  load();
  return h('section', { id: 'keys' }, h('h2', null, 'API keys'),
    h('p.muted', null, 'For programs: sent as "Authorization: Bearer <token>". The server keeps only a hash of each token.'),
    out, slot, h('div.scroll', null, h('table', { id: 'keys-table' }, h('thead', null, h('tr', null,
      ['id', 'user', 'name', 'state', ''].map(t => h('th', null, t)))), body)),
    h('h2', null, 'New API key'), form, token);
}
