// herald.js: the browser client of Herald's wire protocol v1.
//
//   import { subscribe, publish, action, presence } from '/herald.js';
//
//   const sub = subscribe(['orders.*'], (event) => render(event), {
//     transport: 'sse',                     // or 'ws'
//     onState: (state) => showStatus(state), // connecting | open | reconnecting | closed
//     onReset: (reset) => reloadList(),      // history could not be replayed
//     rewind: 20,                           // start with the newest 20 retained events
//   });
//   // Keyed topics: start with the state (each key's latest event), then live.
//   subscribe(['doc.7'], apply, { state: true, onSynced: (s) => showReady(s.id) });
//   await sub.ready;                        // the server has the subscription
//   // Tokens that expire: a function, asked on every connect and before exp
//   // (a WebSocket refreshes in place, an SSE stream reopens and resumes).
//   subscribe(['orders.*'], render, { token: async () => (await fetch('/token')).text() });
//   // Keyed topics that change a little at a time: the server sends fossil
//   // deltas, herald.js applies them (onEvent sees full data); at most one
//   // event per topic and key every 250 ms, the latest.
//   const live = subscribe(['dash.*'], draw, { transport: 'ws', delta: true, conflate: '250ms' });
//   const st = await live.stats();          // {events, wire_bytes, bytes} of this WebSocket
//   const room = presence('rooms.7', { join: true, info: { name: 'Ann' }, onChange: (m) => draw(m) });
//   await publish('orders.42', 'order.created', { total: 12.5 });
//   const result = await action('todo.delete', 'todos', { id: 7 }); // the action.succeeded event
//   sub.close();
//
// No dependencies and no build step. See docs/browser.md.
//
// Deltas: with delta: true the server may send a keyed event as a fossil
// delta against the data of the previous event of the same topic and key on
// the connection. herald.js keeps the exact JSON text of each key's latest
// data (forgotten on a reset and on every reconnect, after which the server
// sends full data again) and applies the delta itself, so onEvent always gets
// the full, parsed data and never a delta. A delta that does not apply (no
// base, a checksum that does not match) is never shown: herald.js reports it
// to onError and reconnects, resuming after the last event delivered.

const DEFAULTS = {
  baseURL: '',        // '' = the page's own origin
  token: '',          // a JWT, sent as Authorization (HTTP) or access_token (WebSocket), or a function that returns one
  credentials: 'same-origin', // fetch's: 'include' sends cookies to a Herald on another origin (--auth-upstream)
  transport: 'sse',
  minBackoff: 500,    // ms before the first reconnect
  maxBackoff: 15000,  // ms, the most a reconnect waits
  actionTimeout: 30000,
};

/** The error a Herald request rejects with: the SPEC's {code, message} and the HTTP status. */
export class HeraldError extends Error {
  constructor(code, message, status) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.status = status;
  }
}

let settings = { ...DEFAULTS };

/** configure sets defaults for every later call: baseURL, token, credentials, transport, backoff, actionTimeout. */
export function configure(options) {
  settings = { ...settings, ...options };
}

function opts(o) {
  return { ...settings, ...(o || {}) };
}

function base(o) {
  return String(o.baseURL || '').replace(/\/+$/, '');
}

// backoff returns the wait before reconnect attempt n (0-based): exponential
// with full jitter, so that a restarted server is not hit by every tab at once.
function backoff(o, n) {
  const cap = Math.min(o.maxBackoff, o.minBackoff * 2 ** Math.min(n, 16));
  return o.minBackoff / 2 + Math.random() * (cap - o.minBackoff / 2);
}

// Token lifecycle. A token may be a string or a function (sync or async)
// that returns one. herald.js reads the function's token's exp (the JWT
// payload, not verified: the server does that) and asks the function again
// before it comes: a subscription on every connect and some time before
// exp, publish, action and presence when the token they last got is that
// close to its exp.

// The most a token may be: far above any real JWT, and bounded so that a
// broken token function cannot make herald.js decode megabytes.
const MAX_TOKEN = 64 << 10;
// The least wait before asking the function again, whatever exp says: a
// function that returns tokens already expired must not be called in a loop.
const MIN_REFRESH = 1000;
// The longest a token function may take: one that never answers must not
// leave a subscription connecting for ever (it is retried like a failure).
const TOKEN_TIMEOUT = 30000;

// jwtTimes returns the exp and iat (seconds) of a JWT's payload, or null for
// a token without a numeric exp.
function jwtTimes(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3 || parts[1].length > MAX_TOKEN) return null;
  try {
    let b = parts[1].replace(/-/g, '+').replace(/_/g, '/');
    while (b.length % 4) b += '=';
    const bin = atob(b);
    const p = JSON.parse(strictUTF8.decode(Uint8Array.from(bin, (c) => c.charCodeAt(0))));
    if (!p || typeof p.exp !== 'number' || !Number.isFinite(p.exp)) return null;
    return { exp: p.exp, iat: typeof p.iat === 'number' && Number.isFinite(p.iat) ? p.iat : undefined };
  } catch (e) {
    return null;
  }
}

/**
 * refreshDelay returns the ms to wait before asking for a new token to
 * replace token, or null when it has no exp (it is never refreshed, only
 * asked for again on a reconnect). It is 80% of the time left or 30 s before
 * exp, whichever is earlier, but not before half the time left (a token of
 * a few seconds is renewed at half its life, not at once), never under
 * MIN_REFRESH and never over MAX_TIMER. The time left is exp - now by the
 * page's clock; with iat, a clock so far off that this is negative or over
 * the token's lifetime counts the lifetime instead (a fresh token's time
 * left).
 */
