// The dashboard's logic (index.html). It uses nothing but herald.js.
import { subscribe, publish, action, presence } from '/herald.js';

const $ = (id) => document.getElementById(id);
const MAX_LOG = 500;      // entries kept in the log
const MAX_PAUSED = 5000;  // events held while paused; older ones are dropped
const CHART_POINTS = 120; // seconds of history in the chart

$('served').textContent = location.host;

// --- subscriptions: one per transport, on the same patterns ---------------
// The WebSocket asks for deltas: keyed events then travel as fossil deltas,
// which herald.js applies (the log shows full data); the panel "This
// dashboard's WebSocket" shows what that and compression save.

const subs = { sse: null, ws: null };
const counts = { sse: 0, ws: 0 };

function showState(transport, state) {
  const el = $('state-' + transport);
  el.className = 'badge ' + state;
  el.querySelector('b').textContent = state + (counts[transport] ? ' · ' + counts[transport] : '');
}

function startSubscriptions() {
  const patterns = $('patterns').value.split(',').map((s) => s.trim()).filter(Boolean);
  if (patterns.length === 0) {
    setMsg('sub-msg', 'give at least one pattern', true);
    return;
  }
  setMsg('sub-msg', '');
  for (const t of ['sse', 'ws']) {
    if (subs[t]) subs[t].close();
    counts[t] = 0;
    subs[t] = subscribe(patterns, (ev) => {
      counts[t]++;
      showState(t, subs[t].state);
      if ($('transport').value === t) addEvent(ev);
    }, {
      transport: t,
      delta: t === 'ws',
      onState: (s) => showState(t, s),
      onReset: (r) => { if ($('transport').value === t) addReset(r); },
      onError: (e) => { if (e.code) setMsg('sub-msg', t.toUpperCase() + ': ' + e.message, true); },
    });
  }
}

$('sub-form').addEventListener('submit', (e) => { e.preventDefault(); startSubscriptions(); });
$('transport').addEventListener('change', () => { $('log').textContent = ''; });

// --- presence: the members of one topic, live --------------------------------

const MAX_MEMBERS = 200; // members listed; the count covers all
let room = null;

function watchPresence() {
  if (room) room.close();
  room = null;
  $('members').textContent = '';
  $('pres-count').textContent = '';
  const topic = $('pres-topic').value.trim();
  if (!topic) {
    setMsg('pres-msg', 'give a topic', true);
    return;
  }
  setMsg('pres-msg', '');
  // The dashboard watches without joining: it is not one of the members.
  const mine = presence(topic, {
    onChange: () => { if (room === mine) drawMembers(mine); },
    onError: (e) => { if (room === mine) setMsg('pres-msg', (e.code ? e.code + ': ' : '') + e.message, true); },
  });
  room = mine;
  mine.ready.then(() => { if (room === mine) drawMembers(mine); }, (e) => {
    if (room === mine && e.code !== 'closed') setMsg('pres-msg', (e.code ? e.code + ': ' : '') + e.message, true);
  });
}

function drawMembers(r) {
  const n = r.clients;
  $('pres-count').textContent = n + (n === 1 ? ' member' : ' members') + ', ' + r.users + (r.users === 1 ? ' user' : ' users');
  const ul = $('members');
  ul.textContent = '';
  for (const m of [...r.members.values()].slice(0, MAX_MEMBERS)) {
    const li = document.createElement('li');
    li.dataset.client = m.client;
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = m.client + '  ';
    li.append(meta, m.user == null ? 'anonymous' : m.user, m.info == null ? '' : '  ' + JSON.stringify(m.info));
    ul.append(li);
  }
  if (n > MAX_MEMBERS) {
    const li = document.createElement('li');
    li.className = 'meta';
    li.textContent = '… and ' + (n - MAX_MEMBERS) + ' more';
    ul.append(li);
  }
}

$('pres-form').addEventListener('submit', (e) => { e.preventDefault(); watchPresence(); });

// --- the live log ----------------------------------------------------------

let paused = false;
let held = [];

function addEvent(ev) {
  if (paused) {
    held.push(ev);
    if (held.length > MAX_PAUSED) held.shift();
    $('log-count').textContent = held.length + ' held';
    return;
  }
  const li = document.createElement('li');
  const meta = document.createElement('span');
  meta.className = 'meta';
  meta.textContent = (ev.time || '').replace('T', ' ').replace(/\..*$/, '') + '  ' + ev.id + '  ' + ev.topic + '  ';
  const type = document.createElement('span');
  type.className = 'type';
  type.textContent = ev.type;
  li.append(meta, type, '\n' + JSON.stringify(ev.data));
  li.dataset.text = (ev.topic + ' ' + ev.type + ' ' + JSON.stringify(ev.data)).toLowerCase();
  applyFilter(li);
  $('log').prepend(li);
  while ($('log').children.length > MAX_LOG) $('log').lastChild.remove();
}

function addReset(r) {
  const li = document.createElement('li');
  li.className = 'reset';
  li.textContent = 'reset (' + r.reason + ') for ' + (r.topics || []).join(', ') + ': events in between could not be replayed';
  li.dataset.text = 'reset';
  $('log').prepend(li);
}

function applyFilter(li) {
  const f = $('filter').value.trim().toLowerCase();
  li.hidden = f !== '' && !li.dataset.text.includes(f);
}

$('filter').addEventListener('input', () => { for (const li of $('log').children) applyFilter(li); });
$('pause').addEventListener('click', () => {
  paused = !paused;
  $('pause').textContent = paused ? 'Resume' : 'Pause';
  if (!paused) {
    const h = held;
    held = [];
    $('log-count').textContent = '';
    for (const ev of h) addEvent(ev);
  }
});
$('clear').addEventListener('click', () => { $('log').textContent = ''; held = []; $('log-count').textContent = ''; });

