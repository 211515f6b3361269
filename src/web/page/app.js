// The cms dashboard: plain JavaScript, no framework. It starts from the `hello` of
// /api/events (the sessions and the approvals waiting), then follows the host's
// events as they come; it asks the JSON API for the rest (a session's history, the
// costs) and to steer (send, interrupt, stop, allow, deny). Text from sessions is
// only ever put in the page as text (textContent), never as HTML.
'use strict';

const BUSY = new Set(['busy', 'retrying', 'waiting_approval']);
const LIVE = new Set(['starting', 'idle', 'busy', 'retrying', 'waiting_approval', 'paused']);
const TARGET_KEYS = ['command', 'file_path', 'notebook_path', 'path', 'url', 'pattern'];
const HISTORY_SHOWN = 30;

const S = {
  sessions: new Map(),  // name -> record (as /api/sessions gives it), with `_at` (ms)
  approvals: new Map(), // id -> approval
  turns: new Map(),     // name -> {running, text}: the running turn as the events told it
  selected: null,
  lastHistory: 0,       // the id of the last history entry shown for the selected session
  sentHere: new Set(),  // sessions sent a message from this page (their failures are toasted)
  askedHere: new Set(), // sessions whose running turn was asked from this page
  stuck: true,          // the output is scrolled to its end (and stays there as it grows)
  fetching: new Set(),
  es: null,
};

const $ = (sel) => document.querySelector(sel);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

// ----- talking to the host ------------------------------------------------------

/** A request to the API: its JSON, or an Error carrying the server's message. */
async function api(method, path, body) {
  const opts = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    throw new Error('the host does not answer (is `cms serve --http` still running?)');
  }
  if (r.status === 401) {
    location.href = '/login';
    throw new Error('logged out');
  }
  let data = null;
  try { data = await r.json(); } catch (e) { /* no JSON body */ }
  if (!r.ok) {
    const err = new Error((data && data.error) || `${method} ${path}: ${r.status}`);
    err.status = r.status;
    throw err;
  }
  return data;
}

function connect() {
  if (S.es) S.es.close();
  const es = new EventSource('/api/events');
  S.es = es;
  const start = (ev) => {
    setLive(true);
    const snap = JSON.parse(ev.data);
    applySnapshot(snap);
    refreshCosts();
    if (S.selected) loadDetail(S.selected);
  };
  es.addEventListener('hello', start);
  es.addEventListener('resync', start);
  es.onmessage = (ev) => {
    let e;
    try { e = JSON.parse(ev.data); } catch (_) { return; }
    onEvent(e);
  };
  es.onerror = () => {
    setLive(false);
    if (es.readyState === EventSource.CLOSED) {
      // Refused (logged out, or the host went away): find out which, then try again.
      api('GET', '/api/sessions').then(() => setTimeout(connect, 1000),
        () => setTimeout(connect, 3000));
    }
  };
}

function setLive(on) {
  const l = $('#live');
  l.textContent = on ? 'live' : 'reconnecting…';
  l.className = 'live ' + (on ? 'on' : 'off');
}

// ----- the state ------------------------------------------------------------------

function at(rec) {
  const t = Date.parse(rec.updated_at);
  return Number.isNaN(t) ? 0 : t;
}

function applySnapshot(snap) {
  const seen = new Set();
  for (const rec of snap.sessions || []) {
    const old = S.sessions.get(rec.name);
    rec._at = Math.max(at(rec), old ? old._at : 0);
    S.sessions.set(rec.name, rec);
    seen.add(rec.name);
  }
  for (const name of [...S.sessions.keys()]) if (!seen.has(name)) S.sessions.delete(name);
  S.approvals.clear();
  for (const a of snap.approvals || []) S.approvals.set(a.id, a);
  renderSessions();
  renderApprovals();
  if (S.selected && !S.sessions.has(S.selected)) select(null);
}

function upsert(rec) {
  const old = S.sessions.get(rec.name);
  rec._at = Math.max(at(rec), old ? old._at : 0);
  S.sessions.set(rec.name, rec);
  renderSessions();
  if (rec.name === S.selected) renderHead();
}