export function refreshDelay(token, now = Date.now()) {
  const t = jwtTimes(token);
  if (!t) return null;
  let left = t.exp * 1000 - now;
  if (t.iat !== undefined && t.iat < t.exp) {
    const life = (t.exp - t.iat) * 1000;
    if (left <= 0 || left > life) left = life;
  }
  const d = Math.max(MIN_REFRESH, Math.max(Math.min(left * 0.8, left - 30000), left / 2));
  // setTimeout takes a longer delay for 0.
  return Math.min(d, MAX_TIMER);
}

// The longest delay setTimeout keeps (about 24.8 days).
const MAX_TIMER = 2 ** 31 - 1;

// fetchToken resolves o.token: a string as it is, a function's token. A
// function that returns no token (empty, not a string) means the page has
// none to give: that is a HeraldError with code no_token, which stops a
// subscription rather than being retried.
async function fetchToken(o) {
  const t = o.token;
  if (typeof t !== 'function') return t || '';
  let v;
  try {
    v = await withTimeout(Promise.resolve().then(t), TOKEN_TIMEOUT, 'the token function did not answer within ' + TOKEN_TIMEOUT + ' ms');
  } catch (e) {
    throw tokenError(e);
  }
  if (typeof v !== 'string' || v === '') {
    throw new HeraldError('no_token', 'the token function returned no token', 0);
  }
  if (v.length > MAX_TOKEN) throw new HeraldError('no_token', 'the token function returned ' + v.length + ' characters', 0);
  return v;
}

// The latest token of each token function, for publish, action and
// presence: fn -> {token (a promise), until (ms)}.
const tokenCache = new WeakMap();

// requestToken is the token of a request: a string as it is; a function's
// token it returned earlier, until its refresh time, else a new one.
function requestToken(o) {
  const fn = o.token;
  if (typeof fn !== 'function') return Promise.resolve(fn || '');
  const c = tokenCache.get(fn);
  if (c && Date.now() < c.until) return c.token;
  const entry = { token: fetchToken(o), until: Infinity };
  tokenCache.set(fn, entry);
  entry.token.then((tok) => {
    const d = refreshDelay(tok);
    // A token without exp is asked for again each time.
    entry.until = d === null ? 0 : Date.now() + d;
  }, () => { if (tokenCache.get(fn) === entry) tokenCache.delete(fn); });
  return entry.token;
}

// tokenKey names a token option in a map key: a function by its identity.
const tokenFnIds = new WeakMap();
let tokenFnSeq = 0;
function tokenKey(t) {
  if (typeof t !== 'function') return 's:' + (t || '');
  if (!tokenFnIds.has(t)) tokenFnIds.set(t, ++tokenFnSeq);
  return 'f:' + tokenFnIds.get(t);
}

/**
 * subscribe opens a subscription to topic patterns and calls onEvent with each
 * event ({id, topic, type, data, time}), in order and at most once. It
 * reconnects by itself, with backoff and jitter, and resumes after the last
 * event it delivered, so a dropped connection loses nothing the server still
 * holds. When history could not be replayed it calls onReset with
 * {reason, topics, id} and goes on live.
 *
 * Options: transport ('sse' | 'ws'), since (a cursor to start after), rewind
 * (0..1000: without a cursor, start with the newest that many retained
 * events of the patterns), state (true: start with the state of every
 * matching keyed topic, each key's latest event, delivered to onEvent like
 * any event; then onSynced({id, topics}) and the events after it; rewind is
 * then ignored), token (a JWT, or a function returning one or a promise of
 * one, asked on every connect and before the token expires: see "Tokens"
 * below), baseURL, onState(state), onReset(reset), onSynced(synced),
 * onError(error), onDisconnected({code, reason}) (the server disconnected
 * the connection for good: it is not reconnected), onUnsubscribed({topics})
 * (the server removed these patterns: they are dropped here too). Once an
 * event was delivered, a reconnect resumes after it and rewinds nothing; with state, a reconnect sends the
 * state again only after a reset (the reset, then the state, then
 * onSynced again), so folding every event by key keeps the state exact if
 * the page starts over in onReset: a key removed while the events could
 * not be replayed is only missing from the new state.
 * Deltas: delta (true: keyed events may come as fossil deltas, applied here
 * so onEvent still gets full data; see the header comment), conflate (a Go
 * duration such as '250ms', 50ms..60s: at most one event per topic and key
 * per interval, the latest).
 * Presence: presence (true: the connection is a member
 * of each topic, which must be exact), info (the member's info, an object of
 * at most 1 KiB, WebSocket only; over SSE the token's herald.info claim is
 * the info), presenceEvents (true: also deliver the topics' herald.join and
 * herald.leave events, whose data is the member {client, user, info}).
 *
 * Returns {close(), ready, stats(), topics, get state(), get lastId(), get
 * client()}: topics are the patterns it holds, client is the connection's ID (a reconnect is a new connection, with a new ID).
 * stats() resolves, over WebSocket, with the server's count for the current
 * connection: {events, wire_bytes, bytes}, the event frames written to it,
 * their bytes on the wire (compressed, as deltas) and what they would have
 * been uncompressed with full data; over SSE with null. ready is a promise that
 * resolves once the server has confirmed the subscription (the WebSocket's ok
 * to subscribe, the SSE stream's response): an event published after that is
 * delivered. It rejects with the HeraldError when the server refuses the
 * subscription, and with code 'closed' when close() comes first. Failures
 * that are retried do not settle it.
 *
 * Tokens: with a token function, a WebSocket sends the refresh op with a new
 * token before the old one expires (the connection and its subscriptions
 * stay), and an SSE stream is opened again with the new token, resuming
 * after the last event delivered (the old one is closed first, so nothing
 * comes twice, and the server replays what was published in between). A
 * failed refresh is retried with backoff and reported to onError. If the
 * server closes a WebSocket that was open with 1008 anyway, the subscription
 * asks for a new token and reconnects, resuming; it stops (onError, state
 * closed) when the function then fails or returns no token, or when the new
 * connection is refused. A function that throws on an ordinary reconnect
 * (the network is down) is retried with backoff; one that returns no token
 * stops the subscription.
 */