// --- publish and actions ---------------------------------------------------

function setMsg(id, text, bad) {
  const el = $(id);
  el.textContent = text;
  el.className = 'msg' + (text ? (bad ? ' err' : ' ok') : '');
}

function parseJSON(id, msgId) {
  try {
    return { ok: true, value: JSON.parse($(id).value) };
  } catch (e) {
    setMsg(msgId, 'not valid JSON: ' + e.message, true);
    return { ok: false };
  }
}

$('pub-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const data = parseJSON('pub-data', 'pub-msg');
  if (!data.ok) return;
  try {
    const res = await publish($('pub-topic').value.trim(), $('pub-type').value.trim(), data.value);
    setMsg('pub-msg', 'published as ' + res.id);
  } catch (err) {
    setMsg('pub-msg', (err.code ? err.code + ': ' : '') + err.message, true);
  }
});

$('act-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const li = document.createElement('li');
  const payload = parseJSON('act-payload', 'pub-msg');
  if (!payload.ok) {
    li.className = 'failed';
    li.textContent = 'payload is not valid JSON';
    $('actions').prepend(li);
    return;
  }
  const type = $('act-type').value.trim();
  li.className = 'pending';
  li.textContent = type + ': pending';
  $('actions').prepend(li);
  while ($('actions').children.length > 50) $('actions').lastChild.remove();
  try {
    const ev = await action(type, $('act-topic').value.trim(), payload.value, { transport: $('transport').value });
    li.className = 'succeeded';
    li.textContent = type + ' ' + ev.data.action_id + ': succeeded → ' + JSON.stringify(ev.data.result);
  } catch (err) {
    li.className = 'failed';
    li.textContent = type + ': failed: ' + (err.code ? err.code + ': ' : '') + err.message;
  }
});

// --- server stats ----------------------------------------------------------

const series = { events: [], deliveries: [] };
let prev = null;

async function pollStats() {
  try {
    const res = await fetch('/v1/stats', { cache: 'no-store' });
    if (!res.ok) throw new Error('HTTP ' + res.status);
    const st = await res.json();
    const now = performance.now();
    const clients = (st.hub && st.hub.clients) || {};
    $('st-conns').textContent = (clients.sse || 0) + ' / ' + (clients.ws || 0);
    $('st-dropped').textContent = st.hub.slow_consumers;
    const a = st.actions || {};
    $('st-actions').textContent = a.queued === undefined ? 'off' : a.queued + ' / ' + a.running;
    $('st-failed').textContent = a.failed === undefined ? '–' : a.failed;
    if (prev) {
      const dt = (now - prev.t) / 1000;
      const ev = Math.max(0, (st.hub.published - prev.published) / dt);
      const dl = Math.max(0, (st.hub.delivered - prev.delivered) / dt);
      $('st-events').textContent = Math.round(ev);
      $('st-deliveries').textContent = Math.round(dl);
      push(series.events, ev);
      push(series.deliveries, dl);
      drawChart();
    }
    prev = { t: now, published: st.hub.published, delivered: st.hub.delivered };
    setMsg('stats-msg', '');
  } catch (err) {
    setMsg('stats-msg', 'stats unavailable: ' + err.message, true);
  }
}

function push(a, v) {
  a.push(v);
  if (a.length > CHART_POINTS) a.shift();
}

function drawChart() {
  const svg = $('chart');
  const max = Math.max(1, ...series.events, ...series.deliveries);
  const line = (a, color) => {
    const pts = a.map((v, i) => ((i + CHART_POINTS - a.length) * 600 / (CHART_POINTS - 1)).toFixed(1) + ',' + (86 - v / max * 80).toFixed(1));
    return '<polyline fill="none" stroke="' + color + '" stroke-width="1.5" points="' + pts.join(' ') + '"/>';
  };
  svg.innerHTML = '<line x1="0" y1="86" x2="600" y2="86" stroke="#dde1e8"/>' +
    line(series.deliveries, '#2f5fd0') + line(series.events, '#1f8f4e') +
    '<text x="4" y="12" font-size="10" fill="#687085">max ' + Math.round(max) + '/s · green events · blue deliveries</text>';
}

// --- this dashboard's WebSocket: bytes on the wire ---------------------------

async function pollWire() {
  const sub = subs.ws;
  if (!sub || sub.state !== 'open') return;
  try {
    const st = await sub.stats();
    if (sub !== subs.ws) return;
    $('ws-events').textContent = st.events;
    $('ws-per-event').textContent = st.events ? formatBytes(st.wire_bytes / st.events) : '–';
    $('ws-ratio').textContent = st.wire_bytes ? (st.bytes / st.wire_bytes).toFixed(1) + '×' : '–';
    setMsg('ws-msg', '');
  } catch (err) {
    if (sub !== subs.ws) return;
    $('ws-events').textContent = $('ws-per-event').textContent = $('ws-ratio').textContent = '–';
    if (err.code === 'unknown_op') {
      // A server without the stats op: it will not have it later either.
      clearInterval(wireTimer);
      $('ws-msg').className = 'msg';
      $('ws-msg').textContent = 'this server does not report connection stats (unknown_op)';
      return;
    }
    setMsg('ws-msg', 'connection stats unavailable: ' + (err.code ? err.code + ': ' : '') + err.message, true);
  }
}

function formatBytes(n) {
  return n < 1024 ? Math.round(n) + ' B' : (n / 1024).toFixed(1) + ' KiB';
}

startSubscriptions();
watchPresence();
pollStats();
setInterval(pollStats, 1000);
const wireTimer = setInterval(pollWire, 3000);
