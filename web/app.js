// app.js - the router: the page is chosen by the URL's hash
// (#/page/segment/...?param=...), so every view has a link that can be
// bookmarked and the back button works. Each page is a function
// (main, segments, params) that fills <main> and may return a cleanup
// function (timers, event streams), called when the user leaves it.
import { onConnection, startHealthPoll } from './api.js';
import { h } from './dom.js';
import { dashboard } from './dashboard.js';
import { streamsPage, streamPage, eventPage } from './streams.js';
import { livePage } from './live.js';
import { queryPage } from './query.js';
import { groupsPage, groupPage } from './groups.js';
import { projectionsPage, projectionPage } from './projections.js';
import { rulesPage, rulePage } from './rules.js';
import { usersPage } from './users.js';
import { setupLogin, loginShowing } from './login.js';

const pages = {
  '': dashboard, streams: streamsPage, stream: streamPage, event: eventPage,
  live: livePage, query: queryPage, groups: groupsPage, group: groupPage,
  projections: projectionsPage, projection: projectionPage,
  rules: rulesPage, rule: rulePage, users: usersPage,
};
const navOf = { stream: 'streams', event: 'streams', group: 'groups', projection: 'projections', rule: 'rules' };

let cleanup = null;
function leave() {
  if (cleanup) { try { cleanup(); } catch { /* leaving anyway */ } cleanup = null; }
}
function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, query = ''] = raw.split('?');
  const segs = pathPart.split('/').map(s => { try { return decodeURIComponent(s); } catch { return s; } });
  const name = segs.shift() || '';
  const params = new URLSearchParams(query);
  leave();
  if (loginShowing()) return; // the login form stays until signed in (login.js)
  const main = document.getElementById('main');
  main.replaceChildren();
  const page = pages[name];
  const navName = navOf[name] || name;
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#/' + navName) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!page) { main.append(h('h1', null, 'Not found'), h('p', null, 'No page named ' + name)); return; }
  document.title = 'Stele · ' + (navName || 'dashboard');
  const r = page(main, segs, params);
  if (typeof r === 'function') cleanup = r;
}

window.addEventListener('hashchange', () => { route(); document.getElementById('main').focus({ preventScroll: true }); });
const conn = document.getElementById('conn');
onConnection(up => {
  conn.className = 'conn ' + (up ? 'up' : 'down');
  conn.textContent = up ? 'connected' : 'disconnected: retrying';
});
setupLogin({ leave, redraw: route });
startHealthPoll();
route();
