package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/fossiltest"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// A server that redirects, here to the very same URL forever, gets one
// request: the 3xx is the answer, an error like any other, at once, for
// subscriptions over both transports and for API requests.
func TestRedirectRefused(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, r.URL.Path, http.StatusFound)
	}))
	t.Cleanup(srv.Close)
	check := func(what string, err error) {
		t.Helper()
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusFound || !strings.Contains(e.Message, "refused a redirect") {
			t.Fatalf("%s: %v, want the 302 as an *Error", what, err)
		}
		if n := hits.Swap(0); n != 1 {
			t.Fatalf("%s: %d requests, want 1", what, n)
		}
	}
	for _, tr := range transports {
		c := dial(t, srv.URL, Options{Transport: tr})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := c.Subscribe(ctx, []string{"a"}, nil)
		cancel()
		check("subscribe over "+tr, err)
	}
	_, err := dial(t, srv.URL, Options{}).Publish(testCtx(t), "a", "", 1)
	check("publish", err)
}

// X-API-Key, which net/http copies to any host a redirect names, goes to
// none but the server's: the client follows no redirect, and one that a
// CheckRedirect of the caller's follows to another host goes without it.
func TestAPIKeyStaysWithTheServer(t *testing.T) {
	var elsewhere, again atomic.Value
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Store(r.Header.Get("X-API-Key"))
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"e1-1"}`))
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/publish" {
			http.Redirect(w, r, "/v1/again", http.StatusTemporaryRedirect)
			return
		}
		again.Store(r.Header.Get("X-API-Key"))
		http.Redirect(w, r, other.URL+"/v1/publish", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	ctx := testCtx(t)

	// The client's own HTTP client, and a caller's without a policy.
	own := &http.Client{}
	t.Cleanup(own.CloseIdleConnections)
	for _, hc := range []*http.Client{nil, own} {
		if _, err := dial(t, srv.URL, Options{APIKey: "secret", HTTPClient: hc}).Publish(ctx, "a", "", 1); err == nil {
			t.Fatal("the redirect was followed")
		}
		if v := elsewhere.Load(); v != nil {
			t.Fatalf("the other host got a request (X-API-Key %q)", v)
		}
	}
	if own.CheckRedirect != nil {
		t.Error("the caller's http.Client was changed")
	}

	hc := &http.Client{CheckRedirect: func(_ *http.Request, via []*http.Request) error {
		if len(via) > 3 {
			return errors.New("too many redirects")
		}
		return nil
	}}
	t.Cleanup(hc.CloseIdleConnections)
	if _, err := dial(t, srv.URL, Options{APIKey: "secret", HTTPClient: hc}).Publish(ctx, "a", "", 1); err != nil {
		t.Fatalf("the caller's CheckRedirect: %v", err)
	}
	if v := again.Load(); v != "secret" {
		t.Errorf("a redirect to the same host took X-API-Key %q, want it", v)
	}
	if v := elsewhere.Load(); v != "" {
		t.Errorf("the other host got X-API-Key %q, want none", v)
	}
}

// hostile is a fake server for the tests of a broken or hostile one: the
// n-th subscriber connection (from 1, WebSocket or SSE) is confirmed
// (with "ok" or the response's headers), gets the envelopes script
// returns for it, then nothing until it ends.
type hostile struct {
	*httptest.Server
	conns atomic.Int64
}

func startHostile(t *testing.T, script func(n int64) [][]byte) *hostile {
	t.Helper()
	h := &hostile{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := h.conns.Add(1)
		envs := script(n)
		switch r.URL.Path {
		case "/v1/events":
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			for _, e := range envs {
				fmt.Fprintf(w, "event: board\ndata: %s\n\n", bytes.ReplaceAll(e, []byte("\n"), []byte("\ndata: ")))
			}
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case "/v1/ws":
			conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
			if err != nil {
				return
			}
			defer conn.CloseNow()
			ctx := context.Background()
			if _, _, err := conn.Read(ctx); err != nil { // the subscribe
				return
			}
			conn.Write(ctx, websocket.MessageText, []byte(`{"op":"ok","ref":"s","client":"c-`+strconv.FormatInt(n, 10)+`"}`))
			for _, e := range envs {
				conn.Write(ctx, websocket.MessageText, append([]byte(`{"op":"event",`), e[1:]...))
			}
			for {
				if _, _, err := conn.Read(ctx); err != nil {
					return
				}
			}
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

// stays fails t if cond stops holding within d: what a test of something
// that must not happen (a reconnect) waits for, having no event to wait on.
func stays(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if !cond() {
			t.Fatalf("%s did not hold for %v", what, d)
		}
	}
}

// logTo returns a logger writing to b, for tests that look for why a
// connection ended.
func logTo(b *heraldtest.Log) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// A server that takes the connection and never answers, or upgrades it
// and never confirms the subscribe, or answers an SSE request and then
// sends nothing, fails the attempt at the connect (or idle) timeout: the
// first connection's failure is Subscribe's error.
func TestHungServerFailsTheAttempt(t *testing.T) {
	never := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	cases := []struct {
		name, transport string
		h               http.Handler
		want            string
	}{
		{"no answer", "ws", never, "failed to have the subscription confirmed within"},
		{"no answer", "sse", never, "failed to have the subscription confirmed within"},
		{"no ok", "ws", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"herald.v1"}})
			if err != nil {
				return
			}
			defer conn.CloseNow()
			for {
				if _, _, err := conn.Read(context.Background()); err != nil {
					return
				}
			}
		}), "failed to have the subscription confirmed within"},
		{"headers, then nothing", "sse", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}), "failed to hear from the server for"},
	}
	for _, tc := range cases {
		t.Run(tc.name+" "+tc.transport, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(tc.h)
			t.Cleanup(srv.Close)
			c := dial(t, srv.URL, Options{Transport: tc.transport, ConnectTimeout: 300 * time.Millisecond, IdleTimeout: 400 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := c.Subscribe(ctx, []string{"a"}, nil)
			if !errors.Is(err, errHung) || !strings.Contains(err.Error(), tc.want) || ctx.Err() != nil {
				t.Fatalf("Subscribe: %v, want %q before the context's end", err, tc.want)
			}
		})
	}
}

// A connection whose server goes silent, TCP still up (the relay drops
// what the server sends), ends at the idle timeout; the attempts to
// reconnect, unanswered too, end at the connect timeout and are retried;
// once the server is heard again, the subscription resumes from its
// cursor: every event published meanwhile, once, in order.
func TestSilentServerResumes(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			// SSE heartbeats well within the idle timeout; WebSocket
			// pings (25 s) are not, and the client pings instead.
			node := start(t, server.Config{Heartbeat: 100 * time.Millisecond})
			r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{})
			ctx := testCtx(t)
			var attempts atomic.Int64
			var log heraldtest.Log
			sub := dial(t, r.URL(), Options{Transport: tr, IdleTimeout: time.Second, ConnectTimeout: 500 * time.Millisecond,
				Logger: logTo(&log), TokenFunc: func(context.Context) (string, error) {
					attempts.Add(1)
					return "", nil
				}})
			pub := dial(t, node.URL, Options{})
			s, err := sub.Subscribe(ctx, []string{"quiet"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pub.Publish(ctx, "quiet", "", 0); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s)
			// Keep-alives (and the client's pings) hold an idle
			// connection open: 3 idle timeouts, one connection.
			before := attempts.Load()
			stays(t, 3*time.Second, "one connection", func() bool { return attempts.Load() == before })

			r.Mute()
			for i := 1; i <= 5; i++ {
				if _, err := pub.Publish(ctx, "quiet", "", i); err != nil {
					t.Fatal(err)
				}
			}
			wait.For(t, 10*time.Second, "the silent connection to end and two attempts to time out", func() bool {
				return attempts.Load() >= before+3
			})
			for _, want := range []string{"failed to hear from the server for 1s", "failed to have the subscription confirmed within 500ms"} {
				if !strings.Contains(log.String(), want) {
					t.Errorf("the log does not say %q:\n%s", want, &log)
				}
			}
			r.Unmute()
			for i := 1; i <= 5; i++ {
				if e := nextEvent(t, s); string(e.Data) != strconv.Itoa(i) {
					t.Fatalf("got %s, want %d", e.Data, i)
				}
			}
			if _, err := pub.Publish(ctx, "quiet", "", "end"); err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); string(e.Data) != `"end"` {
				t.Fatalf("got %s after the 5 events, want \"end\"", e.Data)
			}
		})
	}
}

// A consumer that takes its time holds up the reader, and the connection
// meanwhile is not idle: it is not ended.
func TestSlowConsumerIsNotIdle(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{Heartbeat: 100 * time.Millisecond})
			ctx := testCtx(t)
			var attempts atomic.Int64
			sub := dial(t, node.URL, Options{Transport: tr, IdleTimeout: 400 * time.Millisecond, TokenFunc: func(context.Context) (string, error) {
				attempts.Add(1)
				return "", nil
			}})
			pub := dial(t, node.URL, Options{})
			s, err := sub.Subscribe(ctx, []string{"slow"}, &SubscribeOptions{Buffer: 1})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if _, err := pub.Publish(ctx, "slow", "", i); err != nil {
					t.Fatal(err)
				}
			}
			// The buffer holds one event, the reader the next: it waits.
			stays(t, 2*time.Second, "one connection", func() bool { return attempts.Load() == 1 })
			for i := range 3 {
				if e := nextEvent(t, s); string(e.Data) != strconv.Itoa(i) {
					t.Fatalf("got %s, want %d", e.Data, i)
				}
			}
			if n := attempts.Load(); n != 1 {
				t.Fatalf("%d connections, want 1", n)
			}
		})
	}
}

// deltaBomb returns a delta of a few kilobytes that turns the JSON string
// base ("xxx…x") into one of n times its characters: each copy is a few
// bytes.
func deltaBomb(base string, n int) string {
	inner := len(base) - 2
	size := 2 + n*inner
	d := fossiltest.AppendInt(nil, uint32(size))
	d = append(d, '\n')
	d = append(fossiltest.AppendInt(d, 1), "@0,"...)
	for range n {
		d = append(fossiltest.AppendInt(append(fossiltest.AppendInt(d, uint32(inner)), '@'), 1), ',')
	}
	d = append(fossiltest.AppendInt(append(fossiltest.AppendInt(d, 1), '@'), uint32(len(base)-1)), ',')
	out := make([]byte, 0, size)
	out = append(out, '"')
	for range n {
		out = append(out, base[1:len(base)-1]...)
	}
	out = append(out, '"')
	return string(append(fossiltest.AppendInt(d, fossiltest.Checksum(out)), ';'))
}

// A delta of 12 KB that would make 8 MB of data, far more than the
// client's largest message, is refused before it is applied: the
// connection ends with the error, and the next one goes on.
func TestDeltaBombRefused(t *testing.T) {
	base := `"` + strings.Repeat("x", 4000) + `"`
	bomb := deltaBomb(base, 2048)
	f := &frames{t: t}
	full := f.full("dash", "k", base)
	ds, _ := json.Marshal(bomb)
	withBomb := f.full("dash", "k", `"unused"`)
	i, j := bytes.Index(withBomb, []byte(`"data":`)), bytes.LastIndex(withBomb, []byte(`,"time":"`))
	withBomb = append(append(append(withBomb[:i:i], `"delta":`...), ds...), withBomb[j:]...)
	after := f.full("dash", "k", `"after"`)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			srv := startHostile(t, func(n int64) [][]byte {
				if n == 1 {
					return [][]byte{full, withBomb}
				}
				return [][]byte{after}
			})
			var log heraldtest.Log
			c := dial(t, srv.URL, Options{Transport: tr, MaxMessage: 64 << 10, Logger: logTo(&log)})
			s, err := c.Subscribe(testCtx(t), []string{"dash"}, &SubscribeOptions{Delta: true})
			if err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); string(e.Data) != base {
				t.Fatalf("first event: %.40s…", e.Data)
			}
			if e := nextEvent(t, s); string(e.Data) != `"after"` {
				t.Fatalf("second event: %d bytes of data %.40s…, want the next connection's", len(e.Data), e.Data)
			}
			if !strings.Contains(log.String(), fmt.Sprintf("it makes %d bytes, more than %d", 2+2048*4000, 64<<10)) {
				t.Errorf("the log does not tell the delta's refusal:\n%s", &log)
			}
		})
	}
}

