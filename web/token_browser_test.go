package web_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

const (
	tokenSecret = "the HS256 secret of the token tests, 32+ bytes"
	tokenAPIKey = "the backend's key of the token tests"
	tokenTTL    = 5 * time.Second
)

// tokenPage is an app's page on its own origin that loads herald.js from
// Herald and gets its tokens from the app's /token, as a logged-in page
// would: window.start(transport, name, subject, sync) subscribes with a
// token function and records, per name, the events, errors, states and
// token calls. subject(n), if given, names the subject of the nth token,
// or null: the function returns no token. With sync, the function is not
// async: it returns the latest of the tokens the page fetches every
// second, as a page that keeps its token in a variable would.
const tokenPage = `<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,"><title>tokens</title>
<script type="module">
const herald = await import(%[1]q);
herald.configure({ baseURL: %[2]q });
window.subs = {};
let latest = null;
const fetchLatest = async () => { latest = await (await fetch('/token?sub=page')).text(); };
window.start = async (transport, name, subject, sync) => {
	const rec = { transport, got: [], errors: [], states: [], calls: 0, disconnected: null };
	if (sync && latest === null) {
		await fetchLatest();
		setInterval(() => fetchLatest().catch(() => {}), 1000);
	}
	const sub = herald.subscribe(['tok.>'], (e) => rec.got.push(e.data.n), {
		transport,
		token: sync ? () => (++rec.calls, latest) : async () => {
			const s = subject ? subject(++rec.calls) : (++rec.calls, 'page');
			if (s === null) return '';
			const r = await fetch('/token?sub=' + encodeURIComponent(s));
			if (!r.ok) throw new Error('the app answered ' + r.status);
			return r.text();
		},
		onError: (e) => rec.errors.push(e.code + ': ' + e.message),
		onState: (s) => rec.states.push(s),
	});
	rec.sub = sub;
	window.subs[name] = rec;
	return sub.ready.then(() => sub.client);
};
window.loaded = true;
</script>`

// tokenApp is the app's origin: the page and /token, which mints tokens
// for ?sub= that expire tokenTTL from now.
func tokenApp(t *testing.T, heraldURL func() string) *httptest.Server {
	t.Helper()
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			now := time.Now()
			tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
				"sub": r.URL.Query().Get("sub"), "iat": now.Unix(), "exp": now.Add(tokenTTL).Unix(),
				"herald": map[string]any{"subscribe": []string{"tok.>"}},
			}).SignedString([]byte(tokenSecret))
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			_, _ = io.WriteString(w, tok)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, tokenPage, heraldURL()+"/herald.js", heraldURL())
	}))
	t.Cleanup(app.Close)
	return app
}

// startTokenHerald runs Herald with --auth jwt, --jwt-leeway 0 (so a
// token is refused from its exp on: a connection lives past it only if
// herald.js renewed it) and the app's origin allowed.
func startTokenHerald(t *testing.T, appURL string) *heraldtest.Node {
	t.Helper()
	return heraldtest.Start(t, server.Config{
		Auth: "jwt", JWTSecret: tokenSecret, JWTLeeway: -1, APIKey: tokenAPIKey,
		CORSOrigins: []string{appURL}, AllowedOrigins: []string{appURL},
	})
}

