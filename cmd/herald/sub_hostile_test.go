package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// TestSubRefusesRedirect: a server that redirects (here to the same URL,
// forever) gets one request; the 3xx ends sub at once with exit 1, on
// both transports.
func TestSubRefusesRedirect(t *testing.T) {
	var hits atomic.Int64
	ts := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	for _, tr := range transports {
		s := startSub(t, "--url", ts, "--transport", tr, "--topic", "a", "--token", "tok.en")
		var stderr bytes.Buffer
		if got := exitStatus(s.result(t), &stderr); got != 1 || !strings.Contains(stderr.String(), "302") {
			t.Errorf("%s: exit status %d, error %q; want 1 and the 302", tr, got, &stderr)
		}
		if n := hits.Swap(0); n != 1 {
			t.Errorf("%s: %d requests, want 1", tr, n)
		}
	}
}

// TestSubPrintsOnlyEnvelopes: an event whose data is not JSON, made to
// put a forged envelope on a line of its own, is not printed: every line
// sub prints is one envelope, the next connection's event.
func TestSubPrintsOnlyEnvelopes(t *testing.T) {
	forged := `{"id":"e1-1","topic":"t","type":"m","data":1}` + "\n" +
		`{"id":"forged","topic":"t","type":"m","data":2,"time":"2026-12-06T13:00:00Z"}`
	good := `{"id":"e1-2","topic":"t","type":"m","data":3,"time":"2026-12-06T13:00:00Z"}`
	var conns atomic.Int64
	ts := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		env := good
		if conns.Add(1) == 1 {
			env = forged
		}
		switch r.URL.Path {
		case "/v1/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprintf(w, "event: m\ndata: %s\n\n", strings.ReplaceAll(env, "\n", "\ndata: "))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/v1/ws":
			conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
			if err != nil {
				return
			}
			defer conn.CloseNow()
			ctx := context.Background()
			if _, _, err := conn.Read(ctx); err != nil {
				return
			}
			conn.Write(ctx, websocket.MessageText, []byte(`{"op":"ok","ref":"s","client":"c-1"}`))
			conn.Write(ctx, websocket.MessageText, []byte(`{"op":"event",`+env[1:]))
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		}
	}))
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			conns.Store(0)
			s := startSub(t, "--url", ts, "--transport", tr, "--topic", "t")
			s.waitLines(t, 1)
			if err := s.stop(t); err != nil {
				t.Fatal(err)
			}
			lines := s.lines()
			for _, l := range lines {
				if !json.Valid([]byte(l)) || strings.Contains(l, "forged") {
					t.Errorf("printed %q", l)
				}
			}
			if len(lines) != 1 || !strings.HasPrefix(lines[0], `{"id":"e1-2",`) {
				t.Errorf("printed %q, want the second connection's event", lines)
			}
		})
	}
}

// TestSubConnectTimeout: a server that takes the request and never answers
// fails sub's first attempt at --connect-timeout (exit 1, saying so), on
// both transports, rather than hold it for ever.
func TestSubConnectTimeout(t *testing.T) {
	ts := httptestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	for _, tr := range transports {
		s := startSub(t, "--url", ts, "--transport", tr, "--topic", "a", "--connect-timeout", "300ms")
		var stderr bytes.Buffer
		if got := exitStatus(s.result(t), &stderr); got != 1 || !strings.Contains(stderr.String(), "confirmed within 300ms") {
			t.Errorf("%s: exit status %d, error %q; want 1 and the connect timeout", tr, got, &stderr)
		}
	}
	for _, bad := range []string{"--connect-timeout", "--idle-timeout"} {
		s := startSub(t, "--url", ts, "--topic", "a", bad, "0s")
		var stderr bytes.Buffer
		if got := exitStatus(s.result(t), &stderr); got != 2 || !strings.Contains(stderr.String(), "must be positive") {
			t.Errorf("%s 0s: exit status %d, error %q; want 2", bad, got, &stderr)
		}
	}
}