/** Read one session again (a new one, or after its turn ended). */
function fetchSession(name) {
  if (S.fetching.has(name)) return;
  S.fetching.add(name);
  setTimeout(() => {
    api('GET', `/api/sessions/${encodeURIComponent(name)}`)
      .then((d) => upsert(d.session))
      .catch((e) => { if (e.status === 404) { S.sessions.delete(name); renderSessions(); } })
      .finally(() => S.fetching.delete(name));
  }, 150);
}

function turnOf(name) {
  let t = S.turns.get(name);
  if (!t) { t = { running: false, text: '' }; S.turns.set(name, t); }
  return t;
}

/** One of the host's events. */
function onEvent(e) {
  const name = e.session;
  const rec = S.sessions.get(name);
  if (rec) rec._at = Math.max(rec._at, e.at_ms || 0);
  else fetchSession(name);
  const here = name === S.selected;
  switch (e.event) {
    case 'state': {
      const t = turnOf(name);
      const busy = BUSY.has(e.state);
      if (busy && !t.running) {
        t.text = '';
        if (here) closeBubble();
      }
      t.running = busy;
      if (rec) rec.state = e.state;
      if (!busy && here) closeBubble();
      break;
    }
    case 'text': {
      const t = turnOf(name);
      const piece = joined(t.text, e.text);
      t.text += piece;
      if (here) appendText(bubble ? joined(bubble.textContent, e.text) : e.text);
      break;
    }
    case 'tool_use':
      if (here) { closeBubble(); line('tool', `${e.name} ${targetOf(e.input) || ''}`.trim()); }
      break;
    case 'permission':
      if (here && !e.allowed) line('bad', `✗ ${e.tool} denied${e.reason ? ': ' + e.reason : ''}`);
      break;
    case 'approval':
      S.approvals.set(e.id, {
        session: name, id: e.id, tool: e.tool, input: e.input, reason: e.reason,
        asked_at_ms: e.at_ms, deadline_ms: e.deadline_ms, target: targetOf(e.input),
      });
      renderApprovals();
      if (here) { closeBubble(); line('warn', `⏸ ${e.tool} ${targetOf(e.input) || ''} waits for a decision`); }
      break;
    case 'decided':
      S.approvals.delete(e.id);
      renderApprovals();
      if (here) {
        line(e.allowed ? 'good' : 'bad',
          `${e.allowed ? '✓ approved' : '✗ denied'} by ${e.by}${e.reason ? ': ' + e.reason : ''}`);
      }
      break;
    case 'result':
      if (rec) rec.total_cost_usd = e.session_cost_usd;
      if (here) finishBubble(e);
      fetchSession(name);
      refreshCostsSoon();
      // A turn asked elsewhere (the CLI, MCP): the history holds its message.
      if (here && !S.askedHere.delete(name)) setTimeout(() => loadHistoryIfNew(name), 400);
      break;
    case 'retry':
      if (here) line('warn', `API retry ${e.attempt}/${e.max_retries}${e.error_status ? ' (status ' + e.error_status + ')' : ''}`);
      break;
    case 'queued':
      if (here) line('warn', `queued: place ${e.position} for a free slot`);
      break;
    case 'waiting':
      if (here) line('warn', `waits for another cms process to finish with it (place ${e.position})`);
      break;
    case 'violation':
      if (here) line('bad', `safety rule ${e.rule}: ${e.message} (${e.action})`);
      break;
    case 'error':
      if (here) { closeBubble(); line('bad', e.message); }
      break;
    case 'send_failed': {
      // The host may have said why already (an `error` event): not twice.
      const said = here && [...$('#output').children].slice(-4)
        .some((c) => c.classList.contains('bad') && e.message.endsWith(c.textContent));
      if (here && !said) { closeBubble(); line('bad', e.message); }
      if (here || S.sentHere.has(name)) toast(`${name}: ${e.message}`, 'bad');
      break;
    }
    default:
      break;
  }
  renderSessions();
  if (here) renderHead();
}

/** A text event as it continues `before`: the host sends each text block whole (claude
 *  runs without --include-partial-messages), so blocks go on separate lines. */
