// Gatecast web console. Plain JavaScript, no dependency, no build step:
// it calls the admin API (/api/v1/…) with the session cookie the sign-in
// set, and the session's CSRF token in X-CSRF-Token on every write. The
// admin key is sent once, to POST /console/login, and kept nowhere.
// Everything shown is built with DOM nodes and textContent, never parsed as HTML,
// so a token name or a topic cannot inject markup.
'use strict';

(() => {
  const PAGE = 50; // rows per page of the client-side lists
  const LIVE_POINTS = 60; // seconds shown by the live charts
  const COUNT_TOKENS_MAX = 50; // tokens whose live sessions a confirmation counts

  const S = {
    session: null, // {actor, csrf_token, expires_at, node, cluster}
    names: new Map(), // token id → name, of the tokens seen
    tags: null, // every tag, from GET /api/v1/tags
    route: '',
    live: null, // the live view's poller
  };

  // ---- helpers ----

  const $ = (sel, root = document) => root.querySelector(sel);

  // el('td', {class: 'x', text: 'y', onclick: f}, child, …)
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) {
      if (k === null || k === undefined || k === false) continue;
      e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    }
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.firstChild.remove();
    return node;
  }

  const when = (s) => (s ? String(s).replace('T', ' ').replace(/\.\d+/, '').replace('Z', '') : '');
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many || one + 's'}`;
  const tokenLabel = (id) => {
    const name = S.names.get(id);
    return name ? `${id} “${name}”` : String(id);
  };
  const remember = (toks) => {
    for (const t of toks) S.names.set(t.id, t.name);
    return toks;
  };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls a route and returns {status, data, ms}; an error answer
  // throws ApiError with the API's message. 401 means the session ended.
  async function api(method, path, body) {
    const opt = { method, headers: {}, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      opt.headers['Content-Type'] = 'application/json';
      opt.body = JSON.stringify(body);
    }
    if (method !== 'GET' && S.session) opt.headers['X-CSRF-Token'] = S.session.csrf_token;
    const t0 = performance.now();
    const res = await fetch(path, opt);
    const text = await res.text();
    const ms = Math.round(performance.now() - t0);
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (e) {
        data = null;
      }
    }
    if (res.status === 401 && path !== '/console/login' && S.session) {
      signedOut('Your session has ended: sign in again.');
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.code || 'http_' + res.status, err.message || res.statusText);
    }
    return { status: res.status, data, ms, bytes: text.length };
  }

  // report shows the outcome of the last action at the top of the page.
  function report(text, kind) {
    const r = $('#report');
    r.hidden = false;
    r.className = 'report ' + (kind || 'ok');
    r.textContent = text;
  }

  function failed(what, err) {
    report(`${what} failed: ${err.message}`, 'error');
  }

  // confirmDialog asks before a change; body is a list of lines. With
  // field, it asks for a value and resolves to it (null when canceled).
  function confirmDialog({ title, body, ok, danger, field }) {
    const d = $('#confirm');
    $('#confirm-title').textContent = title;
    const b = clear($('#confirm-body'));
    for (const line of [].concat(body || [])) b.append(el('p', { text: line }));
    const ok$ = $('#confirm-ok');
    ok$.textContent = ok || 'Confirm';
    ok$.className = danger ? 'danger' : '';
    const f = $('#confirm-field');
    f.hidden = !field;
    const input = $('#confirm-input');
    if (field) {
      $('#confirm-label').textContent = field.label;
      input.value = field.value || '';
    }
    return new Promise((resolve) => {
      const onKey = (e) => {
        if (e.key === 'Enter') {
          e.preventDefault();
          d.close('ok');
        }
      };
      input.addEventListener('keydown', onKey);
      d.addEventListener(
        'close',
        () => {
          input.removeEventListener('keydown', onKey);
          const yes = d.returnValue === 'ok';
          resolve(field ? (yes ? input.value : null) : yes);
        },
        { once: true },
      );
      d.returnValue = 'cancel';
      d.showModal();
      (field ? input : danger ? $('#confirm-cancel') : ok$).focus();
    });
  }

  // liveCount is the number of live sessions of the tokens (every node),
  // from GET /api/v1/connections?token_id=…&limit=0. Past
  // COUNT_TOKENS_MAX tokens it counts the first ones (at_least).
  async function liveCount(ids) {
    const some = ids.slice(0, COUNT_TOKENS_MAX);
    const res = await Promise.all(some.map((id) => api('GET', `/api/v1/connections?token_id=${id}&limit=0`)));
    return { total: res.reduce((n, r) => n + r.data.total, 0), at_least: ids.length > some.length };
  }

  async function nodeCount() {
    try {
      const r = await api('GET', '/api/v1/nodes');
      return Array.isArray(r.data) ? r.data.length : 1;
    } catch (e) {
      return 0;
    }
  }

  // rightsChange runs a write that changes rights, then says what was
  // enforced, where and how fast, from what the API answers: the status
  // (200/204, or 202 with unconfirmed_nodes), this write's audit entry
  // (enforcement, enforce_ms), the nodes (GET /api/v1/nodes) and the
  // tokens' live sessions counted before and after.
  async function rightsChange(label, tokenIDs, write, closeCode) {
    let before = null;
    try {
      before = await liveCount(tokenIDs);
    } catch (e) {
      before = null;
    }
    let res;
    try {
      res = await write();
    } catch (e) {
      failed(label, e);
      throw e;
    }
    const [nodes, entry, after] = await Promise.all([
      nodeCount(),
      api('GET', `/api/v1/audit?limit=1&actor=${encodeURIComponent(S.session.actor)}`)
        .then((r) => r.data.entries[0])
        .catch(() => null),
      liveCount(tokenIDs).catch(() => null),
    ]);
    const parts = [];
    const d = res.data || {};
    const enforceMs = entry && entry.detail && entry.detail.enforce_ms;
    if (res.status === 202 && d.unconfirmed_nodes) {
      const n = Math.max(nodes, d.unconfirmed_nodes.length);
      parts.push(`enforced on ${n - d.unconfirmed_nodes.length}/${n} nodes; not confirmed in time by ${d.unconfirmed_nodes.join(', ')} (they apply it when they hear it)`);
    } else if (res.status === 202) {
      parts.push('saved; enforcement on live sessions still running (202 pending)');
    } else if (entry && entry.enforcement === 'none') {
      parts.push('no token concerned, nothing to enforce');
    } else {
      const n = nodes || 1;
      const took = enforceMs === undefined ? '' : enforceMs === 0 ? ' in under 1 ms' : ` in ${enforceMs} ms`;
      parts.push(`enforced on ${n}/${n} ${n === 1 ? 'node' : 'nodes'}${took}`);
    }
    if (before && after) {
      const closed = Math.max(0, before.total - after.total);
      parts.push(`${plural(closed, 'session')} closed` + (closed && closeCode ? ` (${closeCode})` : ''));
    }
    parts.push(`answered in ${res.ms} ms`);
    report(`${label}: ${parts.join(', ')}.`, res.status === 202 ? 'warn' : 'ok');
    return res;
  }

  // ---- session ----

  function showPage(id) {
    for (const p of document.querySelectorAll('.page')) p.hidden = p.id !== id;
  }

  function signedOut(message) {
    S.session = null;
    S.tags = null;
    S.names.clear();
    stopLive();
    hideSecret();
    $('#nav').hidden = true;
    $('#who-box').hidden = true;
    $('#report').hidden = true;
    showPage('page-signin');
    $('#signin-error').textContent = message || '';
    $('#signin-key').focus();
  }

  function signedIn(session) {
    S.session = session;
    $('#nav').hidden = false;
    $('#who-box').hidden = false;
    $('#who').textContent = `${session.actor}${session.node ? ' on ' + session.node : ''}`;
    $('#who').title = `Session ends ${when(session.expires_at)} UTC if unused, ${when(session.max_expires_at)} UTC at the latest`;
    route();
  }

  async function signIn(e) {
    e.preventDefault();
    const input = $('#signin-key');
    const key = input.value;
    input.value = ''; // the key is kept nowhere, not even in the form
    $('#signin-error').textContent = '';
    try {
      const r = await api('POST', '/console/login', { key });
      signedIn(r.data);
      report(`Signed in as ${r.data.actor}.`);
    } catch (err) {
      $('#signin-error').textContent = err.status === 401 ? 'Wrong admin key.' : err.message;
      input.focus();
    }
  }

  async function signOut() {
    try {
      await api('POST', '/console/logout');
    } catch (e) {
      /* the session is gone either way */
    }
    location.hash = '#/tokens';
    signedOut('Signed out.');
  }

  // ---- router ----

  const routes = {
    tokens: renderTokens,
    token: renderToken,
    tags: renderTags,
    connections: renderConnections,
    cluster: renderCluster,
    live: renderLive,
    audit: renderAudit,
    publish: renderPublish,
  };

  // route shows the page the location's hash names. After a navigation
  // (not the first page) it moves the focus to the page's heading, so that
  // keyboard and screen-reader users start there.
  function route(ev) {
    if (!S.session) return;
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    let name = parts[0].split('?')[0] || 'tokens';
    if (name === 'tokens' && parts[1]) name = 'token';
    if (!routes[name]) name = 'tokens';
    if (S.route !== 'live' || name !== 'live') stopLive();
    S.route = name;
    for (const a of document.querySelectorAll('#nav a')) {
      const target = a.getAttribute('href').slice(2);
      if (target === (name === 'token' ? 'tokens' : name)) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    showPage('page-' + name);
    const h1 = $(`#page-${name} h1`);
    if (h1) document.title = `${h1.textContent} · Gatecast console`;
    if (h1 && ev && ev.type === 'hashchange') {
      h1.tabIndex = -1;
      h1.focus({ preventScroll: true });
    }
    routes[name](parts.slice(1)).catch((err) => failed('Loading the page', err));
  }

  // ---- tokens ----

  // The token list is searched and paged by the node (GET /console/tokens):
  // with 10,000 tokens a page is still 50 rows.
  const tokenView = { page: 0, pages: 1, seq: 0 };

  async function loadTags(force) {
    if (!S.tags || force) S.tags = (await api('GET', '/api/v1/tags')).data;
    return S.tags;
  }

  function matches(q, id, text) {
    if (!q) return true;
    if (/^\d+$/.test(q) && String(id) === q) return true;
    return text.toLowerCase().includes(q.toLowerCase());
  }

  async function renderTokens() {
    await drawTokens();
  }

  async function drawTokens() {
    const q = $('#token-search').value.trim();
    const seq = ++tokenView.seq;
    const params = new URLSearchParams({ q, offset: String(tokenView.page * PAGE), limit: String(PAGE) });
    const r = (await api('GET', `/console/tokens?${params}`)).data;
    if (seq !== tokenView.seq) return; // a later search already answered
    const pages = Math.max(1, Math.ceil(r.matched / PAGE));
    if (tokenView.page > pages - 1) {
      tokenView.page = pages - 1;
      return drawTokens();
    }
    const rows = remember(r.tokens);
    const tb = clear($('#token-table tbody'));
    for (const t of rows) {
      tb.append(
        el('tr', { 'data-token': t.id },
          el('td', { text: t.id }),
          el('td', {}, el('a', { href: `#/tokens/${t.id}`, text: t.name || '(no name)' })),
          el('td', { text: t.max_connections || 'unlimited' }),
          el('td', {}, el('span', { class: t.disabled ? 'badge off' : 'badge on', text: t.disabled ? 'disabled' : 'enabled' }),
            t.weak_secret ? el('span', { class: 'badge warn', text: t.warning || 'weak secret: rotate' }) : null),
          el('td', { text: when(t.created_at) }),
          el('td', { class: 'row-actions' },
            el('a', { href: `#/tokens/${t.id}`, text: 'Permissions', 'aria-label': `Permissions of token ${t.id}` }),
            el('button', { type: 'button', text: t.disabled ? 'Enable' : 'Disable', 'aria-label': `${t.disabled ? 'Enable' : 'Disable'} token ${t.id}`, onclick: () => toggleToken(t) }),
            el('button', { type: 'button', text: 'Rotate', 'aria-label': `Rotate the secret of token ${t.id}`, onclick: () => rotateToken(t) }),
            el('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete token ${t.id}`, onclick: () => deleteToken(t) }))));
    }
    if (!rows.length) tb.append(el('tr', {}, el('td', { colspan: 6, class: 'muted', text: q ? 'No token matches.' : 'No token yet.' })));
    $('#token-count').textContent = (q ? `${r.matched} of ${plural(r.total, 'token')}` : plural(r.total, 'token')) + ` (found in ${r.took_us < 1000 ? r.took_us + ' µs' : Math.round(r.took_us / 1000) + ' ms'})`;
    tokenView.pages = pages;
    $('#token-page').textContent = `page ${tokenView.page + 1} of ${pages}`;
    $('#token-prev').disabled = tokenView.page === 0;
    $('#token-next').disabled = tokenView.page >= pages - 1;
  }

  function showSecret(tok) {
    $('#secret-token').textContent = tokenLabel(tok.id);
    $('#secret-value').value = tok.token;
    $('#secret-copied').textContent = '';
    const box = $('#secret-box');
    box.hidden = false;
    box.focus();
  }

  async function copySecret() {
    const input = $('#secret-value');
    let ok = false;
    try {
      await navigator.clipboard.writeText(input.value);
      ok = true;
    } catch (e) {
      input.select();
      ok = document.execCommand && document.execCommand('copy');
    }
    $('#secret-copied').textContent = ok ? 'Copied.' : 'Copy refused by the browser: select the secret and press Ctrl+C.';
  }

  function hideSecret() {
    $('#secret-value').value = '';
    $('#secret-box').hidden = true;
  }

  async function createToken(e) {
    e.preventDefault();
    const name = $('#tc-name').value.trim();
    const max = Number($('#tc-max').value || 0);
    try {
      const r = await api('POST', '/api/v1/tokens', { name, max_connections: max });
      remember([r.data]);
      $('#tc-name').value = '';
      report(`Created token ${tokenLabel(r.data.id)} in ${r.ms} ms. Copy its secret now.`);
      await drawTokens();
      showSecret(r.data);
    } catch (err) {
      failed('Creating the token', err);
    }
  }

  // cutOff says whom a change closes, counted before asking.
  async function cutOff(ids, code) {
    const c = await liveCount(ids);
    if (!c.total) return 'No live connection is affected.';
    return `This closes ${c.at_least ? 'at least ' : ''}${plural(c.total, 'live connection')} with ${code}.`;
  }

  async function toggleToken(t) {
    const disable = !t.disabled;
    if (disable) {
      const ok = await confirmDialog({
        title: `Disable token ${tokenLabel(t.id)}?`,
        body: [await cutOff([t.id], 4002), 'It cannot connect again until it is enabled.'],
        ok: 'Disable', danger: true,
      });
      if (!ok) return;
    }
    await rightsChange(`${disable ? 'Disabled' : 'Enabled'} token ${tokenLabel(t.id)}`, [t.id],
      () => api('PATCH', `/api/v1/tokens/${t.id}`, { disabled: disable }), 4002).catch(() => {});
    await refreshTokenPages(t.id);
  }

  async function rotateToken(t) {
    const ok = await confirmDialog({
      title: `Rotate the secret of token ${tokenLabel(t.id)}?`,
      body: [await cutOff([t.id], 4002), 'The old secret stops working at once; the new one is shown once.'],
      ok: 'Rotate', danger: true,
    });
    if (!ok) return;
    let r;
    try {
      r = await rightsChange(`Rotated token ${tokenLabel(t.id)}`, [t.id], () => api('POST', `/api/v1/tokens/${t.id}/rotate`), 4002);
    } catch (e) {
      return;
    }
    const tok = r.status === 202 ? r.data.result : r.data;
    await refreshTokenPages(t.id);
    if (tok && tok.token) showSecret(tok);
  }

  async function deleteToken(t) {
    const ok = await confirmDialog({
      title: `Delete token ${tokenLabel(t.id)}?`,
      body: [await cutOff([t.id], 4002), 'Its permissions are deleted with it. This cannot be undone.'],
      ok: 'Delete', danger: true,
    });
    if (!ok) return;
    try {
      await rightsChange(`Deleted token ${tokenLabel(t.id)}`, [t.id], () => api('DELETE', `/api/v1/tokens/${t.id}`), 4002);
    } catch (e) {
      return;
    }
    if (S.route === 'token') location.hash = '#/tokens';
    else await drawTokens();
  }

  async function refreshTokenPages(id) {
    if (S.route === 'token') await renderToken([String(id)]);
    else if (S.route === 'tokens') await drawTokens();
  }

  // ---- one token: edit and permissions ----

  const grantView = { id: 0, page: 0, grants: new Map() };

  async function renderToken(args) {
    const id = Number(args[0]);
    const [tok, grants] = await Promise.all([
      api('GET', `/api/v1/tokens/${id}`).then((r) => r.data),
      api('GET', `/api/v1/tokens/${id}/permissions`).then((r) => r.data),
      loadTags(true),
    ]);
    remember([tok]);
    if (grantView.id !== id) grantView.page = 0;
    grantView.id = id;
    grantView.token = tok;
    grantView.grants = new Map(grants.map((g) => [g.tag_id, g.permission]));
    $('#h-token').textContent = `Token ${tok.id}${tok.name ? ' “' + tok.name + '”' : ''}`;
    const live = await liveCount([id]).catch(() => ({ total: '?' }));
    $('#token-facts').textContent = [
      tok.disabled ? 'disabled' : 'enabled',
      `max connections ${tok.max_connections || 'unlimited'}`,
      `created ${when(tok.created_at)} UTC`,
      plural(live.total, 'live connection'),
      tok.weak_secret ? 'weak secret: rotate' : '',
    ].filter(Boolean).join(' · ');
    $('#te-name').value = tok.name;
    $('#te-max').value = tok.max_connections;
    $('#token-toggle').textContent = tok.disabled ? 'Enable' : 'Disable';
    $('#token-conns').href = `#/connections?token=${id}`;
    drawGrants();
  }

  function drawGrants() {
    const q = $('#grant-search').value.trim();
    const only = $('#grant-only').checked;
    const list = S.tags.filter((t) => matches(q, t.id, t.pattern) && (!only || grantView.grants.has(t.id)));
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    grantView.page = Math.min(grantView.page, pages - 1);
    const tb = clear($('#grant-table tbody'));
    for (const tag of list.slice(grantView.page * PAGE, (grantView.page + 1) * PAGE)) {
      const cur = grantView.grants.get(tag.id) || 'none';
      const group = el('div', { class: 'seg', role: 'group', 'aria-label': `Permission on ${tag.pattern}` });
      for (const p of ['none', 'read', 'readwrite']) {
        group.append(el('button', {
          type: 'button', text: p, 'aria-pressed': String(p === cur), 'data-perm': p,
          onclick: () => p !== cur && setGrant(tag, cur, p),
        }));
      }
      tb.append(el('tr', { 'data-tag': tag.id }, el('td', { text: tag.id }), el('td', {}, el('code', { text: tag.pattern })), el('td', {}, group)));
    }
    if (!list.length) tb.append(el('tr', {}, el('td', { colspan: 3, class: 'muted', text: S.tags.length ? 'No tag matches.' : 'No tag yet: create one on the Tags page.' })));
    $('#grant-count').textContent = `${plural(grantView.grants.size, 'grant')}, ${plural(S.tags.length, 'tag')}`;
    $('#grant-page').textContent = `page ${grantView.page + 1} of ${pages}`;
    $('#grant-prev').disabled = grantView.page === 0;
    $('#grant-next').disabled = grantView.page >= pages - 1;
  }

  async function setGrant(tag, from, to) {
    const id = grantView.id;
    const who = tokenLabel(id);
    if (to === 'none' || (from === 'readwrite' && to === 'read')) {
      const c = await liveCount([id]);
      const body = to === 'none'
        ? [`Token ${who} has ${plural(c.total, 'live connection')}: those with a subscription no longer covered by any grant are closed with 4003.`]
        : [`Token ${who} has ${plural(c.total, 'live connection')}: they stay connected; their next publish on ${tag.pattern} is refused.`];
      const ok = await confirmDialog({ title: `${to === 'none' ? 'Revoke' : 'Downgrade'} ${from} on ${tag.pattern}?`, body, ok: to === 'none' ? 'Revoke' : 'Downgrade', danger: true });
      if (!ok) return;
    }
    const path = `/api/v1/tokens/${id}/permissions/${tag.id}`;
    const label = to === 'none' ? `Revoked ${from} on ${tag.pattern} from token ${who}` : `Granted ${to} on ${tag.pattern} to token ${who}`;
    try {
      await rightsChange(label, [id], () => (to === 'none' ? api('DELETE', path) : api('PUT', path, { permission: to })), 4003);
    } catch (e) {
      /* reported */
    }
    await renderToken([String(id)]);
    const btn = $(`#grant-table tr[data-tag="${tag.id}"] button[data-perm="${to}"]`);
    if (btn) btn.focus();
  }

  async function saveToken(e) {
    e.preventDefault();
    const t = grantView.token;
    const name = $('#te-name').value.trim();
    const max = Number($('#te-max').value || 0);
    const patch = {};
    if (name !== t.name) patch.name = name;
    if (max !== t.max_connections) patch.max_connections = max;
    if (!Object.keys(patch).length) {
      report('Nothing changed.');
      return;
    }
    if (patch.max_connections && (t.max_connections === 0 || patch.max_connections < t.max_connections)) {
      const c = await liveCount([t.id]);
      if (c.total > patch.max_connections) {
        const ok = await confirmDialog({
          title: `Lower the limit of token ${tokenLabel(t.id)} to ${patch.max_connections}?`,
          body: [`It has ${plural(c.total, 'live connection')}: the newest ${c.total - patch.max_connections} are closed with 4004.`],
          ok: 'Lower the limit', danger: true,
        });
        if (!ok) return;
      }
    }
    await rightsChange(`Updated token ${tokenLabel(t.id)} (${Object.keys(patch).join(', ')})`, [t.id],
      () => api('PATCH', `/api/v1/tokens/${t.id}`, patch), 4004).catch(() => {});
    await refreshTokenPages(t.id);
  }

  // ---- tags ----

  const tagView = { page: 0, holders: new Map() };

  async function renderTags() {
    await loadTags(true);
    tagView.holders.clear();
    drawTags();
  }

  async function tagHolders(id) {
    const r = await api('GET', `/console/tags/${id}/tokens`);
    remember(r.data.tokens);
    tagView.holders.set(id, r.data.token_ids);
    return r.data.token_ids;
  }

  function drawTags() {
    const q = $('#tag-search').value.trim();
    const list = S.tags.filter((t) => matches(q, t.id, t.pattern));
    const pages = Math.max(1, Math.ceil(list.length / PAGE));
    tagView.page = Math.min(tagView.page, pages - 1);
    const tb = clear($('#tag-table tbody'));
    for (const tag of list.slice(tagView.page * PAGE, (tagView.page + 1) * PAGE)) {
      const holders = tagView.holders.get(tag.id);
      const cell = el('td', {});
      if (holders) {
        cell.append(holders.length ? holders.map((id, i) => [i ? ', ' : '', el('a', { href: `#/tokens/${id}`, text: tokenLabel(id) })]) : el('span', { class: 'muted', text: 'none' }));
      } else {
        cell.append(el('button', { type: 'button', class: 'link', text: 'Show', 'aria-label': `Show the tokens holding ${tag.pattern}`, onclick: async () => { await tagHolders(tag.id); drawTags(); } }));
      }
      tb.append(el('tr', { 'data-tag': tag.id },
        el('td', { text: tag.id }),
        el('td', {}, el('code', { text: tag.pattern })),
        cell,
        el('td', { class: 'row-actions' },
          el('button', { type: 'button', text: 'Edit', 'aria-label': `Edit tag ${tag.pattern}`, onclick: () => editTag(tag) }),
          el('button', { type: 'button', class: 'danger', text: 'Delete', 'aria-label': `Delete tag ${tag.pattern}`, onclick: () => deleteTag(tag) }))));
    }
    if (!list.length) tb.append(el('tr', {}, el('td', { colspan: 4, class: 'muted', text: q ? 'No tag matches.' : 'No tag yet.' })));
    $('#tag-count').textContent = q ? `${list.length} of ${S.tags.length} tags` : plural(S.tags.length, 'tag');
    $('#tag-page').textContent = `page ${tagView.page + 1} of ${pages}`;
    $('#tag-prev').disabled = tagView.page === 0;
    $('#tag-next').disabled = tagView.page >= pages - 1;
  }

  async function affectedLines(tag) {
    const ids = await tagHolders(tag.id);
    if (!ids.length) return { ids, lines: ['No token holds a permission on it: no live connection is affected.'] };
    const c = await liveCount(ids);
    const names = ids.slice(0, 10).map(tokenLabel).join(', ') + (ids.length > 10 ? `, … (${ids.length - 10} more)` : '');
    return {
      ids,
      lines: [
        `${plural(ids.length, 'token holds', 'tokens hold')} a permission on it: ${names}.`,
        `They have ${c.at_least ? 'at least ' : ''}${plural(c.total, 'live connection')}: those with a subscription no longer covered are closed with 4003, and publishes that lose write access are refused.`,
      ],
    };
  }

  async function createTag(e) {
    e.preventDefault();
    const pattern = $('#tag-pattern').value.trim();
    try {
      const r = await api('POST', '/api/v1/tags', { pattern });
      $('#tag-pattern').value = '';
      report(`Created tag ${r.data.id} ${r.data.pattern} in ${r.ms} ms (nobody's rights change until it is granted).`);
      await renderTags();
    } catch (err) {
      failed('Creating the tag', err);
    }
  }

  async function editTag(tag) {
    const a = await affectedLines(tag);
    const pattern = await confirmDialog({
      title: `Change the pattern of tag ${tag.id}`, body: a.lines, ok: 'Save',
      field: { label: 'Pattern', value: tag.pattern },
    });
    if (pattern === null || pattern.trim() === tag.pattern) return;
    await rightsChange(`Changed tag ${tag.id} to ${pattern.trim()}`, a.ids,
      () => api('PATCH', `/api/v1/tags/${tag.id}`, { pattern: pattern.trim() }), 4003).catch(() => {});
    await renderTags();
  }

  async function deleteTag(tag) {
    const a = await affectedLines(tag);
    const ok = await confirmDialog({
      title: `Delete tag ${tag.pattern}?`, body: a.lines.concat(['Every permission on it is deleted with it.']), ok: 'Delete', danger: true,
    });
    if (!ok) return;
    await rightsChange(`Deleted tag ${tag.pattern}`, a.ids, () => api('DELETE', `/api/v1/tags/${tag.id}`), 4003).catch(() => {});
    await renderTags();
  }

  // ---- connections ----

  const connView = { cursors: [''], next: '' };

  async function renderConnections() {
    const m = location.hash.match(/[?&]token=(\d+)/);
    if (m) $('#cf-token').value = m[1];
    try {
      const nodes = (await api('GET', '/api/v1/nodes')).data;
      const sel = $('#cf-node');
      const cur = sel.value;
      clear(sel).append(el('option', { value: '', text: 'any' }));
      for (const n of nodes) sel.append(el('option', { value: n.id, text: n.id || '(this node)' }));
      sel.value = cur;
      sel.disabled = !S.session.cluster;
    } catch (e) {
      /* the list still works without node names */
    }
    connView.cursors = [''];
    await loadConnections('');
  }

  // loadConnections lists one page from cursor. The API filters by token
  // and node; the protocol filter is applied here, reading pages of 1000
  // until PAGE matches (or 20 pages) are found.
  async function loadConnections(cursor) {
    const token = $('#cf-token').value.trim();
    const node = $('#cf-node').value;
    const protocol = $('#cf-protocol').value;
    const q = new URLSearchParams();
    if (token) q.set('token_id', token);
    if (node) q.set('node', node);
    q.set('limit', protocol ? '1000' : String(PAGE));
    let rows = [];
    let total = 0;
    let unreachable = [];
    let next = cursor;
    for (let i = 0; i < 20; i++) {
      if (next) q.set('cursor', next);
      else q.delete('cursor');
      const r = (await api('GET', `/api/v1/connections?${q}`)).data;
      total = r.total;
      unreachable = r.unreachable_nodes || [];
      rows = rows.concat(protocol ? r.connections.filter((c) => c.protocol === protocol) : r.connections);
      next = r.next_cursor;
      if (!protocol || !next || rows.length >= PAGE) break;
    }
    connView.next = next;
    const tb = clear($('#conn-table tbody'));
    for (const c of rows) {
      const subs = c.subscriptions && c.subscriptions.length
        ? el('ul', { class: 'subs' }, c.subscriptions.map((s) => el('li', {}, el('code', { text: s }))))
        : el('span', { class: 'muted', text: 'none' });
      tb.append(el('tr', { 'data-conn': c.id, 'data-node': c.node || '' },
        el('td', { text: c.node || S.session.node || '(this node)' }),
        el('td', { text: c.id }),
        el('td', {}, el('a', { href: `#/tokens/${c.token_id}`, text: c.token_id })),
        el('td', { text: c.protocol }),
        el('td', { text: c.client_id || c.username || '' }),
        el('td', { text: c.remote_addr }),
        el('td', { text: when(c.connected_since) }),
        el('td', {}, subs),
        el('td', {}, el('button', { type: 'button', class: 'danger', text: 'Kick', 'aria-label': `Kick connection ${c.id}`, onclick: () => kick(c) }))));
    }
    if (!rows.length) tb.append(el('tr', {}, el('td', { colspan: 9, class: 'muted', text: 'No live connection matches.' })));
    $('#conn-count').textContent = `${plural(total, 'live connection')}${token || node ? ' matching token/node' : ''}` +
      (protocol ? `; ${rows.length} ${protocol} shown on this page` : '') +
      (unreachable.length ? `; nodes that did not answer: ${unreachable.join(', ')}` : '');
    $('#conn-next').disabled = !next;
    $('#conn-first').disabled = !cursor;
  }

  async function kick(c) {
    const ok = await confirmDialog({
      title: `Kick connection ${c.id}?`,
      body: [`Token ${tokenLabel(c.token_id)}, ${c.protocol}, from ${c.remote_addr}${c.node ? ' on ' + c.node : ''}. It is closed with 4005.`,
        'The client may reconnect: to keep it out, disable or rotate its token.'],
      ok: 'Kick', danger: true,
    });
    if (!ok) return;
    try {
      const r = await api('DELETE', `/api/v1/connections/${c.id}` + (c.node ? `?node=${encodeURIComponent(c.node)}` : ''));
      report(`Kicked connection ${c.id} (closed with 4005) in ${r.ms} ms.`);
    } catch (err) {
      failed(`Kicking connection ${c.id}`, err);
    }
    await loadConnections(connView.cursors[connView.cursors.length - 1]);
  }

  // ---- cluster ----

  async function renderCluster() {
    const [nodes, health, stats] = await Promise.all([
      api('GET', '/api/v1/nodes').then((r) => r.data).catch((e) => e),
      api('GET', '/healthz').then(() => 'ok').catch((e) => e.message),
      api('GET', '/console/stats').then((r) => r.data).catch(() => null),
    ]);
    const dl = clear($('#cluster-health'));
    const fact = (k, v, bad) => dl.append(el('dt', { text: k }), el('dd', { class: bad ? 'bad' : '', text: v }));
    fact('Health (store of record answers)', health === 'ok' ? 'ok' : `unhealthy: ${health}`, health !== 'ok');
    fact('Mode', S.session.cluster ? 'cluster (Redis + Postgres)' : 'single node');
    if (stats) {
      if (stats.redis_up !== undefined) fact('Redis', stats.redis_up ? 'up' : 'down (the node refuses new connections past --revocation-staleness)', !stats.redis_up);
      if (S.session.cluster) {
        const n = stats.barrier_confirmed_total + stats.barrier_pending_total;
        fact('Revocation barrier (changes through this node)',
          `${stats.barrier_confirmed_total} of ${n} confirmed by every node in time` +
          (n ? `, mean ${Math.round((stats.barrier_seconds_sum / n) * 1000)} ms` : '') +
          (stats.barrier_pending_total ? `; ${stats.barrier_pending_total} answered 202 pending` : ''), stats.barrier_pending_total > 0);
      }
      fact('Store errors (this node)', String(stats.store_errors_total), stats.store_errors_total > 0);
      fact('Console sessions on this node', String(stats.console_sessions));
    }
    const tb = clear($('#node-table tbody'));
    if (nodes instanceof Error) {
      tb.append(el('tr', {}, el('td', { colspan: 6, class: 'bad', text: `The node list is unavailable: ${nodes.message}` })));
    } else {
      for (const n of nodes) {
        tb.append(el('tr', {},
          el('th', { scope: 'row', text: (n.id || '(this node)') + (n.id === S.session.node ? ' (this one)' : '') }),
          el('td', { text: n.connections }),
          el('td', { text: n.ws_addr || '' }),
          el('td', { text: n.admin_addr || '' }),
          el('td', { text: when(n.started_at) }),
          el('td', { text: when(n.expires_at) })));
      }
    }
    $('#cluster-self').textContent = S.session.node || 'this node';
  }

  // ---- live view ----

  function stopLive() {
    if (S.live) {
      clearTimeout(S.live.timer);
      S.live = null;
    }
  }

  async function renderLive() {
    if (S.live) return;
    S.live = { samples: [], paused: false, timer: 0 };
    $('#live-pause').setAttribute('aria-pressed', 'false');
    $('#live-pause').textContent = 'Pause';
    const tick = async () => {
      const live = S.live;
      if (!live) return;
      if (!live.paused) {
        try {
          const r = await api('GET', '/console/stats');
          live.samples.push(r.data);
          if (live.samples.length > LIVE_POINTS + 1) live.samples.shift();
          $('#live-cost').textContent = `last sample: ${r.data.cost_us} µs on the server, ${r.bytes} bytes, ${r.ms} ms round trip`;
          drawLive(live.samples);
        } catch (e) {
          $('#live-cost').textContent = `sampling failed: ${e.message}`;
        }
      }
      if (S.live === live) live.timer = setTimeout(tick, 1000);
    };
    tick();
  }

  // rates turns consecutive samples of a counter into per-second rates.
  function rates(samples, f) {
    const out = [];
    for (let i = 1; i < samples.length; i++) {
      const dt = (samples[i].at_ms - samples[i - 1].at_ms) / 1000;
      out.push(dt > 0 ? Math.max(0, (f(samples[i]) - f(samples[i - 1])) / dt) : 0);
    }
    return out;
  }

  function drawLive(samples) {
    const conns = samples.slice(1).map((s) => s.connections);
    const inR = rates(samples, (s) => s.messages_in_total);
    const outR = rates(samples, (s) => s.messages_out_total);
    const drops = rates(samples, (s) => s.dropped_total);
    const enforce = [];
    for (let i = 1; i < samples.length; i++) {
      const n = samples[i].enforcements_total - samples[i - 1].enforcements_total;
      enforce.push(n > 0 ? ((samples[i].enforce_seconds_sum - samples[i - 1].enforce_seconds_sum) / n) * 1000 : null);
    }
    const last = (a) => (a.length ? a[a.length - 1] : 0);
    const fmt = (v) => (v === null || v === undefined ? '–' : v >= 100 ? String(Math.round(v)) : v >= 10 ? v.toFixed(1) : v > 0 && v < 0.01 ? '<0.01' : String(Math.round(v * 100) / 100));
    chart($('#chart-conns'), [conns]);
    const byProto = samples.length ? Object.entries(samples[samples.length - 1].connections_by_protocol).filter(([, v]) => v > 0) : [];
    $('#now-conns').textContent = `now ${fmt(last(conns))}` + (byProto.length ? ` (${byProto.map(([k, v]) => `${k} ${v}`).join(', ')})` : '');
    chart($('#chart-msgs'), [inR, outR]);
    $('#now-msgs').textContent = `in ${fmt(last(inR))}/s · out ${fmt(last(outR))}/s`;
    chart($('#chart-drops'), [drops]);
    const cur = samples[samples.length - 1];
    $('#now-drops').textContent = `${fmt(last(drops))}/s · ${cur ? cur.dropped_total : 0} since start (rejected: ${cur ? cur.rejected_total : 0})`;
    chart($('#chart-enforce'), [enforce]);
    const seen = enforce.filter((v) => v !== null);
    const mean = cur && cur.enforcements_total ? (cur.enforce_seconds_sum / cur.enforcements_total) * 1000 : null;
    const lastMs = seen.length ? `${fmt(seen[seen.length - 1])} ms` : 'none in this minute';
    $('#now-enforce').textContent = `last change: ${lastMs} · mean ${fmt(mean)} ms over ${plural(cur ? cur.enforcements_total : 0, 'change')}; ${plural(cur ? cur.revocations_total : 0, 'session')} closed by enforcement`;
  }

  // chart draws series (arrays of numbers or null) as lines on a canvas.
  function chart(canvas, series) {
    // draw at the size shown, in device pixels (sharp text on any screen)
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || canvas.width;
    const h = Math.round((w * 140) / 420);
    if (canvas.width !== Math.round(w * ratio)) {
      canvas.width = Math.round(w * ratio);
      canvas.height = Math.round(h * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.setLineDash([]);
    const styles = getComputedStyle(canvas);
    ctx.clearRect(0, 0, w, h);
    let top = 1;
    for (const s of series) for (const v of s) if (v !== null && v > top) top = v;
    top = niceCeil(top);
    ctx.strokeStyle = styles.getPropertyValue('--grid').trim() || '#ddd';
    ctx.fillStyle = styles.getPropertyValue('--ink').trim() || '#333';
    ctx.lineWidth = 1;
    ctx.font = '11px sans-serif';
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(h - 14 - f * (h - 24)) + 0.5;
      ctx.beginPath();
      ctx.moveTo(34, y);
      ctx.lineTo(w, y);
      ctx.stroke();
      ctx.fillText(String(Math.round(top * f * 10) / 10), 2, y + 4);
    }
    ctx.fillText(`${LIVE_POINTS} s`, 34, h - 2);
    const colors = ['--c1', '--c2'].map((v) => styles.getPropertyValue(v).trim() || '#1f4e79');
    series.forEach((s, k) => {
      ctx.strokeStyle = colors[k % colors.length];
      ctx.lineWidth = 2;
      ctx.setLineDash(k ? [6, 4] : []); // a second series stays visible where it covers the first
      ctx.beginPath();
      let pen = false;
      s.forEach((v, i) => {
        if (v === null) {
          pen = false;
          return;
        }
        const x = 34 + ((w - 36) * (i + LIVE_POINTS - s.length)) / (LIVE_POINTS - 1);
        const y = h - 14 - (v / top) * (h - 24);
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
      });
      ctx.stroke();
    });
  }

  function niceCeil(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // ---- audit log ----

  const auditView = { cursors: [''], next: '' };

  async function renderAudit() {
    auditView.cursors = [''];
    await loadAudit('');
  }

  async function loadAudit(cursor) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    const action = $('#af-action').value.trim();
    const actor = $('#af-actor').value.trim();
    const token = $('#af-token').value.trim();
    if (action) q.set('action', action);
    if (actor) q.set('actor', actor);
    if (token) q.set('token_id', token);
    if (cursor) q.set('cursor', cursor);
    const r = (await api('GET', `/api/v1/audit?${q}`)).data;
    auditView.next = r.next_cursor;
    const tb = clear($('#audit-table tbody'));
    for (const e of r.entries) {
      tb.append(el('tr', {},
        el('td', { text: when(e.at) }),
        el('td', {}, el('code', { text: e.actor })),
        el('td', { text: e.source }),
        el('td', { text: e.action }),
        el('td', { text: e.target || '' }),
        el('td', { class: e.status >= 400 ? 'bad' : '', text: e.status }),
        el('td', { text: e.enforcement || '' }),
        el('td', {}, e.detail ? el('code', { class: 'detail', text: detailText(e.detail) }) : '')));
    }
    if (!r.entries.length) tb.append(el('tr', {}, el('td', { colspan: 8, class: 'muted', text: 'No entry.' })));
    $('#audit-next').disabled = !r.next_cursor;
    $('#audit-first').disabled = !cursor;
  }

  function detailText(d) {
    if (typeof d !== 'object' || d === null) return JSON.stringify(d);
    return Object.entries(d).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(' · ');
  }

  // ---- publish ----

  async function renderPublish() {
    $('#pub-topic').focus();
  }

  function base64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000) bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(bin);
  }

  async function publish(e) {
    e.preventDefault();
    const topic = $('#pub-topic').value.trim();
    const raw = $('#pub-message').value;
    const kind = document.querySelector('input[name="pub-kind"]:checked').value;
    const out = $('#publish-result');
    const body = { topic };
    if (kind === 'json') {
      try {
        body.message = JSON.parse(raw);
      } catch (err) {
        out.textContent = `The message is not valid JSON (${err.message}); choose “text” to send it as is.`;
        out.className = 'error';
        return;
      }
    } else {
      body.payload_base64 = base64(raw);
    }
    try {
      const r = await api('POST', '/api/v1/publish', body);
      out.className = '';
      out.textContent = `Published ${r.data.bytes} bytes on ${r.data.topic}: ${plural(r.data.local_deliveries, 'subscriber')} on this node` +
        (S.session.cluster ? ' (other nodes deliver to theirs)' : '') + `, in ${r.ms} ms.`;
    } catch (err) {
      out.className = 'error';
      out.textContent = `Publishing failed: ${err.message}`;
    }
  }

  // ---- wiring ----

  function debounce(f, ms) {
    let t = 0;
    return () => {
      clearTimeout(t);
      t = setTimeout(f, ms);
    };
  }

  document.addEventListener('DOMContentLoaded', async () => {
    $('#signin-form').addEventListener('submit', signIn);
    $('#logout').addEventListener('click', signOut);
    $('#token-create').addEventListener('submit', createToken);
    const tokensFailed = (err) => failed('Listing tokens', err);
    $('#token-search').addEventListener('input', debounce(() => { tokenView.page = 0; drawTokens().catch(tokensFailed); }, 120));
    $('#token-prev').addEventListener('click', () => { tokenView.page--; drawTokens().catch(tokensFailed); });
    $('#token-next').addEventListener('click', () => { tokenView.page++; drawTokens().catch(tokensFailed); });
    $('#secret-copy').addEventListener('click', copySecret);
    $('#secret-done').addEventListener('click', hideSecret);
    $('#token-edit').addEventListener('submit', saveToken);
    $('#token-toggle').addEventListener('click', () => toggleToken(grantView.token));
    $('#token-rotate').addEventListener('click', () => rotateToken(grantView.token));
    $('#token-delete').addEventListener('click', () => deleteToken(grantView.token));
    $('#grant-search').addEventListener('input', debounce(() => { grantView.page = 0; drawGrants(); }, 80));
    $('#grant-only').addEventListener('change', () => { grantView.page = 0; drawGrants(); });
    $('#grant-prev').addEventListener('click', () => { grantView.page--; drawGrants(); });
    $('#grant-next').addEventListener('click', () => { grantView.page++; drawGrants(); });
    $('#tag-create').addEventListener('submit', createTag);
    $('#tag-search').addEventListener('input', debounce(() => { tagView.page = 0; drawTags(); }, 80));
    $('#tag-prev').addEventListener('click', () => { tagView.page--; drawTags(); });
    $('#tag-next').addEventListener('click', () => { tagView.page++; drawTags(); });
    $('#conn-filter').addEventListener('submit', (e) => {
      e.preventDefault();
      connView.cursors = [''];
      loadConnections('').catch((err) => failed('Listing connections', err));
    });
    $('#conn-next').addEventListener('click', () => {
      connView.cursors.push(connView.next);
      loadConnections(connView.next).catch((err) => failed('Listing connections', err));
    });
    $('#conn-first').addEventListener('click', () => {
      connView.cursors = [''];
      loadConnections('').catch((err) => failed('Listing connections', err));
    });
    $('#cluster-refresh').addEventListener('click', () => renderCluster().catch((err) => failed('Refreshing', err)));
    $('#live-pause').addEventListener('click', (e) => {
      if (!S.live) return;
      S.live.paused = !S.live.paused;
      e.target.setAttribute('aria-pressed', String(S.live.paused));
      e.target.textContent = S.live.paused ? 'Resume' : 'Pause';
    });
    $('#audit-filter').addEventListener('submit', (e) => {
      e.preventDefault();
      auditView.cursors = [''];
      loadAudit('').catch((err) => failed('Reading the audit log', err));
    });
    $('#audit-next').addEventListener('click', () => {
      auditView.cursors.push(auditView.next);
      loadAudit(auditView.next).catch((err) => failed('Reading the audit log', err));
    });
    $('#audit-first').addEventListener('click', () => {
      auditView.cursors = [''];
      loadAudit('').catch((err) => failed('Reading the audit log', err));
    });
    $('#publish-form').addEventListener('submit', publish);
    window.addEventListener('hashchange', route);
    try {
      const r = await api('GET', '/console/session');
      signedIn(r.data);
    } catch (e) {
      signedOut('');
    }
  });
})();
