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

const pages = {
  '': dashboard, streams: streamsPage, stream: streamPage, event: eventPage,
  live: livePage, query: queryPage, groups: groupsPage, group: groupPage,
  projections: projectionsPage, projection: projectionPage,
  rules: rulesPage, rule: rulePage, users: usersPage,
};
const navOf = { stream: 'streams', event: 'streams', group: 'groups', projection: 'projections', rule: 'rules' };

// Users and API keys arrive with authentication (issue 17, branch
// `security`): this page is their place.
function usersPage(main) {
  main.append(h('h1', null, 'Users and keys'),
    h('p', null, 'Users, roles and API keys (issue 17, docs/security.md) will be managed here. ' +
      'With users enabled, the browser asks for a login when the UI opens and sends it with ' +
      'every request; without users every request is allowed from the origins and hosts the ' +
      'server accepts (docs/http-api.md, "Browsers and other machines").'));
}

let cleanup = null;
function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, query = ''] = raw.split('?');
  const segs = pathPart.split('/').map(s => { try { return decodeURIComponent(s); } catch { return s; } });
  const name = segs.shift() || '';
  const params = new URLSearchParams(query);
  if (cleanup) { try { cleanup(); } catch { /* leaving anyway */ } cleanup = null; }
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
startHealthPoll();
route();