// publishN publishes tok.n events {"n":1}…{"n":count} with the API key,
// one every interval.
func publishN(t *testing.T, n *heraldtest.Node, count int, interval time.Duration) {
	t.Helper()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 1; i <= count; i++ {
		req, _ := http.NewRequest(http.MethodPost, n.URL+"/v1/publish", strings.NewReader(fmt.Sprintf(`{"topic":"tok.n","type":"n","data":{"n":%d}}`, i)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", tokenAPIKey)
		resp, err := n.Client.Do(req)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: status %d, body %s", i, resp.StatusCode, b)
		}
		<-tick.C
	}
}

type tokenRecord struct {
	Got    []int    `json:"got"`
	Errors []string `json:"errors"`
	States []string `json:"states"`
	Calls  int      `json:"calls"`
	Client string   `json:"client"`
}

func record(t *testing.T, tb *browsertest.Tab, name string) tokenRecord {
	t.Helper()
	var r tokenRecord
	js := fmt.Sprintf(`(() => { const r = window.subs[%q]; return JSON.stringify({...r, sub: undefined, client: r.sub.client}); })()`, name)
	if err := json.Unmarshal([]byte(browsertest.Eval[string](t, tb, js)), &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}

// TestBrowserTokenRefresh keeps a WebSocket and an SSE subscription with
// 5 s tokens open for 30 s (12 s with -short) on a server without leeway,
// while events are published at 20/s, each with an async token function
// and with a plain (sync) one: each page gets every event once, in order,
// never sees an error or a reconnect, and the WebSocket is the same
// connection at the end (its token was refreshed in place), so herald.js
// renewed the tokens before they expired, asking the token function again
// and again.
func TestBrowserTokenRefresh(t *testing.T) {
	dur := 30 * time.Second
	if testing.Short() {
		dur = 12 * time.Second
	}
	var heraldURL atomic.Value
	app := tokenApp(t, func() string { return heraldURL.Load().(string) })
	h := startTokenHerald(t, app.URL)
	heraldURL.Store(h.URL)

	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(app.URL+"/"))
	browsertest.WaitFor(t, tb, "herald.js to load", "window.loaded === true")
	wsClients := map[string]string{
		"ws":      browsertest.Eval[string](t, tb, `window.start('ws', 'ws')`),
		"ws-sync": browsertest.Eval[string](t, tb, `window.start('ws', 'ws-sync', null, true)`),
	}
	browsertest.Eval[string](t, tb, `window.start('sse', 'sse')`)
	browsertest.Eval[string](t, tb, `window.start('sse', 'sse-sync', null, true)`)
	names := []string{"ws", "sse", "ws-sync", "sse-sync"}

	const interval = 50 * time.Millisecond
	count := int(dur / interval)
	publishN(t, h, count, interval)
	wait.For(t, 20*time.Second, "every event on both transports", func() bool {
		return browsertest.Eval[bool](t, tb, fmt.Sprintf(`Object.values(window.subs).every((r) => r.got.length >= %d)`, count))
	})

	for _, name := range names {
		r := record(t, tb, name)
		t.Logf("%s: %d events, %d token calls, states %v", name, len(r.Got), r.Calls, r.States)
		if !reflect.DeepEqual(r.Got, seq(count)) {
			t.Errorf("%s: the page got %d events %v, want 1…%d each once in order", name, len(r.Got), r.Got, count)
		}
		if len(r.Errors) > 0 {
			t.Errorf("%s: the page saw errors %q", name, r.Errors)
		}
		if !reflect.DeepEqual(r.States, []string{"connecting", "open"}) {
			t.Errorf("%s: states %v, want connecting, open: a token expired and the connection was dropped", name, r.States)
		}
		// One token at the start, then one at least every half lifetime.
		if min := int(dur / tokenTTL); r.Calls < min {
			t.Errorf("%s: the token function was called %d times in %v, want at least %d", name, r.Calls, dur, min)
		}
		if was, ok := wsClients[name]; ok && r.Client != was {
			t.Errorf("%s: the connection is %s, was %s: it was replaced rather than refreshed", name, r.Client, was)
		}
	}
	browsertest.NoErrors(t, tb)
}

// TestBrowserTokenRefused is what happens when a renewal does not work.
// A WebSocket whose token function turns to tokens of another subject
// cannot refresh (the server refuses a refresh for another subject): the
// page hears of each refusal, the server closes the connection with 1008
// when the first token expires, and herald.js reconnects with a new token
// and resumes, so every event still arrives once and in order. A
// WebSocket whose function fails from then on stops at that 1008 instead,
// and an SSE subscription whose function returns no token stops at once.
func TestBrowserTokenRefused(t *testing.T) {
	var heraldURL atomic.Value
	app := tokenApp(t, func() string { return heraldURL.Load().(string) })
	h := startTokenHerald(t, app.URL)
	heraldURL.Store(h.URL)

	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(app.URL+"/"))
	browsertest.WaitFor(t, tb, "herald.js to load", "window.loaded === true")
	wsClient := browsertest.Eval[string](t, tb, `window.start('ws', 'ws', (n) => n === 1 ? 'page' : 'someone else')`)
	browsertest.Eval[string](t, tb, `window.start('sse', 'sse', (n) => n === 1 ? 'page' : null)`)
	browsertest.Eval[string](t, tb, `window.start('ws', 'failing', (n) => { if (n === 1) return 'page'; throw new Error('the app is down'); })`)

	const interval = 50 * time.Millisecond
	count := int(2 * tokenTTL / interval)
	publishN(t, h, count, interval)
	wait.For(t, 20*time.Second, "every event over WebSocket", func() bool {
		return browsertest.Eval[bool](t, tb, fmt.Sprintf(`window.subs.ws.got.length >= %d`, count))
	})

	ws := record(t, tb, "ws")
	t.Logf("ws: %d events, %d token calls, states %v, errors %q", len(ws.Got), ws.Calls, ws.States, ws.Errors)
	if !reflect.DeepEqual(ws.Got, seq(count)) {
		t.Errorf("ws: the page got %d events %v, want 1…%d each once in order", len(ws.Got), ws.Got, count)
	}
	if !reflect.DeepEqual(ws.States, []string{"connecting", "open", "reconnecting", "open"}) {
		t.Errorf("ws: states %v, want connecting, open, reconnecting, open", ws.States)
	}
	var refused, expired bool
	for _, e := range ws.Errors {
		refused = refused || strings.HasPrefix(e, "forbidden: ")
		expired = expired || e == "unauthorized: token expired"
	}
	if !refused || !expired {
		t.Errorf("ws: errors %q, want the refused refresh (forbidden) and the expiry (unauthorized)", ws.Errors)
	}
	if ws.Client == wsClient {
		t.Errorf("ws: still connection %s, want a new one after the token expired", ws.Client)
	}

	failing := record(t, tb, "failing")
	t.Logf("failing: %d token calls, states %v, errors %q", failing.Calls, failing.States, failing.Errors)
	if !reflect.DeepEqual(failing.States, []string{"connecting", "open", "reconnecting", "closed"}) {
		t.Errorf("failing: states %v, want connecting, open, reconnecting, closed", failing.States)
	}
	if n := len(failing.Errors); n < 3 || failing.Errors[n-2] != "unauthorized: token expired" ||
		failing.Errors[n-1] != "token_failed: the token function failed: the app is down" {
		t.Errorf("failing: errors %q, want failed refreshes, the expiry, then the failed token that stopped it", failing.Errors)
	}
	if !reflect.DeepEqual(failing.Got, seq(len(failing.Got))) {
		t.Errorf("failing: the page got %v, want 1…n in order", failing.Got)
	}

	sse := record(t, tb, "sse")
	t.Logf("sse: %d events, %d token calls, states %v, errors %q", len(sse.Got), sse.Calls, sse.States, sse.Errors)
	if !reflect.DeepEqual(sse.States, []string{"connecting", "open", "closed"}) || len(sse.Errors) != 1 || !strings.HasPrefix(sse.Errors[0], "no_token: ") {
		t.Errorf("sse: states %v, errors %q; want connecting, open, closed after one no_token", sse.States, sse.Errors)
	}
	if sse.Calls != 2 {
		t.Errorf("sse: the token function was called %d times, want 2 (no retry after it returned no token)", sse.Calls)
	}
	if !reflect.DeepEqual(sse.Got, seq(len(sse.Got))) {
		t.Errorf("sse: the page got %v, want 1…n in order", sse.Got)
	}
	browsertest.NoErrors(t, tb)
}