export function subscribe(patterns, onEvent, options) {
  const o = opts(options);
  const topics = Array.isArray(patterns) ? patterns.slice() : [patterns];
  if (topics.length === 0) throw new TypeError('subscribe needs at least one pattern');
  const sub = new Subscription(topics, onEvent, o);
  sub.start();
  return sub;
}

class Subscription {
  constructor(topics, onEvent, o) {
    this.topics = topics;
    this.onEvent = onEvent;
    this.o = o;
    this.lastId = o.since || '';
    this.client = '';
    this.attempt = 0;
    this.closed = false;
    this._state = '';
    this.stopCurrent = null;
    this.timer = null;
    // The exact JSON text of the latest data of each topic and key on this
    // connection: the base of the next delta.
    this.bases = new Map();
    this.baseChars = 0;
    this.ws = null;
    // The token of the current connection, and the token lifecycle: gen
    // counts connections, so that a token that arrives for one that is
    // gone is dropped; refreshing is the WebSocket refresh op in flight.
    this.token = '';
    this.gen = 0;
    this.refreshTimer = null;
    this.refreshAttempt = 0;
    this.refreshRef = 0;
    this.refreshing = null; // {ref, token}
    // Set when an open WebSocket was closed by policy: the next connection
    // needs a new token, and a token function that fails then stops.
    this.needToken = false;
    this.statsWaiting = new Map(); // ref -> {resolve, reject}
    this.statsRef = 0;
    this.ready = new Promise((resolve, reject) => { this.resolveReady = resolve; this.rejectReady = reject; });
    // A page that never awaits ready must not get an unhandled rejection.
    this.ready.catch(() => {});
  }

  get state() { return this._state; }

  setState(s) {
    if (this._state === s) return;
    this._state = s;
    if (this.o.onState) this.o.onState(s);
  }

  // start connects, with a new token from a token function.
  start() {
    if (this.closed) return;
    this.setState(this.attempt === 0 ? 'connecting' : 'reconnecting');
    const gen = ++this.gen;
    if (typeof this.o.token !== 'function') {
      this.token = this.o.token || '';
      this.connect();
      return;
    }
    fetchToken(this.o).then((tok) => {
      if (this.closed || gen !== this.gen) return;
      this.token = tok;
      this.needToken = false;
      this.connect();
    }, (e) => {
      if (this.closed || gen !== this.gen) return;
      const err = tokenError(e);
      // Without a token after a policy close, a retry would be refused
      // again; a function that throws otherwise may only be offline.
      if (err.code === 'no_token' || this.needToken) this.refused(err);
      else this.failed(err);
    });
  }

  connect() {
    // A new connection starts with full data for every key.
    this.clearBases();
    const connect = this.o.transport === 'ws' ? this.connectWS : this.connectSSE;
    this.stopCurrent = connect.call(this);
  }

  // stopConn ends the current connection and its token refresh.
  stopConn() {
    this.gen++;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.refreshing = null;
    if (this.stopCurrent) this.stopCurrent();
    this.stopCurrent = null;
  }

  // opened marks the subscription live; failed schedules a reconnect.
  opened() {
    this.attempt = 0;
    this.refreshAttempt = 0;
    this.setState('open');
    this.resolveReady();
    this.scheduleRefresh();
  }

