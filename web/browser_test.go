package web_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/browsertest"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
	"github.com/heraldpush/herald/web"
)

// The browser tests drive a real headless Chromium against a real Herald on
// 127.0.0.1. They need a Chromium (or Chrome) binary: .ci/run installs
// Debian's. Without one they are skipped, except under CI, where that fails.

// stack is a whole Herald: hub, actions, both transports and the HTTP API
// with the browser files, plus /test.html, a blank page that loads herald.js.
type stack struct {
	hub  *hub.Hub
	srv  *httptest.Server
	url  string
	stop func() // shuts it down, as the binary does; later calls do nothing
}

const testPage = `<!doctype html><meta charset="utf-8"><title>herald.js test</title><link rel="icon" href="data:,">
<script type="module">
import * as herald from '/herald.js';
window.herald = herald;
window.heraldLoaded = true;
</script>`

func newStack(t *testing.T) *stack { return newStackOn(t, nil, nil) }

// newStackCORS is newStack with pages from these origins allowed, over
// HTTP (CORS) and WebSocket, as herald serve --cors-origins does.
func newStackCORS(t *testing.T, origins []string) *stack { return newStackOn(t, nil, origins) }

// newStackOn is newStackCORS serving on ln (nil: a new random port).
func newStackOn(t *testing.T, ln net.Listener, origins []string) *stack {
	t.Helper()
	h, err := hub.New(hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10000})})
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	st := memstore.New(memstore.Options{})
	svc, err := action.New(action.Options{Hub: h, Store: st, Echo: true})
	if err != nil {
		t.Fatalf("action.New: %v", err)
	}
	svc.Handle("shop.buy", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		return nil, &action.Failure{Code: "out_of_stock", Message: "no milk left"}
	}))
	sseH := sse.New(sse.Options{Hub: h})
	wsH := ws.New(ws.Options{Hub: h, Actions: svc, AllowedOrigins: origins})
	router := httpapi.NewRouter(httpapi.Config{
		Hub: h, SSE: sseH, WS: wsH, Actions: svc,
		Client: web.JS(), Dashboard: web.Dashboard(), DashboardPaths: web.DashboardPaths,
		CORSOrigins: origins,
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/test.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(testPage))
	})
	mux.Handle("/", router)
	srv := httptest.NewUnstartedServer(mux)
	if ln != nil {
		srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			h.Shutdown()
			srv.Close()
			if err := sseH.Wait(ctx); err != nil {
				t.Errorf("sse Wait: %v", err)
			}
			if err := wsH.Wait(ctx); err != nil {
				t.Errorf("ws Wait: %v", err)
			}
			if err := svc.Shutdown(ctx); err != nil {
				t.Errorf("actions Shutdown: %v", err)
			}
			if err := h.Close(ctx); err != nil {
				t.Errorf("hub Close: %v", err)
			}
			st.Close()
		})
	}
	t.Cleanup(stop)
	return &stack{hub: h, srv: srv, url: srv.URL, stop: stop}
}

func (s *stack) publish(t *testing.T, topic, typ string, data any) {
	t.Helper()
	b, _ := json.Marshal(data)
	if _, err := s.hub.Publish(context.Background(), hub.Draft{Topic: topic, Type: typ, Data: b}); err != nil {
		t.Fatalf("publish: %v", err)
	}
}

// openTestPage loads /test.html from base and waits for herald.js.
func openTestPage(t *testing.T, tb *browsertest.Tab, base string) {
	t.Helper()
	tb.Do(t, chromedp.Navigate(base+"/test.html"))
	browsertest.WaitFor(t, tb, "herald.js to load", "window.heraldLoaded === true")
}