function joined(before, text) {
  return before && !before.endsWith('\n') && !text.startsWith('\n') ? '\n' + text : text;
}

function targetOf(input) {
  if (!input || typeof input !== 'object') return null;
  for (const k of TARGET_KEYS) if (typeof input[k] === 'string') return input[k];
  return null;
}

// ----- sessions -------------------------------------------------------------------

function money(x) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '–';
  if (x === 0) return '$0.00';
  return '$' + x.toFixed(Math.abs(x) < 1 ? 4 : 2);
}

function ago(ms) {
  if (!ms) return '';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

let renderQueued = false;
/** Draw the list (at most once a frame: streaming text brings many events). */
function renderSessions() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; drawSessions(); });
}

function drawSessions() {
  const box = $('#sessions');
  const recs = [...S.sessions.values()].sort((a, b) => b._at - a._at || a.name.localeCompare(b.name));
  const have = new Map([...box.children].map((c) => [c.dataset.session, c]));
  recs.forEach((rec, i) => {
    let item = have.get(rec.name);
    if (!item) {
      item = el('div', 'session');
      item.dataset.session = rec.name;
      item.setAttribute('role', 'listitem');
      item.tabIndex = 0;
      const top = el('div', 's-top');
      top.append(el('span', 's-name', rec.name), el('span', 'state'));
      const sub = el('div', 's-sub');
      sub.append(el('span', 's-model'), el('span', 's-turns'), el('span', 'cost'), el('span', 's-ago'));
      item.append(top, sub);
      item.addEventListener('click', () => select(rec.name));
      item.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); select(rec.name); } });
    }
    have.delete(rec.name);
    const state = item.querySelector('.state');
    if (state.textContent !== rec.state) { state.textContent = rec.state; state.className = 'state st-' + rec.state; }
    setText(item.querySelector('.s-model'), rec.model || 'default model');
    setText(item.querySelector('.s-turns'), `${rec.total_turns} turn${rec.total_turns === 1 ? '' : 's'}`);
    setText(item.querySelector('.cost'), money(rec.total_cost_usd));
    setText(item.querySelector('.s-ago'), ago(rec._at));
    item.title = rec.last_error ? `last error: ${rec.last_error}` : '';
    item.classList.toggle('selected', rec.name === S.selected);
    if (box.children[i] !== item) box.insertBefore(item, box.children[i] || null);
  });
  for (const gone of have.values()) gone.remove();
  $('#no-sessions').hidden = recs.length > 0;
  const live = recs.filter((r) => LIVE.has(r.state)).length;
  setText($('#session-count'), recs.length ? `${recs.length} · ${live} live` : '');
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

// ----- the selected session -------------------------------------------------------

function select(name) {
  S.selected = name;
  S.lastHistory = 0;
  history.replaceState(null, '', name ? '#' + encodeURIComponent(name) : location.pathname);
  $('#output').replaceChildren();
  bubble = null;
  renderSessions();
  renderHead();
  if (name) {
    loadDetail(name);
    if (window.matchMedia('(max-width: 700px)').matches) $('.detail').scrollIntoView({ behavior: 'smooth' });
  }
}

function renderHead() {
  const rec = S.sessions.get(S.selected);
  const name = S.selected;
  setText($('#sel-name'), name || 'No session selected');
  const meta = $('#sel-meta');
  if (!rec) {
    setText(meta, name ? '' : 'Pick a session to see what it says.');
  } else {
    const parts = [rec.state, rec.model || 'default model', money(rec.total_cost_usd),
      `${rec.total_turns} turn${rec.total_turns === 1 ? '' : 's'}`, rec.cwd || rec.work_dir];
    setText(meta, parts.filter(Boolean).join(' · '));
  }
  const state = rec ? rec.state : null;
  $('#interrupt').disabled = !state || !BUSY.has(state);
  $('#stop').disabled = !state || !LIVE.has(state);
  $('#send').disabled = !name;
  $('#message').disabled = !name;
}