  // scheduleRefresh sets the timer of the next token refresh of the
  // connection, when a token function gave it a token with exp.
  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    if (typeof this.o.token !== 'function') return;
    const d = refreshDelay(this.token);
    if (d !== null) this.refreshTimer = setTimeout(() => this.refresh(), d);
  }

  // refresh gets a new token before the connection's expires: over
  // WebSocket it sends the refresh op (the reply schedules the next one),
  // over SSE it opens the stream again with it, resuming after lastId. The
  // old stream is closed first: none of its events is delivered after that,
  // and the new one resumes after the last that was, so nothing comes twice
  // and the server's replay leaves no gap.
  async refresh() {
    this.refreshTimer = null;
    const gen = this.gen;
    let tok;
    try {
      tok = await fetchToken(this.o);
    } catch (e) {
      if (this.closed || gen !== this.gen) return;
      const err = tokenError(e);
      if (err.code === 'no_token') this.refused(err);
      else this.refreshFailed(err);
      return;
    }
    if (this.closed || gen !== this.gen) return;
    if (this.o.transport === 'ws') {
      const ws = this.ws;
      if (!ws || ws.readyState !== 1) return; // its close reconnects, with a new token
      this.refreshing = { ref: 'refresh-' + (++this.refreshRef), token: tok };
      ws.send(JSON.stringify({ op: 'refresh', ref: this.refreshing.ref, token: tok }));
      return;
    }
    this.stopConn();
    this.token = tok;
    this.connect();
  }

  // refreshed takes the server's reply to the refresh op: the connection
  // now expires with the new token, or kept the old one (err).
  refreshed(ref, err) {
    if (!this.refreshing || this.refreshing.ref !== ref) return;
    const tok = this.refreshing.token;
    this.refreshing = null;
    if (err) {
      this.refreshFailed(err);
      return;
    }
    this.token = tok;
    this.refreshAttempt = 0;
    this.scheduleRefresh();
  }

  // refreshFailed reports a failed refresh and tries again with backoff;
  // should the token expire meanwhile, the server's close reconnects.
  refreshFailed(err) {
    if (this.o.onError) this.o.onError(err);
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh(), backoff(this.o, this.refreshAttempt++));
  }

  // adoptCursor takes the position a subscription starts at, sent by the
  // server before any event, as the cursor to resume from: only when there
  // is none yet, and not with state, which must come whole before a
  // reconnect may resume (its cursor is the synced's).
  adoptCursor(id) {
    if (typeof id === 'string' && id !== '' && !this.lastId && !this.o.state) this.lastId = id;
  }

  // disconnected ends a subscription whose connection the server closed
  // for good (an operator's disconnect): reconnecting would defeat it.
  disconnected(d) {
    if (this.closed) return;
    if (this.o.onDisconnected) this.o.onDisconnected(d);
    this.rejectReady(new HeraldError('disconnected', d.reason, 0));
    this.close();
  }

  // unsubscribed drops the patterns the server removed from the connection,
  // so that a reconnect does not subscribe to them again; with none left
  // the subscription is closed.
  unsubscribed(topics) {
    const gone = Array.isArray(topics) ? topics.filter((t) => typeof t === 'string') : [];
    this.topics = this.topics.filter((t) => !gone.includes(t));
    if (this.o.onUnsubscribed) this.o.onUnsubscribed({ topics: gone });
    if (this.topics.length === 0) this.close();
  }

  failed(err) {
    if (this.closed) return;
    if (err && this.o.onError) this.o.onError(err);
    this.stopConn();
    this.setState('reconnecting');
    const wait = backoff(this.o, this.attempt++);
    this.timer = setTimeout(() => { this.timer = null; this.start(); }, wait);
  }

  // refused ends a subscription the server will not serve: retrying would
  // be refused again.
  refused(err) {
    if (this.closed) return;
    if (this.o.onError) this.o.onError(err);
    this.rejectReady(err);
    this.close();
  }

  // receive takes an event's frame text and the envelope parsed from it.
  // With deltas, it keeps the exact text of a keyed event's data as the
  // next delta's base, and turns a delta into data; a delta that does not
  // apply drops the connection instead, and the next one resumes.
  receive(text, ev) {
    if (!this.o.delta || ev.key === undefined) {
      this.deliver(ev);
      return;
    }
    const k = ev.topic + '\n' + ev.key;
    if (ev.delta === undefined) {
      this.setBase(k, dataText(text));
      this.deliver(ev);
      return;
    }
    const baseText = this.bases.get(k);
    let raw;
    try {
      if (baseText === undefined) throw new Error('no earlier data for the key');
      const out = applyFossilDelta(utf8.encode(baseText), utf8.encode(ev.delta));
      raw = strictUTF8.decode(out);
      ev.data = JSON.parse(raw);
    } catch (e) {
      this.clearBases();
      this.failed(new HeraldError('delta_failed', 'a delta for ' + ev.topic + ' key ' + JSON.stringify(ev.key) +
        ' did not apply (' + e.message + '); reconnecting after ' + (this.lastId || 'the start'), 0));
      return;
    }
    delete ev.delta;
    this.setBase(k, raw);
    this.deliver(ev);
  }

  // setBase keeps text (null: none) as the next base of key k, within
  // bounds above the server's (4,096 keys, 4 MiB per connection): a key
  // forgotten here costs a reconnect when its delta comes, never wrong data.
  setBase(k, text) {
    const old = this.bases.get(k);
    if (old !== undefined) {
      this.baseChars -= k.length + old.length;
      this.bases.delete(k);
    }
    if (text === null) return;
    for (const [k2, v] of this.bases) {
      if (this.bases.size < MAX_BASES && this.baseChars + k.length + text.length <= MAX_BASE_CHARS) break;
      this.baseChars -= k2.length + v.length;
      this.bases.delete(k2);
    }
    this.bases.set(k, text);
    this.baseChars += k.length + text.length;
  }

  clearBases() {
    this.bases.clear();
    this.baseChars = 0;
  }

  deliver(ev) {
    if (ev.id) this.lastId = ev.id;
    try {
      this.onEvent(ev);
    } catch (e) {
      // The app's handler must not break the stream.
      setTimeout(() => { throw e; });
    }
  }

  reset(r) {
    // After a reset the server sends full data again.
    this.clearBases();
    if (r.id) this.lastId = r.id;
    if (this.o.onReset) this.o.onReset(r);
  }

  // synced ends the state: the events after it follow its id.
  synced(s) {
    if (s.id) this.lastId = s.id;
    if (this.o.onSynced) this.o.onSynced(s);
  }

  // stats asks the server for this WebSocket's byte counts.
  stats() {
    if (this.o.transport !== 'ws') return Promise.resolve(null);
    const ws = this.ws;
    if (!ws || ws.readyState !== 1) {
      return Promise.reject(new HeraldError('not_connected', 'the WebSocket is not open', 0));
    }
    const ref = 'stats-' + (++this.statsRef);
    const p = new Promise((resolve, reject) => this.statsWaiting.set(ref, { resolve, reject }));
    ws.send(JSON.stringify({ op: 'stats', ref }));
    return withTimeout(p, this.o.actionTimeout, 'no stats reply').finally(() => this.statsWaiting.delete(ref));
  }

  // dropStats fails the stats requests of a connection that is gone.
  dropStats() {
    for (const w of this.statsWaiting.values()) w.reject(new HeraldError('not_connected', 'the WebSocket closed', 0));
    this.statsWaiting.clear();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.rejectReady(new HeraldError('closed', 'the subscription was closed before the server confirmed it', 0));
    clearTimeout(this.timer);
    this.stopConn();
    this.setState('closed');
  }

  // connectSSE reads the event stream with fetch rather than EventSource:
  // EventSource only delivers the event names it has listeners for (Herald
  // names each event by its type), cannot send the Authorization header, and
  // after a failed reconnect gives up without telling why.
  connectSSE() {
    const ctl = new AbortController();
    const q = new URLSearchParams();
    for (const t of this.topics) q.append('topic', t);
    // With a cursor the server sends the state again only after a reset.
    if (this.o.state) q.set('state', '1');
    else if (!this.lastId && this.o.rewind) q.set('rewind', String(this.o.rewind));
    if (this.o.presence) q.set('presence', '1');
    if (this.o.presenceEvents) q.set('presence_events', '1');
    if (this.o.delta) q.set('delta', 'fossil');
    if (this.o.conflate) q.set('conflate', String(this.o.conflate));
    const headers = { Accept: 'text/event-stream' };
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    if (this.token) headers.Authorization = 'Bearer ' + this.token;
    const url = base(this.o) + '/v1/events?' + q.toString();
    (async () => {
      let res;
      try {
        res = await fetch(url, { headers, signal: ctl.signal, cache: 'no-store', credentials: this.o.credentials });
      } catch (e) {
        if (!ctl.signal.aborted) this.failed(e);
        return;
      }
      if (!res.ok) {
        const err = await errorOf(res);
        // A request the server refuses will be refused again: stop, unless
        // the server is only unavailable for now (501: it cannot serve it).
        if ((res.status >= 500 && res.status !== 501) || res.status === 429) this.failed(err);
        else this.refused(err);
        return;
      }
      this.client = res.headers.get('Herald-Client') || '';
      this.opened();
      try {
        await readEventStream(res.body, ctl.signal, (msg) => {
          // A failed delta aborts the stream; what is buffered is not shown.
          if (ctl.signal.aborted) return;
          if (msg.event === 'herald.reset') {
            const r = JSON.parse(msg.data);
            if (msg.id) r.id = msg.id;
            this.reset(r);
            return;
          }
          if (msg.event === 'herald.synced') {
            const s = JSON.parse(msg.data);
            if (msg.id) s.id = msg.id;
            this.synced(s);
            return;
          }
          if (!msg.data) return;
          this.receive(msg.data, JSON.parse(msg.data));
        }, (id) => {
          // A block with an id and no data: the position the stream starts at.
          if (!ctl.signal.aborted) this.adoptCursor(id);
        });
        if (!ctl.signal.aborted) this.failed(new Error('the event stream ended'));
      } catch (e) {
        if (!ctl.signal.aborted) this.failed(e);
      }
    })();
    return () => ctl.abort();
  }

  connectWS() {
    const u = new URL(base(this.o) + '/v1/ws', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.token) u.searchParams.set('access_token', this.token);
    let ws;
    try {
      ws = new WebSocket(u.toString(), 'herald.v1');
    } catch (e) {
      this.failed(e);
      return () => {};
    }
    this.ws = ws;
    let done = false;
    let wasOpen = false; // the server confirmed the subscription
    ws.onopen = () => {
      const msg = { op: 'subscribe', ref: 'sub', topics: this.topics };
      if (this.lastId) msg.since = this.lastId;
      if (this.o.state) msg.state = true;
      else if (!this.lastId && this.o.rewind) msg.rewind = this.o.rewind;
      if (this.o.presence) {
        msg.presence = true;
        if (this.o.info) msg.info = this.o.info;
      }
      if (this.o.presenceEvents) msg.presence_events = true;
      if (this.o.delta) msg.delta = 'fossil';
      if (this.o.conflate) msg.conflate = String(this.o.conflate);
      ws.send(JSON.stringify(msg));
    };
    ws.onmessage = (m) => {
      let msg;
      try { msg = JSON.parse(m.data); } catch (e) { return; }
      switch (msg.op) {
        case 'ok':
          if (msg.ref === 'sub') {
            this.client = msg.client || '';
            wasOpen = true;
            this.adoptCursor(msg.id);
            this.opened();
          } else {
            this.refreshed(msg.ref, null);
          }
          break;
        case 'unsubscribed':
          this.unsubscribed(msg.topics);
          break;
        case 'event': {
          const { op, ...ev } = msg;
          this.receive(m.data, ev);
          break;
        }
        case 'stats': {
          const w = this.statsWaiting.get(msg.ref);
          if (w) {
            const { op, ref, ...st } = msg;
            w.resolve(st);
          }
          break;
        }
        case 'reset': {
          const { op, ...r } = msg;
          this.reset(r);
          break;
        }
        case 'synced': {
          const { op, ref, ...s } = msg;
          this.synced(s);
          break;
        }
        case 'error':
          if (this.statsWaiting.has(msg.ref)) {
            const e = msg.error || {};
            this.statsWaiting.get(msg.ref).reject(new HeraldError(e.code, e.message, 0));
          } else if (this.refreshing && msg.ref === this.refreshing.ref) {
            const e = msg.error || {};
            this.refreshed(msg.ref, new HeraldError(e.code, e.message, 0));
          } else if (msg.ref === 'sub') {
            // The subscription itself was refused (a bad pattern, no grant).
            done = true;
            const e = msg.error || {};
            ws.close(1000);
            this.refused(new HeraldError(e.code, e.message, 0));
          }
          break;
      }
    };
    ws.onclose = (ev) => {
      this.dropStats();
      if (done || this.closed) return;
      done = true;
      if (ev.code === 4001) { // disconnected by an operator: stay away
        this.disconnected({ code: ev.code, reason: ev.reason || 'disconnected' });
        return;
      }
      if (ev.code === 1008) { // policy: authentication
        const err = new HeraldError('unauthorized', ev.reason || 'closed by policy', 0);
        // An open connection whose token expired or was refused on
        // refresh: a token function may have a new one. A connection
        // refused from the start would be refused again.
        if (wasOpen && typeof this.o.token === 'function') {
          this.needToken = true;
          this.failed(err);
        } else {
          this.refused(err);
        }
        return;
      }
      this.failed(new Error('WebSocket closed: ' + ev.code + (ev.reason ? ' ' + ev.reason : '')));
    };
    return () => {
      done = true;
      if (this.ws === ws) this.ws = null;
      this.dropStats();
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.close(1000);
    };
  }
}

