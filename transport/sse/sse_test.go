package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/felixge/httpsnoop"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// The wire format is checked byte for byte on a raw HTTP/1.1 connection.
func TestWireFormat(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	conn := rawGet(t, f.srv.Listener.Addr().String(), "/v1/events?topic=wire.*")
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("failed to read response head: %v", err)
	}
	defer resp.Body.Close()
	defer conn.Close() // first, or closing the body would drain the endless stream
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, want 200", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	// The body runs to the end of the connection: no length, no chunks.
	// (net/http reports "Connection: close" as Close and drops the header.)
	if !resp.Close || resp.ContentLength != -1 || len(resp.TransferEncoding) != 0 || resp.Header.Get("Date") == "" {
		t.Errorf("close %v, content length %d, transfer encoding %v, date %q: want a close-delimited body with a Date",
			resp.Close, resp.ContentLength, resp.TransferEncoding, resp.Header.Get("Date"))
	}
	first := make([]byte, len("retry: 2000\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("failed to read the retry hint: %v", err)
	}
	if string(first) != "retry: 2000\n\n" {
		t.Fatalf("stream starts with %q, want %q", first, "retry: 2000\n\n")
	}
	// Then the start block: the position before the first event, which a
	// client that is cut off before any event resumes from.
	start := "id: " + f.hub.Epoch() + "-0\n\n"
	got := make([]byte, len(start))
	if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != start {
		t.Fatalf("start block %q, %v; want %q", got, err, start)
	}

	// The response is open, so the subscription is live: a publish made now
	// must arrive. One batch of two events, the second with defaults.
	ms, err := f.hub.Publish(context.Background(),
		hub.Draft{Topic: "wire.a", Type: "order.created", Data: json.RawMessage(`{ "n": 1, "s": "x y" }`)},
		hub.Draft{Topic: "wire.b"},
	)
	if err != nil {
		t.Fatalf("failed to publish: %v", err)
	}
	want := expectFrame(ms[0]) + expectFrame(ms[1])
	got = make([]byte, len(want))
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("failed to read frames: %v (got %q)", err, got)
	}
	if string(got) != want {
		t.Fatalf("frames:\n%q\nwant\n%q", got, want)
	}
	// Layout: three lines and a blank one; the data line is the envelope.
	lines := strings.Split(string(got[:len(expectFrame(ms[0]))]), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[0], "id: ") || lines[1] != "event: order.created" ||
		!strings.HasPrefix(lines[2], "data: {") || lines[3] != "" || lines[4] != "" {
		t.Fatalf("frame layout %q", lines)
	}
	var env envelope
	if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[2], "data: ")), &env); err != nil {
		t.Fatalf("data line is not JSON: %v", err)
	}
	if env.ID != ms[0].ID.String() || strings.TrimPrefix(lines[0], "id: ") != env.ID {
		t.Errorf("id = %q (line %q), want %q", env.ID, lines[0], ms[0].ID)
	}
	if env.Topic != "wire.a" || env.Type != "order.created" || string(env.Data) != `{"n":1,"s":"x y"}` {
		t.Errorf("envelope = %+v", env)
	}
	if d := time.Since(env.Time); d < 0 || d > time.Minute {
		t.Errorf("time %v is not the publish time", env.Time)
	}
	var env2 envelope
	if err := json.Unmarshal(ms[1].Envelope(), &env2); err != nil || env2.Type != "message" || string(env2.Data) != "null" {
		t.Errorf("defaults: %+v, %v", env2, err)
	}
}

