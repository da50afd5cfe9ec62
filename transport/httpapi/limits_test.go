package httpapi_test

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/limit"
)

// TestPublishAndActionRates exhausts the publish bucket over HTTP and
// checks 429 with Retry-After, that a WebSocket publish from the same
// caller shares the bucket, and the same for actions.
func TestPublishAndActionRates(t *testing.T) {
	s := newServer(t, serverOptions{
		publishRates: limit.NewRates(1, 5), actionRates: limit.NewRates(1, 2), actions: &action.Options{Echo: true},
	})
	for i := range 5 {
		if r := s.publish(t, `{"topic":"rate.t","data":`+strconv.Itoa(i)+`}`); r.status != http.StatusOK {
			t.Fatalf("publish %d within the burst: %d %s", i, r.status, r.body)
		}
	}
	r := s.publish(t, `{"topic":"rate.t","data":5}`)
	if r.status != http.StatusTooManyRequests || errCode(r.body) != "rate_limited" {
		t.Fatalf("past the burst: %d %s, want 429 rate_limited", r.status, r.body)
	}
	if ra, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || ra < 1 {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	w := s.dialWS(t)
	w.send(t, `{"op":"publish","ref":1,"topic":"rate.t","data":1}`)
	if m := w.recv(t); string(m["op"]) != `"error"` || !strings.Contains(string(m["error"]), "rate_limited") {
		t.Errorf("WebSocket publish from the same address: %v", m)
	}
	for i := range 2 {
		if r := s.do(t, http.MethodPost, "/v1/actions", "application/json", `{"type":"echo","topic":"rate.a","payload":1}`); r.status != http.StatusAccepted {
			t.Fatalf("action %d: %d %s", i, r.status, r.body)
		}
	}
	if r := s.do(t, http.MethodPost, "/v1/actions", "application/json", `{"type":"echo","topic":"rate.a","payload":1}`); r.status != http.StatusTooManyRequests {
		t.Errorf("third action: %d %s, want 429", r.status, r.body)
	}
	// The bucket refills: one token a second.
	wait.For(t, 5*time.Second, "the publish bucket to refill", func() bool {
		return s.publish(t, `{"topic":"rate.t","data":9}`).status == http.StatusOK
	})
}

// TestConnectionLimits fills the server's connection budget with SSE and
// WebSocket clients: the next is refused with 503, and taken again once one
// has gone. A per-address budget refuses with 429.
func TestConnectionLimits(t *testing.T) {
	s := newServer(t, serverOptions{conns: limit.NewConns(2, 0)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	openSSE := func(ctx context.Context) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?topic=lim.t", nil)
		return s.client.Do(req)
	}
	sseCtx, sseCancel := context.WithCancel(ctx)
	first, err := openSSE(sseCtx)
	if err != nil || first.StatusCode != http.StatusOK {
		t.Fatalf("first stream: %v %v", first, err)
	}
	ws1 := s.dialWS(t)
	_ = ws1
	third, err := openSSE(ctx)
	if err != nil {
		t.Fatal(err)
	}
	third.Body.Close()
	if third.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third connection (SSE): %d, want 503", third.StatusCode)
	}
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws", &websocket.DialOptions{HTTPClient: s.client})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("third connection (WebSocket): %v, want a 503 handshake", err)
	}
	sseCancel()
	first.Body.Close()
	wait.For(t, 5*time.Second, "a slot after a stream ended", func() bool {
		r, err := openSSE(ctx)
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})

	perIP := newServer(t, serverOptions{conns: limit.NewConns(0, 1)})
	one := perIP.dialWS(t)
	_ = one
	_, resp, err = websocket.Dial(ctx, "ws"+strings.TrimPrefix(perIP.url, "http")+"/v1/ws", &websocket.DialOptions{HTTPClient: perIP.client})
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second connection from one address: %v, want 429", err)
	}
}