// dataText is the exact JSON text of an event's data in its frame: the
// server writes the envelope as {"id",…,"data":DATA,"time":"…"} (the WebSocket
// frame with "op" first), so it lies between the first "data": and the
// last ,"time":" (a quote in a key or topic is escaped, so "data": cannot
// come earlier; the data itself may hold ,"time":"). null when absent.
function dataText(frame) {
  const i = frame.indexOf('"data":');
  const j = frame.lastIndexOf(',"time":"');
  return i < 0 || j < i ? null : frame.slice(i + 7, j);
}

// Bounds of the delta bases of a connection (see setBase).
const MAX_BASES = 16384;
const MAX_BASE_CHARS = 32 << 20;

const utf8 = new TextEncoder();
const strictUTF8 = new TextDecoder('utf-8', { fatal: true });

// The fossil base-64 digits of delta integers, by byte (top bit ignored).
const FOSSIL_DIGITS = (() => {
  const v = new Int8Array(128).fill(-1);
  const z = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
  for (let i = 0; i < 64; i++) v[z.charCodeAt(i)] = i;
  return v;
})();

// The most a delta may make: an event's data, far smaller.
const MAX_DELTA_OUTPUT = 64 << 20;

/**
 * applyFossilDelta returns the bytes (Uint8Array) that a fossil delta (the
 * delta format of the Fossil SCM, as the server makes them) turns base into.
 * It throws on a malformed delta or one made for another base (the checksum
 * does not match). subscribe uses it for delta: true.
 */