// A state or presence answer of many tiny elements (a few bytes each, that
// each would take a hundred as an Event or a Member) is refused, in memory
// of the order of the answer's size.
func TestStateAndPresenceBounded(t *testing.T) {
	const size = 8 << 20
	answer := func(field, elem string, n int) []byte {
		b := []byte(`{"id":"e1-1","clients":1,"users":1,"` + field + `":[`)
		b = append(b, bytes.Repeat([]byte(elem+","), n-1)...)
		return append(b, elem+"]}"...)
	}
	cases := []struct {
		name, resource string
		body           []byte
		want           string
		maxAlloc       uint64
	}{
		{"state of empty objects", "state", answer("events", "{}", size/3), "event \"{}\"", 64 << 20},
		{"presence of numbers", "presence", answer("members", "1", size/2), "is not an object", 64 << 20},
		{"state of numbers", "state", answer("events", "1", size/2), "is not an object", 64 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write(tc.body)
			}))
			t.Cleanup(srv.Close)
			c := dial(t, srv.URL, Options{})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var err error
			if tc.resource == "state" {
				_, err = c.State(testCtx(t), "t")
			} else {
				_, err = c.Presence(testCtx(t), "t")
			}
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want an error saying %q", err, tc.want)
			}
			got := after.TotalAlloc - before.TotalAlloc
			if got > tc.maxAlloc {
				t.Fatalf("reading %d bytes allocated %d MiB, bound %d MiB", len(tc.body), got>>20, tc.maxAlloc>>20)
			}
			t.Logf("%d MiB read, %d MiB allocated", len(tc.body)>>20, got>>20)
		})
	}
}