async function loadDetail(name) {
  try {
    const [d, h] = await Promise.all([
      api('GET', `/api/sessions/${encodeURIComponent(name)}`),
      api('GET', `/api/sessions/${encodeURIComponent(name)}/history?limit=${HISTORY_SHOWN}`),
    ]);
    if (S.selected !== name) return;
    upsert(d.session);
    drawHistory(h.history);
    if (d.turn_text !== null && d.turn_text !== undefined) {
      const t = turnOf(name);
      t.running = true;
      t.text = d.turn_text;
      appendText(d.turn_text);
    } else if (!h.history.length && d.last_output) {
      const b = el('div', 'msg assistant', d.last_output);
      $('#output').append(b);
    }
    for (const a of d.approvals || []) line('warn', `⏸ ${a.summary} waits for a decision`);
    scrollDown(true);
  } catch (e) {
    if (S.selected === name) {
      if (e.status === 404) { S.sessions.delete(name); renderSessions(); select(null); }
      toast(e.message, 'bad');
    }
  }
}

function drawHistory(items) {
  const out = $('#output');
  out.replaceChildren();
  bubble = null;
  if (!items.length) out.append(el('div', 'line', 'No messages yet.'));
  for (const i of items) {
    const u = el('div', 'msg user', i.message);
    u.append(el('span', 'meta', `${i.kind} · ${new Date(i.at).toLocaleString()}`));
    const a = el('div', 'msg assistant' + (i.is_error ? ' error' : ''),
      i.response || (i.error ? '' : '(no text)'));
    if (i.error) a.append(el('span', 'meta', `error: ${i.error}`));
    const tools = i.tools_used && i.tools_used.length ? ` · ${i.tools_used.join(', ')}` : '';
    a.append(el('span', 'meta', `${money(i.cost_usd)} · ${i.num_turns} turn${i.num_turns === 1 ? '' : 's'} · ${(i.duration_ms / 1000).toFixed(1)}s${tools}`));
    out.append(u, a);
    S.lastHistory = Math.max(S.lastHistory, i.id);
  }
}

/** After a turn ended: show the history again once it holds the turn. */
async function loadHistoryIfNew(name, tries = 0) {
  if (S.selected !== name || turnOf(name).running) return;
  try {
    const h = await api('GET', `/api/sessions/${encodeURIComponent(name)}/history?limit=${HISTORY_SHOWN}`);
    const last = h.history.length ? h.history[h.history.length - 1].id : 0;
    if (S.selected !== name || turnOf(name).running) return;
    if (last > S.lastHistory) { drawHistory(h.history); scrollDown(true); }
    else if (tries < 3) setTimeout(() => loadHistoryIfNew(name, tries + 1), 600);
  } catch (_) { /* the streamed text stays */ }
}

// The bubble the running turn's text goes into.
let bubble = null;

function appendText(text) {
  const out = $('#output');
  const stick = nearBottom();
  if (!bubble) {
    const empty = out.querySelector('.line:only-child');
    if (empty && empty.textContent === 'No messages yet.') empty.remove();
    bubble = el('div', 'msg assistant streaming');
    bubble.append(document.createTextNode(''));
    out.append(bubble);
  }
  bubble.firstChild.appendData(text);
  scrollDown(stick);
}

function closeBubble() {
  if (bubble) bubble.classList.remove('streaming');
  bubble = null;
}

function finishBubble(r) {
  const stick = nearBottom();
  const had = !!bubble;
  if (!bubble) {
    // A turn without text (only tools): say how it ended.
    bubble = el('div', 'msg assistant', r.is_error ? `(no answer: ${r.subtype})` : '(done)');
    $('#output').append(bubble);
  }
  if (r.is_error) bubble.classList.add('error');
  bubble.append(el('span', 'meta', `${r.is_error && had ? r.subtype + ' · ' : ''}${money(r.cost_usd)} · ${r.num_turns} turn${r.num_turns === 1 ? '' : 's'}`));
  closeBubble();
  scrollDown(stick);
}

function line(kind, text) {
  const stick = nearBottom();
  $('#output').append(el('div', 'line ' + kind, text));
  scrollDown(stick);
}

function nearBottom() {
  const o = $('#output');
  return o.scrollHeight - o.scrollTop - o.clientHeight < 60;
}