export function applyFossilDelta(base, delta) {
  let pos = 0;
  const int = () => {
    let v = 0, c;
    while (pos < delta.length && (c = FOSSIL_DIGITS[delta[pos] & 0x7f]) >= 0) {
      v = v * 64 + c;
      if (v > 0xffffffff) throw new Error('integer too large');
      pos++;
    }
    return v;
  };
  const op = () => {
    if (pos >= delta.length) throw new Error('unterminated delta');
    return delta[pos++];
  };
  const size = int();
  if (op() !== 0x0a) throw new Error("size integer not terminated by '\\n'");
  if (size > MAX_DELTA_OUTPUT) throw new Error('the delta makes ' + size + ' bytes');
  const out = new Uint8Array(size);
  let n = 0;
  while (pos < delta.length) {
    const cnt = int();
    switch (op()) {
      case 0x40: { // @: copy cnt bytes of base from ofst
        const ofst = int();
        if (pos < delta.length && op() !== 0x2c) throw new Error("copy command not terminated by ','");
        if (n + cnt > size) throw new Error('copy exceeds output file size');
        if (ofst + cnt > base.length) throw new Error('copy extends past end of input');
        out.set(base.subarray(ofst, ofst + cnt), n);
        n += cnt;
        break;
      }
      case 0x3a: // ':' insert the next cnt bytes of the delta
        if (n + cnt > size) throw new Error('insert command gives an output larger than predicted');
        if (pos + cnt > delta.length) throw new Error('insert count exceeds size of delta');
        out.set(delta.subarray(pos, pos + cnt), n);
        n += cnt;
        pos += cnt;
        break;
      case 0x3b: // ';' the checksum of the output
        if (n !== size) throw new Error('generated size does not match predicted size');
        if (cnt !== fossilChecksum(out)) throw new Error('bad checksum');
        return out;
      default:
        throw new Error('unknown delta operator');
    }
  }
  throw new Error('unterminated delta');
}