// An array of more elements than any real state or presence holds is
// refused after maxItems of them, however small they are.
func TestEachObjectCounts(t *testing.T) {
	t.Parallel()
	arr := append([]byte("["), bytes.Repeat([]byte(`{},`), maxItems)...)
	arr = append(arr, "{}]"...)
	n := 0
	err := eachObject(arr, func([]byte) error { n++; return nil })
	if err == nil || n != maxItems || !strings.Contains(err.Error(), "more than 1048576 elements") {
		t.Fatalf("%d elements read, %v; want %d and an error", n, err, maxItems)
	}
	arr = append(arr[:1+3*(maxItems-1)], "{}]"...)
	n = 0
	if err := eachObject(arr, func([]byte) error { n++; return nil }); err != nil || n != maxItems {
		t.Fatalf("%d elements read, %v; want %d", n, err, maxItems)
	}
	for _, a := range []string{"", "null", "[]"} {
		if err := eachObject(json.RawMessage(a), func([]byte) error { n++; return nil }); err != nil {
			t.Fatalf("%q: %v", a, err)
		}
	}
	for _, a := range []string{"{}", `"x"`, "[1]", `[{},"x"]`, "[{}"} {
		if err := eachObject(json.RawMessage(a), func([]byte) error { return nil }); err == nil {
			t.Fatalf("%q accepted", a)
		}
	}
}