function scrollDown(stick) {
  if (stick) { const o = $('#output'); o.scrollTop = o.scrollHeight; S.stuck = true; }
}

async function send(ev) {
  ev.preventDefault();
  const name = S.selected;
  const box = $('#message');
  const message = box.value;
  if (!name) return;
  if (!message.trim()) { toast('Write a message first.'); box.focus(); return; }
  $('#send').disabled = true;
  try {
    await api('POST', `/api/sessions/${encodeURIComponent(name)}/send`, { message });
    S.sentHere.add(name);
    S.askedHere.add(name);
    box.value = '';
    if (S.selected === name) {
      closeBubble();
      const empty = $('#output .line:only-child');
      if (empty && empty.textContent === 'No messages yet.') empty.remove();
      const u = el('div', 'msg user', message);
      u.append(el('span', 'meta', 'sent from here · ' + new Date().toLocaleTimeString()));
      $('#output').append(u);
      scrollDown(true);
    }
  } catch (e) {
    toast(e.message, 'bad');
  } finally {
    renderHead();
  }
}

async function act(what) {
  const name = S.selected;
  if (!name) return;
  const button = $('#' + what);
  button.disabled = true;
  try {
    const d = await api('POST', `/api/sessions/${encodeURIComponent(name)}/${what}`);
    if (d && d.session && typeof d.session === 'object') upsert(d.session);
    toast(what === 'stop' ? `${name} stopped (a new message resumes it)` : `${name}: turn interrupted`);
  } catch (e) {
    toast(e.message, 'bad');
  } finally {
    renderHead();
  }
}

// ----- approvals ------------------------------------------------------------------

function renderApprovals() {
  const box = $('#approvals');
  const all = [...S.approvals.values()].sort((a, b) => (a.asked_at_ms || 0) - (b.asked_at_ms || 0));
  const have = new Map([...box.children].map((c) => [c.dataset.approval, c]));
  for (const a of all) {
    let item = have.get(a.id);
    have.delete(a.id);
    if (!item) item = approvalItem(a);
    box.append(item);
  }
  for (const gone of have.values()) gone.remove();
  $('#approvals-panel').hidden = all.length === 0;
  setText($('#approval-count'), String(all.length));
  document.title = all.length ? `(${all.length}) cms` : 'cms';
  tickDeadlines();
}

function approvalItem(a) {
  const item = el('div', 'approval');
  item.dataset.approval = a.id;
  const head = el('div', 'a-head');
  const who = el('span', 'a-session', a.session);
  who.title = 'Show this session';
  who.addEventListener('click', () => select(a.session));
  const deadline = el('span', 'a-deadline');
  deadline.dataset.deadline = a.deadline_ms || 0;
  head.append(who, el('span', 'a-tool', a.tool), deadline);
  item.append(head);
  const target = a.target || targetOf(a.input);
  if (target) item.append(el('div', 'a-target', target));
  if (a.reason) item.append(el('div', 'a-reason', 'why asked: ' + a.reason));
  const details = el('details');
  details.append(el('summary', null, 'full input'), el('pre', null, JSON.stringify(a.input, null, 2)));
  item.append(details);
  const actions = el('div', 'a-actions');
  const allow = el('button', 'allow', 'Allow');
  allow.type = 'button';
  const reason = el('input', 'reason');
  reason.placeholder = 'Why deny? (optional)';
  reason.setAttribute('aria-label', 'Reason for a denial');
  const deny = el('button', 'deny', 'Deny');
  deny.type = 'button';
  allow.addEventListener('click', () => decide(a, 'allow', null, item));
  deny.addEventListener('click', () => decide(a, 'deny', reason.value, item));
  reason.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') decide(a, 'deny', reason.value, item); });
  actions.append(allow, reason, deny);
  item.append(actions);
  return item;
}

async function decide(a, verdict, reason, item) {
  const buttons = item.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    const body = { verdict, session: a.session };
    if (reason && reason.trim()) body.reason = reason.trim();
    await api('POST', `/api/approvals/${encodeURIComponent(a.id)}`, body);
    S.approvals.delete(a.id);
    renderApprovals();
    toast(`${verdict === 'allow' ? 'Allowed' : 'Denied'}: ${a.tool} ${a.target || ''} in ${a.session}`);
  } catch (e) {
    if (e.status === 404) { S.approvals.delete(a.id); renderApprovals(); }
    else buttons.forEach((b) => { b.disabled = false; });
    toast(e.message, 'bad');
  }
}

