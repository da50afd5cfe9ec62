package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/web"
)

// controlPeer serves herald.js and /test.html, and answers /v1/ws and
// /v1/events with the frames of the v1.1 Control API (SPEC.md, "Control
// API") and the start cursors, which Herald's transports do not send yet:
// each WebSocket gets the ok to its subscribe with id startID, then
// {"op":"unsubscribed","topics":["ctl.a"]}, then close 4001; each SSE
// stream gets a block with only an id, then ends. It records the resume
// positions the client asked for.
type controlPeer struct {
	url     string
	mu      sync.Mutex
	wsSince []string // the since of each WebSocket subscribe
	sseLast []string // the Last-Event-ID of each stream request
}

const startID = "ep1-41"

func newControlPeer(t *testing.T) *controlPeer {
	t.Helper()
	p := &controlPeer{}
	mux := http.NewServeMux()
	mux.Handle("/herald.js", web.JS())
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(testPage))
	})
	mux.HandleFunc("/v1/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Errorf("reading the subscribe: %v", err)
			return
		}
		var sub struct {
			Op    string `json:"op"`
			Since string `json:"since"`
		}
		if err := json.Unmarshal(b, &sub); err != nil || sub.Op != "subscribe" {
			t.Errorf("the first message %s is not a subscribe (%v)", b, err)
			return
		}
		p.mu.Lock()
		p.wsSince = append(p.wsSince, sub.Since)
		p.mu.Unlock()
		for _, m := range []string{
			`{"op":"ok","ref":"sub","client":"peer-1","id":"` + startID + `"}`,
			`{"op":"unsubscribed","topics":["ctl.a"]}`,
		} {
			if err := c.Write(ctx, websocket.MessageText, []byte(m)); err != nil {
				t.Errorf("writing %s: %v", m, err)
				return
			}
		}
		// The page sends nothing more; reading lets the close handshake end.
		go func() { _, _, _ = c.Read(ctx) }()
		_ = c.Close(4001, "disconnected")
	})
	mux.HandleFunc("/v1/events", func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.sseLast = append(p.sseLast, r.Header.Get("Last-Event-ID"))
		n := len(p.sseLast)
		p.mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Herald-Client", fmt.Sprintf("peer-sse-%d", n))
		// The id-only block, then a heartbeat, then the stream ends: the
		// client resumes from the id.
		_, _ = fmt.Fprintf(w, "retry: 100\n\nid: %s\n\n: ping\n\n", startID)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	p.url = srv.URL
	return p
}

// TestBrowserControlFrames: herald.js takes the start cursor of the ok to
// subscribe and of an SSE block with only an id as its cursor (a reconnect
// resumes from it), drops the patterns of an unsubscribed frame and
// reports them, and does not reconnect after close 4001 but reports it.
func TestBrowserControlFrames(t *testing.T) {
	p := newControlPeer(t)
	tb := browsertest.New(t)()
	openTestPage(t, tb, p.url)

	t.Run("ws", func(t *testing.T) {
		got := browsertest.Eval[string](t, tb, `new Promise((resolve) => {
			const rec = { states: [], unsubscribed: [], errors: [] };
			// Done when disconnected, or when about to reconnect instead.
			const done = () => {
				rec.lastId = sub.lastId;
				rec.topics = sub.topics;
				setTimeout(() => { sub.close(); resolve(JSON.stringify(rec)); });
			};
			const sub = herald.subscribe(['ctl.a', 'ctl.b'], () => {}, {
				transport: 'ws',
				onState: (s) => { rec.states.push(s); if (s === 'reconnecting') done(); },
				onError: (e) => rec.errors.push(e.code),
				onUnsubscribed: (u) => rec.unsubscribed.push(u.topics),
				onDisconnected: (d) => { rec.disconnected = d; done(); },
			});
		})`)
		var rec struct {
			States       []string
			Unsubscribed [][]string
			Errors       []string
			Disconnected struct {
				Code   int
				Reason string
			}
			LastID string
			Topics []string
		}
		if err := json.Unmarshal([]byte(got), &rec); err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if rec.LastID != startID {
			t.Errorf("lastId %q, want the ok's start cursor %q", rec.LastID, startID)
		}
		if !reflect.DeepEqual(rec.Unsubscribed, [][]string{{"ctl.a"}}) || !reflect.DeepEqual(rec.Topics, []string{"ctl.b"}) {
			t.Errorf("onUnsubscribed got %v and the topics are %v, want [[ctl.a]] and [ctl.b]", rec.Unsubscribed, rec.Topics)
		}
		if rec.Disconnected.Code != 4001 || rec.Disconnected.Reason != "disconnected" {
			t.Errorf("onDisconnected got %+v, want code 4001, reason disconnected", rec.Disconnected)
		}
		if !reflect.DeepEqual(rec.States, []string{"connecting", "open", "closed"}) || len(rec.Errors) > 0 {
			t.Errorf("states %v, errors %v; want connecting, open, closed and no error", rec.States, rec.Errors)
		}
		// A cursor the subscription has is kept.
		browsertest.Eval[bool](t, tb, `new Promise((resolve) => {
			const sub = herald.subscribe(['ctl.b'], () => {}, { transport: 'ws', since: 'ep1-7',
				onDisconnected: () => resolve(sub.lastId === 'ep1-7') });
		})`)
		p.mu.Lock()
		defer p.mu.Unlock()
		if !reflect.DeepEqual(p.wsSince, []string{"", "ep1-7"}) {
			t.Errorf("the subscribes asked for since %q, want one connection each, the second since ep1-7", p.wsSince)
		}
	})

	t.Run("sse", func(t *testing.T) {
		browsertest.Eval[bool](t, tb, `(() => {
			window.sseSub = herald.subscribe(['ctl.b'], () => {}, { transport: 'sse', minBackoff: 50, maxBackoff: 100 });
			return true;
		})()`)
		browsertest.WaitFor(t, tb, "a resumed stream", `window.sseSub.client === 'peer-sse-2'`)
		browsertest.Eval[bool](t, tb, `(() => { window.sseSub.close(); return true; })()`)
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.sseLast) < 2 || p.sseLast[0] != "" || p.sseLast[1] != startID {
			t.Errorf("the streams asked for Last-Event-ID %q, want none, then %q", p.sseLast, startID)
		}
	})
	browsertest.NoErrors(t, tb)
}
