package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

// TestWriteLinger: with Config.WriteLinger, an event reaches WebSocket and
// SSE subscribers no sooner than the linger after its publish (the writers
// wait for more before they write), and it does arrive.
func TestWriteLinger(t *testing.T) {
	const linger = server.MaxWriteLinger
	in := start(t, server.Config{WriteLinger: linger})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := dialWS(t, ctx, in)
	stream := openSSE(t, ctx, in, "")
	sse := make(chan string, 1)
	go readSSE(stream, func(_, head string) {
		select {
		case sse <- head:
		default:
		}
	})

	published := time.Now()
	if status, body := in.Post(t, "/v1/publish", `{"topic":"linger.a","data":1}`); status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, body)
	}
	_, msg, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"linger.a"`) {
		t.Fatalf("WebSocket: %s, %v; want the event", msg, err)
	}
	if d := time.Since(published); d < linger {
		t.Errorf("WebSocket: the event arrived %v after its publish, want no sooner than the linger, %v", d, linger)
	}
	select {
	case head := <-sse:
		if !strings.Contains(head, "linger.a") {
			t.Fatalf("SSE: %q, want the event", head)
		}
		if d := time.Since(published); d < linger {
			t.Errorf("SSE: the event arrived %v after its publish, want no sooner than the linger, %v", d, linger)
		}
	case <-ctx.Done():
		t.Fatal("SSE: no event")
	}
}
