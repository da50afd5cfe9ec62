package bench

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
)

// testServer is a real Herald server: hub, SSE and WebSocket handlers and
// the HTTP API on one listener, shut down in the order the binary uses.
type testServer struct {
	hub *hub.Hub
	srv *httptest.Server
	url string
}

type serverOptions struct {
	ws  ws.Options
	tls bool
}

func newTestServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	h, err := hub.New(hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 100000})})
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	o.ws.Hub = h
	wsH := ws.New(o.ws)
	sseH := sse.New(sse.Options{Hub: h})
	router := httpapi.NewRouter(httpapi.Config{Hub: h, SSE: sseH, WS: wsH})
	srv := httptest.NewUnstartedServer(router)
	if o.tls {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(func() {
		h.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Close()
		if err := sseH.Wait(ctx); err != nil {
			t.Errorf("sse handler Wait: %v", err)
		}
		if err := wsH.Wait(ctx); err != nil {
			t.Errorf("ws handler Wait: %v", err)
		}
		if err := h.Close(ctx); err != nil {
			t.Errorf("hub Close: %v", err)
		}
	})
	return &testServer{hub: h, srv: srv, url: srv.URL}
}