// fossilChecksum is Fossil's 32-bit checksum: four big-endian byte lanes.
function fossilChecksum(a) {
  let s0 = 0, s1 = 0, s2 = 0, s3 = 0, z = 0, n = a.length;
  while (n >= 4) {
    s0 = (s0 + a[z]) | 0;
    s1 = (s1 + a[z + 1]) | 0;
    s2 = (s2 + a[z + 2]) | 0;
    s3 = (s3 + a[z + 3]) | 0;
    z += 4;
    n -= 4;
  }
  s3 = (((((s3 + (s2 << 8)) | 0) + (s1 << 16)) | 0) + (s0 << 24)) | 0;
  if (n === 3) s3 = (s3 + (a[z + 2] << 8)) | 0;
  if (n >= 2) s3 = (s3 + (a[z + 1] << 16)) | 0;
  if (n >= 1) s3 = (s3 + (a[z] << 24)) | 0;
  return s3 >>> 0;
}

// seqOf is the position of a cursor ("EPOCH-SEQ") within its epoch.
function seqOf(id) {
  const i = String(id).lastIndexOf('-');
  return i < 0 ? NaN : Number(String(id).slice(i + 1));
}

function epochOf(id) {
  const s = String(id);
  return s.slice(0, s.lastIndexOf('-'));
}

/**
 * presence keeps a live list of a topic's members: it reads the members
 * (GET /v1/topics/{topic}/presence), then applies the joins and leaves after
 * the position that list is exact at, from a subscription with
 * presenceEvents that resumes from there. So the list is exact, whenever it
 * changes, with no gap and no duplicate. After a reset (the events could not
 * be replayed) it reads the members again.
 *
 * Options: join (true: this page is a member too, through the same
 * subscription), info (with join over WebSocket), onChange(members), and
 * those of subscribe (transport, token, baseURL, onState, onError).
 *
 * Returns {members (a Map of client ID to member), get clients(), get
 * users(), get client(), ready, close()}; ready resolves once the list is
 * loaded and the subscription live.
 */
export function presence(topic, options) {
  const o = opts(options);
  const members = new Map();
  let at = '';          // the cursor the list is exact at
  let loading = null;   // a reload in flight: events wait in pending
  let pending = [];
  let sub = null;
  let closed = false;
  const changed = () => { if (o.onChange) o.onChange(members); };
  const apply = (ev) => {
    if (at && epochOf(ev.id) === epochOf(at) && seqOf(ev.id) <= seqOf(at)) return; // in the list already
    if (ev.type === 'herald.join') members.set(ev.key || ev.data.client, ev.data);
    else if (ev.type === 'herald.leave') members.delete(ev.key || ev.data.client);
    else return;
    changed();
  };
  const load = async () => {
    const p = await getJSON(o, '/v1/topics/' + encodeURIComponent(topic) + '/presence');
    members.clear();
    for (const m of p.members) members.set(m.client, m);
    at = p.id;
    const waiting = pending;
    pending = [];
    loading = null;
    for (const ev of waiting) apply(ev);
    changed();
  };
  const reload = () => {
    if (!loading) loading = load().catch((e) => { loading = null; if (o.onError) o.onError(e); });
    return loading;
  };
  const ready = (async () => {
    await reload();
    if (closed) throw new HeraldError('closed', 'closed before the members were loaded', 0);
    sub = subscribe([topic], (ev) => (loading ? pending.push(ev) : apply(ev)), {
      ...o, since: at, presence: !!o.join, info: o.info, presenceEvents: true,
      onReset: (r) => { reload(); if (o.onReset) o.onReset(r); },
    });
    await sub.ready;
  })();
  ready.catch(() => {});
  return {
    members,
    ready,
    get clients() { return members.size; },
    get users() { return new Set([...members.values()].map((m) => m.user).filter((u) => u != null)).size; },
    get client() { return sub ? sub.client : ''; },
    close() { closed = true; if (sub) sub.close(); },
  };
}

// readEventStream parses text/event-stream (the WHATWG grammar: LF, CR or
// CRLF line ends, comments, id/event/data fields) and calls onMessage with
// {id, event, data} for each dispatched message, and onId with the id of a
// block that has an id and no data (which sets the last event ID without
// dispatching anything).
async function readEventStream(body, signal, onMessage, onId) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let id = '', event = '', data = [];
  let sawId = false; // the block has an id field
  const abort = () => reader.cancel().catch(() => {});
  signal.addEventListener('abort', abort);
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
        // A CR at the very end may be the first half of a CRLF.
        if (buf[i] === '\r' && i === buf.length - 1) break;
        const line = buf.slice(0, i);
        buf = buf.slice(i + (buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1));
        if (line === '') {
          if (data.length > 0) onMessage({ id, event: event || 'message', data: data.join('\n') });
          else if (sawId && onId) onId(id);
          event = '';
          data = [];
          sawId = false;
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let val = c < 0 ? '' : line.slice(c + 1);
        if (val[0] === ' ') val = val.slice(1);
        if (field === 'data') data.push(val);
        else if (field === 'event') event = val;
        else if (field === 'id' && !val.includes('\0')) {
          id = val;
          sawId = true;
        }
      }
    }
  } finally {
    signal.removeEventListener('abort', abort);
  }
}