// TestHeraldJSRefreshDelay: when herald.js asks a token function again,
// by the token's exp and iat (read unverified from its payload) and the
// page's clock; never in a loop, and never for a token it cannot read.
func TestHeraldJSRefreshDelay(t *testing.T) {
	s := newStack(t)
	tb := browsertest.New(t)()
	openTestPage(t, tb, s.url)
	const now = 1_800_000_000 // s
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	jwtOf := func(payload string) string { return b64(`{"alg":"HS256"}`) + "." + b64(payload) + ".sig" }
	cases := []struct {
		name  string
		token string
		want  float64 // ms; -1: null, never refreshed
	}{
		{"an hour: at 80%", jwtOf(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+3600)), 2880_000},
		{"a minute: 30 s before", jwtOf(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+60)), 30_000},
		{"5 s: at half", jwtOf(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+5)), 2500},
		{"the page's clock ahead: its lifetime", jwtOf(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now-100, now-90)), 5000},
		{"the page's clock behind: its lifetime", jwtOf(fmt.Sprintf(`{"iat":%d,"exp":%d}`, now+90, now+100)), 5000},
		{"expired, no iat: the least wait", jwtOf(fmt.Sprintf(`{"exp":%d}`, now-10)), 1000},
		{"in a century: the longest timer", jwtOf(fmt.Sprintf(`{"exp":%d}`, now+100*365*86400)), 1<<31 - 1},
		{"no exp", jwtOf(`{"sub":"a"}`), -1},
		{"exp a string", jwtOf(`{"exp":"soon"}`), -1},
		{"payload not JSON", jwtOf(`exp`), -1},
		{"payload not base64url", "a.!!!.b", -1},
		{"payload not UTF-8", b64("{}") + "." + base64.RawURLEncoding.EncodeToString([]byte{'{', 0xff, '}'}) + ".s", -1},
		{"not a JWT", "opaque-token", -1},
		{"two parts", "a.b", -1},
		{"a huge payload", jwtOf(`{"exp":1,"x":"` + strings.Repeat("x", 70_000) + `"}`), -1},
	}
	for _, c := range cases {
		got := browsertest.Eval[float64](t, tb, fmt.Sprintf(`(() => { const d = herald.refreshDelay(%q, %d); return d === null ? -1 : d; })()`, c.token, now*1000))
		if got != c.want {
			t.Errorf("%s: refreshDelay %v, want %v", c.name, got, c.want)
		}
	}
	browsertest.NoErrors(t, tb)
}
