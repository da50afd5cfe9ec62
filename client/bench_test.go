package client

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
)

// benchData is the data of the benchmarks' events: a small JSON object.
const benchData = `{"order":4711,"status":"shipped","items":3,"note":"left at the door"}`

// appendBenchEnvelope appends the envelope of the benchmarks' n-th event,
// in the server's layout.
func appendBenchEnvelope(b []byte, n uint64) []byte {
	b = append(b, `{"id":"benchepoch-`...)
	b = strconv.AppendUint(b, n, 10)
	b = append(b, `","topic":"orders.eu","type":"order.updated","data":`...)
	b = append(b, benchData...)
	return append(b, `,"time":"2026-12-06T13:20:07.123456789Z"}`...)
}

// benchSubscription is a subscription without a goroutine: the benchmark
// drives its reader and takes its messages.
func benchSubscription() *Subscription {
	return &Subscription{
		c:    &Client{log: slog.New(slog.DiscardHandler), opts: Options{MaxMessage: DefaultMaxMessage}},
		msgs: make(chan Message, 1),
	}
}

// sseStream is an endless text/event-stream of distinct events, made in
// place: reading it allocates nothing.
type sseStream struct {
	n       uint64
	buf     []byte
	pending []byte
}

func (r *sseStream) Read(p []byte) (int, error) {
	if len(r.pending) == 0 {
		r.n++
		b := append(r.buf[:0], "id: benchepoch-"...)
		b = strconv.AppendUint(b, r.n, 10)
		b = append(b, "\nevent: order.updated\ndata: "...)
		b = appendBenchEnvelope(b, r.n)
		b = append(b, "\n\n"...)
		r.buf, r.pending = b, b
	}
	n := copy(p, r.pending)
	r.pending = r.pending[n:]
	return n, nil
}

// BenchmarkSSERead reads events off an SSE stream and delivers them: the
// reader allocates nothing per event beyond the event itself (its one
// copy of the envelope, whose bytes its strings and Data share).
func BenchmarkSSERead(b *testing.B) {
	s := benchSubscription()
	r := newSSEReader(&sseStream{}, DefaultMaxMessage)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		typ, id, data, err := r.next()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.sseEvent(ctx, typ, id, data); err != nil {
			b.Fatal(err)
		}
		if m := <-s.msgs; m.Kind != KindEvent {
			b.Fatalf("got %v", m.Kind)
		}
	}
}

// BenchmarkWSRead reads events off a WebSocket (a real one, over
// loopback, from a server that writes pre-encoded frames) and delivers
// them: like the SSE reader, it allocates nothing per event beyond the
// event itself.
func BenchmarkWSRead(b *testing.B) {
	s := startWSReader(b)
	b.ReportAllocs()
	for b.Loop() {
		if m := <-s.msgs; m.Kind != KindEvent {
			b.Fatalf("got %v", m.Kind)
		}
	}
	b.StopTimer()
}

// startWSReader runs a subscription's WebSocket reader against a server
// that writes events as fast as they are read, until the test ends, and
// returns the subscription once its first event has come.
func startWSReader(tb testing.TB) *Subscription {
	tb.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		bw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Protocol: herald.v1\r\nSec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
		// The ok of the subscribe, then events until the client leaves.
		bw.Write(appendFrame(nil, []byte(`{"op":"ok","ref":"s","client":"bench-1"}`)))
		var payload, frame []byte
		for n := uint64(1); ; n++ {
			// {"op":"event", then the envelope's fields: the server's frame.
			payload = appendBenchEnvelope(append(payload[:0], `{"op":"event"`...), n)
			payload[len(`{"op":"event"`)] = ','
			frame = appendFrame(frame[:0], payload)
			if _, err := bw.Write(frame); err != nil {
				return
			}
			if bw.Writer.Buffered() > 16<<10 && bw.Flush() != nil {
				return
			}
		}
	}))
	tb.Cleanup(srv.Close)
	c, err := Dial(context.Background(), srv.URL, &Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	s := &Subscription{c: c, patterns: []string{"orders.>"}, msgs: make(chan Message, 1), firstUp: make(chan error, 1), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = s.sessionWS(ctx)
	}()
	// Cleanups run last first: the reader ends before the client closes
	// and the server stops.
	tb.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			tb.Error("the reader did not end")
		}
	})
	select {
	case m := <-s.msgs:
		if m.Kind != KindEvent {
			tb.Fatalf("got %v", m.Kind)
		}
	case <-time.After(10 * time.Second):
		tb.Fatal("no first event within 10s")
	}
	return s
}

// appendFrame appends an unmasked, final text frame carrying p.
func appendFrame(b, p []byte) []byte {
	switch {
	case len(p) < 126:
		b = append(b, 0x81, byte(len(p)))
	case len(p) < 1<<16:
		b = append(b, 0x81, 126, byte(len(p)>>8), byte(len(p)))
	default:
		panic("frame too long")
	}
	return append(b, p...)
}

// BenchmarkParseEnvelope reads one envelope in the server's layout (the
// reader's per-event work, without the stream): with the benchmarks'
// small object as data, and with a dashboard of about 2 KiB, so that what
// parsing costs per byte of data shows.
func BenchmarkParseEnvelope(b *testing.B) {
	for _, c := range []struct{ name, data string }{{"small", benchData}, {"dashboard", payload.Dashboard(1)}} {
		b.Run(c.name, func(b *testing.B) {
			env := hub.Event{ID: hub.Cursor{Epoch: "benchepoch", Seq: 4711}, Topic: "orders.eu", Type: "order.updated",
				Data: json.RawMessage(c.data), Time: time.Date(2026, 12, 6, 13, 20, 7, 123456789, time.UTC)}
			raw := env.AppendJSON(nil)[1:]
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := parseEnvelope(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