function tickDeadlines() {
  for (const d of document.querySelectorAll('.a-deadline')) {
    const ms = Number(d.dataset.deadline) - Date.now();
    if (!Number(d.dataset.deadline)) { setText(d, ''); continue; }
    const s = Math.max(0, Math.round(ms / 1000));
    setText(d, `denied in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')} unless decided`);
  }
}

// ----- costs ----------------------------------------------------------------------

let costTimer = null;
function refreshCostsSoon() {
  clearTimeout(costTimer);
  costTimer = setTimeout(refreshCosts, 400);
}

async function refreshCosts() {
  let c;
  try { c = await api('GET', '/api/costs?days=7'); } catch (e) { return; }
  const today = c.days.length ? c.days[0].cost_usd : 0;
  setText($('#cost-today'), money(today));
  setText($('#cost-total'), money(c.total_usd));
  setText($('#top-today'), money(today));
  setText($('#top-total'), money(c.total_usd));
  setText($('#cost-note'), `${c.messages} answered message${c.messages === 1 ? '' : 's'}`);
  const max = Math.max(...c.days.map((d) => d.cost_usd), 0);
  const rows = c.days.map((d, i) => {
    const row = el('div', 'day' + (i === 0 ? ' today' : ''));
    row.dataset.day = d.day;
    const label = i === 0 ? 'today'
      : new Date(d.day + 'T12:00:00').toLocaleDateString(undefined, { weekday: 'short', day: 'numeric' });
    const bar = el('span', 'bar');
    const fill = el('i');
    fill.style.width = max > 0 ? `${(100 * d.cost_usd) / max}%` : '0';
    bar.append(fill);
    row.title = `${d.day}: ${money(d.cost_usd)}, ${d.messages} message${d.messages === 1 ? '' : 's'}`;
    row.append(el('span', 'd-label', label), bar, el('span', 'd-cost', money(d.cost_usd)));
    return row;
  });
  $('#cost-days').replaceChildren(...rows);
  const top = c.sessions.filter((s) => s.cost_usd > 0).slice(0, 5).map((s) => {
    const li = el('li');
    li.append(el('span', null, s.name), el('span', null, money(s.cost_usd)));
    return li;
  });
  if (!top.length) top.push(el('li', 'muted', 'nothing spent yet'));
  $('#cost-sessions').replaceChildren(...top);
}

// ----- small things ---------------------------------------------------------------

function toast(text, kind) {
  const t = el('div', 'toast' + (kind ? ' ' + kind : ''), text);
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'bad' ? 8000 : 3500);
}

function init() {
  $('#composer').addEventListener('submit', send);
  $('#message').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); $('#composer').requestSubmit(); }
  });
  $('#interrupt').addEventListener('click', () => act('interrupt'));
  // The output keeps to its end when it was there and the page around it changes
  // (the approvals panel comes or goes, the window is resized).
  const out = $('#output');
  out.addEventListener('scroll', () => { S.stuck = nearBottom(); });
  new ResizeObserver(() => { if (S.stuck) out.scrollTop = out.scrollHeight; }).observe(out);
  $('#stop').addEventListener('click', () => act('stop'));
  let wanted = '';
  try { wanted = decodeURIComponent(location.hash.slice(1)); } catch (_) { /* a bad link: no session */ }
  if (wanted) S.selected = wanted;
  renderHead();
  connect();
  setInterval(() => { renderSessions(); tickDeadlines(); }, 1000);
  // Sessions deleted elsewhere send no event: look again now and then.
  setInterval(() => {
    if (document.hidden) return;
    api('GET', '/api/sessions').then((d) => applySnapshot({
      sessions: d.sessions, approvals: [...S.approvals.values()],
    })).catch(() => {});
  }, 30000);
}

document.addEventListener('DOMContentLoaded', init);
