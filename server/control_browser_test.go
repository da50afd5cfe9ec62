package server_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/server"
)

// TestBrowserControl drives herald.js in Chromium against a real server's
// start cursors and control API: subscriptions have a cursor before their
// first event; a WebSocket subscription that an operator unsubscribes from
// one of its patterns reports it (onUnsubscribed) and keeps the other;
// disconnected (close 4001), it reports it (onDisconnected) and does not
// reconnect.
func TestBrowserControl(t *testing.T) {
	const key = "ops-key-0123456789"
	in := start(t, server.Config{Auth: "jwt", JWTSecret: controlSecret, APIKey: key, PublicSubscribe: []hub.Pattern{hub.MustPattern("ctl.>")}})
	tb := browsertest.New(t)()
	tb.Do(t, chromedp.Navigate(in.URL+"/healthz")) // a page of the origin; the dashboard would need a token
	browsertest.Eval[bool](t, tb, `(async () => {
		const herald = await import('/herald.js');
		window.rec = { states: [], unsubscribed: [], events: [] };
		window.sub = herald.subscribe(['ctl.a', 'ctl.b'], (e) => window.rec.events.push(e.topic), {
			transport: 'ws',
			onState: (s) => window.rec.states.push(s),
			onUnsubscribed: (u) => window.rec.unsubscribed.push(u.topics),
			onDisconnected: (d) => { window.rec.disconnected = d; },
		});
		return true;
	})()`)
	browsertest.WaitFor(t, tb, "the subscription", `window.sub.client && window.rec.states.includes('open')`)
	client := browsertest.Eval[string](t, tb, `window.sub.client`)
	// Before any event, the subscription has its start cursor (the ok's
	// id), so a reconnect now would resume without a gap; so has an SSE
	// one (the stream's id-only block).
	if id := browsertest.Eval[string](t, tb, `window.sub.lastId || ''`); id == "" {
		t.Error("a WebSocket subscription has no cursor before its first event")
	}
	browsertest.Eval[bool](t, tb, `(async () => {
		const herald = await import('/herald.js');
		window.sseSub = herald.subscribe(['ctl.c'], () => {}, { transport: 'sse' });
		return true;
	})()`)
	browsertest.WaitFor(t, tb, "the SSE stream's start cursor", `!!window.sseSub.lastId`)
	browsertest.Eval[bool](t, tb, `(() => { window.sseSub.close(); return true; })()`)

	// post calls the API as the backend does, with the API key.
	post := func(path, body string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, in.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d", path, resp.StatusCode)
		}
	}
	post("/v1/unsubscribe", `{"client":"`+client+`","topics":["ctl.a"]}`)
	browsertest.WaitFor(t, tb, "onUnsubscribed", `window.rec.unsubscribed.length === 1`)
	post("/v1/publish", `{"topic":"ctl.a","data":1}`)
	post("/v1/publish", `{"topic":"ctl.b","data":2}`)
	browsertest.WaitFor(t, tb, "ctl.b's event", `window.rec.events.includes('ctl.b')`)

	post("/v1/disconnect", `{"client":"`+client+`"}`)
	browsertest.WaitFor(t, tb, "onDisconnected", `window.rec.disconnected !== undefined`)
	var rec struct {
		States       []string
		Unsubscribed [][]string
		Events       []string
		Disconnected struct {
			Code   int
			Reason string
		}
	}
	if err := json.Unmarshal([]byte(browsertest.Eval[string](t, tb, `JSON.stringify(window.rec)`)), &rec); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec.Unsubscribed, [][]string{{"ctl.a"}}) || !reflect.DeepEqual(rec.Events, []string{"ctl.b"}) {
		t.Errorf("unsubscribed %v, events %v; want [[ctl.a]] and only ctl.b's event", rec.Unsubscribed, rec.Events)
	}
	if rec.Disconnected.Code != 4001 || rec.Disconnected.Reason != "disconnected" {
		t.Errorf("onDisconnected got %+v, want 4001 disconnected", rec.Disconnected)
	}
	if !reflect.DeepEqual(rec.States, []string{"connecting", "open", "closed"}) {
		t.Errorf("states %v, want connecting, open, closed: no reconnect after 4001", rec.States)
	}
	if topics := browsertest.Eval[string](t, tb, `JSON.stringify(window.sub.topics)`); topics != `["ctl.b"]` {
		t.Errorf("the subscription's topics are %s, want [\"ctl.b\"]", topics)
	}
	for _, e := range tb.Errors() {
		if !strings.Contains(e, "/favicon.ico") { // asked for by the browser, of a page that is JSON
			t.Errorf("the page logged an error: %s", e)
		}
	}
}