// An event whose data is not JSON, here made to forge a second envelope
// on a line of its own in Event.AppendJSON's output (herald sub's), is
// refused: the connection ends with the error, and the next one goes on.
func TestInvalidDataRefused(t *testing.T) {
	forged := []byte(`{"id":"e1-1","topic":"t","type":"m","data":1}` + "\n" +
		`{"id":"forged","topic":"t","type":"m","data":2,"time":"2026-12-06T13:00:00Z"}`)
	good := []byte(`{"id":"e1-2","topic":"t","type":"m","data":3,"time":"2026-12-06T13:00:00Z"}`)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			srv := startHostile(t, func(n int64) [][]byte {
				if n == 1 {
					return [][]byte{forged}
				}
				return [][]byte{good}
			})
			c := dial(t, srv.URL, Options{Transport: tr})
			s, err := c.Subscribe(testCtx(t), []string{"t"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			e := nextEvent(t, s)
			if line := e.AppendJSON(nil); e.ID != "e1-2" || !json.Valid(line) {
				t.Fatalf("got %q, want the next connection's event", line)
			}
		})
	}
}

// An error answer's message, kept in the error that gets logged, is cut
// to its bound however long the server made it.
func TestErrorMessageBounded(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"error":{"code":"forbidden","message":"%s"}}`, strings.Repeat("é", 1<<20))
	}))
	t.Cleanup(srv.Close)
	_, err := dial(t, srv.URL, Options{}).Publish(testCtx(t), "a", "", 1)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%v, want an *Error", err)
	}
	if e.Code != "forbidden" || len(e.Message) > maxErrorMessage || !utf8.ValidString(e.Message) || !strings.HasSuffix(e.Message, "é…") {
		t.Fatalf("%d bytes of message (%.40q…), want at most %d, cut at a character", len(e.Message), e.Message, maxErrorMessage)
	}
}

// AppendJSON writes one line: data on several lines, which Herald never
// sends but another server might, is compacted.
func TestAppendJSONOneLine(t *testing.T) {
	e := Event{ID: "e1-1", Topic: "t", Type: "m", Data: json.RawMessage("{\n  \"a\": [1,\r\n 2]\n}"), Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	if got, want := string(e.AppendJSON(nil)), `{"id":"e1-1","topic":"t","type":"m","data":{"a":[1,2]},"time":"2026-01-01T00:00:00Z"}`; got != want {
		t.Fatalf("AppendJSON = %q, want %q", got, want)
	}
}