async function errorOf(res) {
  let code = 'http_' + res.status, message = res.statusText || ('HTTP ' + res.status);
  try {
    const body = await res.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch (e) { /* not JSON */ }
  return new HeraldError(code, message, res.status);
}

// tokenError is what a token function's failure is reported as.
function tokenError(e) {
  if (e instanceof HeraldError) return e;
  const err = new HeraldError('token_failed', 'the token function failed: ' + ((e && e.message) || String(e)), 0);
  err.cause = e;
  return err;
}

async function post(o, path, body, headers) {
  const h = { 'Content-Type': 'application/json', ...(headers || {}) };
  const token = await requestToken(o);
  if (token) h.Authorization = 'Bearer ' + token;
  const res = await fetch(base(o) + path, { method: 'POST', headers: h, body: JSON.stringify(body), credentials: o.credentials });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

/** publish sends one event and resolves with {id}, its cursor. */
export function publish(topic, type, data, options) {
  return post(opts(options), '/v1/publish', { topic, type, data });
}

// Result listeners: one subscription per action topic (and transport, base
// and token), shared by the actions in flight on it and closed when the last
// one settles.
const resultSubs = new Map();

function resultSub(o, topic) {
  const key = [base(o), o.transport, tokenKey(o.token), topic].join('\n');
  let rs = resultSubs.get(key);
  if (!rs) {
    rs = { users: 0, waiting: new Map(), early: new Map() };
    rs.sub = subscribe([topic], (ev) => {
      if (ev.type !== 'action.succeeded' && ev.type !== 'action.failed') return;
      const id = ev.data && ev.data.action_id;
      const w = rs.waiting.get(id);
      if (w) w(ev);
      else {
        // The result came before the 202, or belongs to someone else's
        // action on the same topic: keep the newest few.
        rs.early.set(id, ev);
        if (rs.early.size > 1000) rs.early.delete(rs.early.keys().next().value);
      }
    }, { ...o, since: undefined });
    resultSubs.set(key, rs);
  }
  rs.users++;
  return {
    rs,
    release() {
      if (--rs.users === 0) {
        rs.sub.close();
        resultSubs.delete(key);
      }
    },
  };
}

/**
 * action submits an action and resolves with its result event (type
 * action.succeeded, data {action_id, type, status, result}) once it has run.
 * It rejects with a HeraldError when the action fails (code and message from
 * the action's error), when the server refuses it, or after
 * options.timeout ms (default 30 s) with code 'timeout'.
 *
 * Options: idempotencyKey, timeout, transport and token for the result
 * subscription, baseURL.
 */
export async function action(type, topic, payload, options) {
  const o = opts(options);
  const timeout = o.timeout || o.actionTimeout;
  const { rs, release } = resultSub(o, topic);
  try {
    // The result is published to topic once: be subscribed before asking.
    await withTimeout(rs.sub.ready, timeout, 'the result subscription did not open');
    const headers = o.idempotencyKey ? { 'Idempotency-Key': o.idempotencyKey } : {};
    const accepted = await post(o, '/v1/actions', { type, topic, payload }, headers);
    const id = accepted.id;
    let ev = rs.early.get(id);
    rs.early.delete(id);
    if (!ev && (accepted.status === 'succeeded' || accepted.status === 'failed')) {
      ev = resultOf(accepted); // an idempotent repeat of a finished action
    }
    if (!ev) {
      ev = await new Promise((resolve, reject) => {
        const t = setTimeout(async () => {
          rs.waiting.delete(id);
          // The event may have been lost to a reset: ask for the status.
          try {
            const st = await getJSON(o, accepted.status_url || ('/v1/actions/' + encodeURIComponent(id)));
            if (st.status === 'succeeded' || st.status === 'failed') return resolve(resultOf(st));
          } catch (e) { /* report the timeout */ }
          reject(new HeraldError('timeout', 'no result for action ' + id + ' within ' + timeout + ' ms', 0));
        }, timeout);
        rs.waiting.set(id, (e) => { clearTimeout(t); rs.waiting.delete(id); resolve(e); });
      });
    }
    if (ev.type === 'action.failed') {
      const e = (ev.data && ev.data.error) || {};
      const err = new HeraldError(e.code || 'action_failed', e.message || 'the action failed', 0);
      err.event = ev;
      throw err;
    }
    return ev;
  } finally {
    release();
  }
}

// resultOf turns an action's status document into the event its result
// would have been published as.
function resultOf(st) {
  const id = st.id || st.action_id;
  if (st.status === 'failed') {
    return { topic: st.topic, type: 'action.failed', data: { action_id: id, type: st.type, status: 'failed', error: st.error } };
  }
  return { topic: st.topic, type: 'action.succeeded', data: { action_id: id, type: st.type, status: 'succeeded', result: st.result === undefined ? null : st.result } };
}

async function getJSON(o, path) {
  const h = {};
  const token = await requestToken(o);
  if (token) h.Authorization = 'Bearer ' + token;
  const res = await fetch(base(o) + path, { headers: h, cache: 'no-store', credentials: o.credentials });
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, reject) => { t = setTimeout(() => reject(new HeraldError('timeout', what, 0)), ms); }),
  ]).finally(() => clearTimeout(t));
}