// Over HTTP/2 the stream works the same, without the connection header.
func TestHTTP2(t *testing.T) {
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/events", sse.New(sse.Options{Hub: h}))
	srv := httptest.NewUnstartedServer(mux)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	client := srv.Client()
	defer func() {
		h.Shutdown()
		client.CloseIdleConnections()
		srv.Close()
		_ = h.Close(context.Background())
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/events?topic=h2.x", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
		t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
	}
	if got := resp.Header.Get("Content-Type"); got != "text/event-stream" {
		t.Errorf("Content-Type = %q", got)
	}
	if _, ok := resp.Header["Connection"]; ok {
		t.Errorf("HTTP/2 response carries a Connection header")
	}
	br := bufio.NewReader(resp.Body)
	if fr, err := readFrame(br); err != nil || fr.Retry != "2000" {
		t.Fatalf("first frame %+v, %v", fr, err)
	}
	readStart(t, br)
	m := publish(t, h, "h2.x", "", `1`)
	fr, err := readFrame(br)
	if err != nil || fr.Raw != expectFrame(m) {
		t.Fatalf("frame %q, %v; want %q", fr.Raw, err, expectFrame(m))
	}
}

func TestInvalidRequests(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	many := strings.Repeat("topic=a&", sse.MaxPatterns) + "topic=a"
	cases := []struct{ name, query string }{
		{"no topic", ""},
		{"empty topic", "topic="},
		{"empty segment", "topic=a..b"},
		{"gt not last", "topic=a.%3E.b"},
		{"partial wildcard", "topic=a*"},
		{"partial gt", "topic=a.b%3E"},
		{"bad byte", "topic=a%20b"},
		{"one bad of two", "topic=ok.a&topic=bad..x"},
		{"cursor without topic", "last_event_id=abc-1"},
		{"too many patterns", many},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := f.get(context.Background(), f.srv.URL+"/v1/events?"+tc.query, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidPattern)
		})
	}
	t.Run("POST", func(t *testing.T) {
		resp, err := f.client.Post(f.url([]string{"a"}), "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		assertAPIError(t, resp, http.StatusMethodNotAllowed, apierror.MethodNotAllowed)
	})
	if n := sseClients(f.hub); n != 0 {
		t.Errorf("rejected requests left %d hub clients", n)
	}
}

func assertAPIError(t *testing.T, resp *http.Response, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("body is not a JSON error: %v", err)
	}
	if body.Error.Code != code || body.Error.Message == "" {
		t.Errorf("error = %+v, want code %q and a message", body.Error, code)
	}
}

// Several patterns matching one event deliver it once, in cursor order.
func TestOverlappingPatterns(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	s := f.open([]string{"multi.*", "multi.>", "multi.a", "*.a"}, nil)
	var want []*hub.Message
	want = append(want, publish(t, f.hub, "multi.a", "", `1`)) // all four patterns
	want = append(want, publish(t, f.hub, "multi.b", "", `2`)) // two
	publish(t, f.hub, "other.b", "", `0`)                      // none
	want = append(want, publish(t, f.hub, "multi.a.x", "", `3`))
	want = append(want, publish(t, f.hub, "other.a", "", `4`))
	want = append(want, publish(t, f.hub, "multi.end", "", `5`))
	var last uint64
	for i, m := range want {
		fr := s.nextEvent()
		if fr.Raw != expectFrame(m) {
			t.Fatalf("event %d = %q, want %q", i, fr.Raw, expectFrame(m))
		}
		if seq := seqOf(t, fr.ID); seq <= last {
			t.Fatalf("cursor %d after %d", seq, last)
		} else {
			last = seq
		}
	}
}

// Resuming replays exactly the retained events after the cursor, then live
// ones; the Last-Event-ID header wins over the query parameter.
func TestResume(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	var ms []*hub.Message
	for i := range 10 {
		ms = append(ms, publish(t, f.hub, "res.a", "", string(rune('0'+i))))
	}
	publish(t, f.hub, "other.res", "", `0`) // retained, not subscribed
	cases := []struct {
		name   string
		header string
		query  string
		from   int // index of the first replayed event
	}{
		{"header", ms[2].ID.String(), "", 3},
		{"query", "", ms[5].ID.String(), 6},
		{"header wins", ms[1].ID.String(), ms[7].ID.String(), 2},
		{"header wins backwards", ms[8].ID.String(), ms[0].ID.String(), 9},
		{"last one", ms[9].ID.String(), "", 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Last-Event-ID", tc.header)
			}
			var extra []string
			if tc.query != "" {
				extra = []string{"last_event_id", tc.query}
			}
			s := f.open([]string{"res.*"}, hdr, extra...)
			for _, m := range ms[tc.from:] {
				if fr := s.nextEvent(); fr.Raw != expectFrame(m) {
					t.Fatalf("replayed %q, want %q", fr.Raw, expectFrame(m))
				}
			}
			live := publish(t, f.hub, "res.a", "live", `"live"`)
			if fr := s.nextEvent(); fr.Raw != expectFrame(live) {
				t.Fatalf("after replay got %q, want the live event %q", fr.Raw, expectFrame(live))
			}
			ms = append(ms, live)
		})
	}
}

