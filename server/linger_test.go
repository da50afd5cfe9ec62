package server_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/server"
)

// TestWriteLinger: with Config.WriteLinger, an event that comes right after
// a write to a WebSocket or an SSE stream reaches it no sooner than the
// linger after its publish (the writer waits for more before it writes),
// and it does arrive.
func TestWriteLinger(t *testing.T) {
	const linger = server.MaxWriteLinger
	in := start(t, server.Config{WriteLinger: linger})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func(data string) time.Time {
		t.Helper()
		at := time.Now()
		if status, body := in.Post(t, "/v1/publish", `{"topic":"linger.a","data":`+data+`}`); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
		return at
	}

	ws := dialWS(t, ctx, in)
	readWS := func(data string) {
		t.Helper()
		_, msg, err := ws.Read(ctx)
		if err != nil || !strings.Contains(string(msg), `"data":`+data) {
			t.Fatalf("WebSocket: %s, %v; want the event %s", msg, err, data)
		}
	}
	publish(`1`)
	readWS(`1`)
	published := publish(`2`)
	readWS(`2`)
	if d := time.Since(published); d < linger {
		t.Errorf("WebSocket: an event right after a write arrived %v after its publish, want no sooner than the linger, %v", d, linger)
	}

	sse := make(chan string, 4)
	go readSSE(openSSE(t, ctx, in, ""), func(_, head string) { sse <- head })
	readSSE := func(data string) {
		t.Helper()
		select {
		case head := <-sse:
			if !strings.Contains(head, `"data":`+data) {
				t.Fatalf("SSE: %q, want the event %s", head, data)
			}
		case <-ctx.Done():
			t.Fatalf("SSE: no event %s", data)
		}
	}
	publish(`3`)
	readSSE(`3`)
	published = publish(`4`)
	readSSE(`4`)
	if d := time.Since(published); d < linger {
		t.Errorf("SSE: an event right after a write arrived %v after its publish, want no sooner than the linger, %v", d, linger)
	}
}