// An unusable cursor opens the stream with herald.reset, whose id is the
// head; live events follow.
func TestReset(t *testing.T) {
	f := newFixture(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10})}, sse.Options{})
	var ms []*hub.Message
	for i := range 50 {
		ms = append(ms, publish(t, f.hub, "rg.a", "", string(rune('0'+i%10))))
	}
	other, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	foreign := publish(t, other, "rg.a", "", `1`).ID.String()
	if err := other.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	future := hub.Cursor{Epoch: f.hub.Epoch(), Seq: 1 << 40}.String()

	cases := []struct {
		name, header, query, reason string
	}{
		{"history gone", ms[0].ID.String(), "", hub.ReasonHistoryGone},
		{"history gone by query", "", ms[38].ID.String(), hub.ReasonHistoryGone},
		{"other epoch", foreign, "", hub.ReasonEpochChanged},
		{"malformed", "not a cursor!", "", hub.ReasonUnknownCursor},
		{"malformed by query", "", "%%%", hub.ReasonUnknownCursor},
		{"future", future, "", hub.ReasonUnknownCursor},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Last-Event-ID", tc.header)
			}
			var extra []string
			if tc.query != "" {
				extra = []string{"last_event_id", tc.query}
			}
			head := ms[len(ms)-1].ID.String()
			s := f.open([]string{"rg.*", "rg.a"}, hdr, extra...)
			fr := s.nextEvent()
			if fr.Event != "herald.reset" || fr.ID != head {
				t.Fatalf("first event %q, want herald.reset with id %s", fr.Raw, head)
			}
			var rd resetData
			if err := json.Unmarshal([]byte(fr.Data), &rd); err != nil {
				t.Fatalf("reset data %q: %v", fr.Data, err)
			}
			if rd.Reason != tc.reason || strings.Join(rd.Topics, ",") != "rg.*,rg.a" {
				t.Fatalf("reset data %+v, want reason %s and topics [rg.* rg.a]", rd, tc.reason)
			}
			live := publish(t, f.hub, "rg.a", "", `"live"`)
			ms = append(ms, live)
			if fr := s.nextEvent(); fr.Raw != expectFrame(live) {
				t.Fatalf("after reset got %q, want %q", fr.Raw, expectFrame(live))
			}
			// What a browser does next: reconnect with the reset's id. It
			// resumes without another reset.
			s.close()
			hdr.Set("Last-Event-ID", head)
			s2 := f.open([]string{"rg.*", "rg.a"}, hdr)
			if fr := s2.nextEvent(); fr.Raw != expectFrame(live) {
				t.Fatalf("resuming from the reset id got %q, want %q", fr.Raw, expectFrame(live))
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{Heartbeat: 50 * time.Millisecond, Retry: 1500 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := f.get(ctx, f.url([]string{"hb"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if fr, err := readFrame(br); err != nil || fr.Raw != "retry: 1500\n\n" {
		t.Fatalf("first frame %q, %v", fr.Raw, err)
	}
	readStart(t, br)
	start := time.Now()
	fr, err := readFrame(br)
	if err != nil || fr.Raw != ": ping\n\n" {
		t.Fatalf("frame %q, %v; want a ping comment", fr.Raw, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("first ping after %v", d)
	}
	// Pings keep coming while idle.
	for range 3 {
		if fr, err := readFrame(br); err != nil || fr.Comment != "ping" {
			t.Fatalf("frame %q, %v; want a ping comment", fr.Raw, err)
		}
	}
}

// TestIdleStreamsPark opens streams and lets them idle: their writers park,
// leaving one goroutine per stream, and the streams still get heartbeats
// and events, which start a writer again.
func TestIdleStreamsPark(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{Heartbeat: 150 * time.Millisecond})
	sse.SetParkAfter(f.sse, 20*time.Millisecond)
	base := runtime.NumGoroutine()
	const n = 20
	conns := make([]net.Conn, n)
	brs := make([]*bufio.Reader, n)
	for i := range conns {
		conns[i] = rawGet(t, f.srv.Listener.Addr().String(), "/v1/events?topic=park.>")
		_ = conns[i].SetDeadline(time.Now().Add(20 * time.Second))
		brs[i] = bufio.NewReader(conns[i])
		resp, err := http.ReadResponse(brs[i], nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream %d: %v %v", i, resp, err)
		}
		if fr, err := readFrame(brs[i]); err != nil || fr.Retry == "" {
			t.Fatalf("stream %d: first frame %q, %v", i, fr.Raw, err)
		}
		readStart(t, brs[i])
	}
	// Each stream keeps its reader; its writer has parked. (These clients
	// are raw sockets, with no goroutines of their own.)
	wait.For(t, 10*time.Second, "idle streams to park their writers", func() bool {
		return runtime.NumGoroutine()-base <= n+2
	})
	// Heartbeats restart the writers, which park again.
	for i, br := range brs {
		for range 2 {
			if fr, err := readFrame(br); err != nil || fr.Comment != "ping" {
				t.Fatalf("stream %d: frame %q, %v; want a ping", i, fr.Raw, err)
			}
		}
	}
	ms, err := f.hub.Publish(context.Background(), hub.Draft{Topic: "park.a", Data: json.RawMessage(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	for i, br := range brs {
		for {
			fr, err := readFrame(br)
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if fr.Comment == "ping" {
				continue
			}
			if fr.ID != ms[0].ID.String() {
				t.Fatalf("stream %d: frame %q, want the event %s", i, fr.Raw, ms[0].ID)
			}
			break
		}
	}
	// The peer leaving ends a parked stream promptly.
	wait.For(t, 10*time.Second, "writers to park again", func() bool {
		return runtime.NumGoroutine()-base <= n+2
	})
	for _, c := range conns {
		c.Close()
	}
	wait.For(t, 10*time.Second, "closed streams to end", func() bool { return sseClients(f.hub) == 0 })
}

// hub.Shutdown ends every open stream cleanly; new streams get 503.
func TestShutdown(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	var ss []*stream
	for range 3 {
		ss = append(ss, f.open([]string{"sd.>"}, nil))
	}
	wait.For(t, 5*time.Second, "3 sse clients", func() bool { return sseClients(f.hub) == 3 })
	start := time.Now()
	f.hub.Shutdown()
	for i, s := range ss {
		for {
			fr, err := readFrame(s.br)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("stream %d: %v, want a clean EOF", i, err)
			}
			if fr.Event != "" {
				t.Fatalf("stream %d: unexpected event %q", i, fr.Raw)
			}
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("streams took %v to end", d)
	}
	wait.For(t, 5*time.Second, "no sse clients", func() bool { return sseClients(f.hub) == 0 })

	resp, err := f.get(context.Background(), f.url([]string{"sd.>"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	assertAPIError(t, resp, http.StatusServiceUnavailable, apierror.Unavailable)
}

// A middleware wrapper must keep Flush reachable: httpsnoop's does; one that
// hides it gets a JSON 500 instead of a stream that never flushes.
func TestWrappedResponseWriter(t *testing.T) {
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	handler := sse.New(sse.Options{Hub: h, Logger: slog.New(slog.DiscardHandler)})
	mux := http.NewServeMux()
	mux.Handle("/snoop/v1/events", http.StripPrefix("/snoop", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(httpsnoop.Wrap(w, httpsnoop.Hooks{}), r)
	})))
	mux.Handle("/hide/v1/events", http.StripPrefix("/hide", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(struct{ http.ResponseWriter }{w}, r)
	})))
	srv := httptest.NewServer(mux)
	client := srv.Client()
	defer func() {
		h.Shutdown()
		client.CloseIdleConnections()
		srv.Close()
		_ = h.Close(context.Background())
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/snoop/v1/events?topic=wrap", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if fr, err := readFrame(br); err != nil || fr.Retry != "2000" {
		t.Fatalf("through httpsnoop: first frame %q, %v", fr.Raw, err)
	}
	readStart(t, br)
	m := publish(t, h, "wrap", "", "1")
	if fr, err := readFrame(br); err != nil || fr.Raw != expectFrame(m) {
		t.Fatalf("through httpsnoop: %q, %v", fr.Raw, err)
	}

	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/hide/v1/events?topic=wrap", nil)
	resp2, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	assertAPIError(t, resp2, http.StatusInternalServerError, apierror.Internal)
	if n := sseClients(h); n != 1 {
		t.Errorf("%d sse clients, want only the httpsnoop one", n)
	}
}

// A burst goes out in few writes, each followed by one flush, rather than a
// write per event.
func TestBurstIsCoalesced(t *testing.T) {
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var writes, flushes atomic.Int64
	handler := sse.New(sse.Options{Hub: h})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/events", func(w http.ResponseWriter, r *http.Request) {
		handler.ServeHTTP(httpsnoop.Wrap(w, httpsnoop.Hooks{
			Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
				return func(b []byte) (int, error) { writes.Add(1); return next(b) }
			},
			Flush: func(next httpsnoop.FlushFunc) httpsnoop.FlushFunc {
				return func() { flushes.Add(1); next() }
			},
		}), r)
	})
	srv := httptest.NewServer(mux)
	client := srv.Client()
	defer func() {
		h.Shutdown()
		client.CloseIdleConnections()
		srv.Close()
		_ = h.Close(context.Background())
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v1/events?topic=burst", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if _, err := readFrame(br); err != nil {
		t.Fatal(err)
	}
	readStart(t, br)

	const n = 500
	drafts := make([]hub.Draft, n)
	for i := range drafts {
		drafts[i] = hub.Draft{Topic: "burst", Data: json.RawMessage(`{"payload":"some bytes"}`)}
	}
	ms, err := h.Publish(ctx, drafts...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if fr, err := readFrame(br); err != nil || fr.Raw != expectFrame(ms[i]) {
			t.Fatalf("event %d: %q, %v", i, fr.Raw, err)
		}
	}
	// A large write reaches the client before the handler flushes.
	wait.For(t, 5*time.Second, "one flush per write", func() bool { return flushes.Load() == writes.Load() })
	w := writes.Load() - 1 // less the retry hint
	t.Logf("%d events in %d writes", n, w)
	if w > n/10 {
		t.Errorf("%d writes for a burst of %d events: not coalesced", w, n)
	}
}

// TestLargeEventFrames: an event large enough to be written straight from
// the shared message, between small ones of the same batch, reaches the
// client byte for byte, in order.
func TestLargeEventFrames(t *testing.T) {
	f := newFixture(t, hub.Options{QueueBytes: 1 << 20}, sse.Options{})
	conn := rawGet(t, f.srv.Listener.Addr().String(), "/v1/events?topic=large.*")
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("response %v, %v", resp, err)
	}
	if line, err := br.ReadString('\n'); err != nil || line != "retry: 2000\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	readStart(t, br)
	large := `"` + strings.Repeat("L", 200<<10) + `"`
	ms, err := f.hub.Publish(context.Background(),
		hub.Draft{Topic: "large.a", Data: json.RawMessage(`1`)},
		hub.Draft{Topic: "large.b", Data: json.RawMessage(large)},
		hub.Draft{Topic: "large.c", Data: json.RawMessage(large)},
		hub.Draft{Topic: "large.d", Data: json.RawMessage(`2`)},
	)
	if err != nil {
		t.Fatal(err)
	}
	var want string
	for _, m := range ms {
		want += expectFrame(m)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("failed to read frames: %v", err)
	}
	if string(got) != want {
		t.Fatalf("frames differ from the events' frames (%d bytes, want %d)", len(got), len(want))
	}
}
