package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"math"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/transport/ws"
)

func newTestRun() *run {
	r := &run{}
	for i := range r.hists {
		r.hists[i].h = newHist()
	}
	return r
}

// TestObserveCounts feeds a subscriber a reordered, duplicated and gapped
// sequence and checks what a report would say about it.
func TestObserveCounts(t *testing.T) {
	r := newTestRun()
	s := &subscriber{}
	now := time.Now().UnixNano()
	feed := func(cursor uint64, seq int64) { r.observe(s, cursor, seq, now, now) }
	// Publisher order 1..6, server order 2,1,3,3(dup),5,6: 4 never arrives.
	feed(1, 2)
	feed(2, 1)
	feed(3, 3)
	feed(4, 3)
	feed(5, 5)
	feed(6, 6)
	if s.received.Load() != 5 || s.dups != 1 || s.ooo != 0 || s.delivered.Load() != 6 {
		t.Fatalf("received %d dups %d ooo %d delivered %d, want 5 1 0 6", s.received.Load(), s.dups, s.ooo, s.delivered.Load())
	}
	if s.base != 3 {
		t.Fatalf("base %d, want 3 (4 is missing)", s.base)
	}
	feed(6, 7) // the same cursor twice: the server broke its order
	if s.ooo != 1 {
		t.Fatalf("ooo %d, want 1", s.ooo)
	}
	// Far ahead of the window: the missing 4 is given up, counting stays exact.
	feed(7, 4+window+10)
	if s.received.Load() != 7 || s.base <= 4 {
		t.Fatalf("received %d base %d", s.received.Load(), s.base)
	}
	// Many in order across several window lengths.
	s2 := &subscriber{}
	for i := int64(1); i <= 3*window; i++ {
		r.observe(s2, uint64(i), i, now, now)
	}
	if s2.received.Load() != 3*window || s2.dups != 0 || s2.ooo != 0 || s2.base != 3*window {
		t.Fatalf("in-order run: received %d dups %d ooo %d base %d", s2.received.Load(), s2.dups, s2.ooo, s2.base)
	}
}

// Latencies reach the histogram in batches, all of them by the final flush,
// and the newest receive time is kept.
func TestLatencyBatches(t *testing.T) {
	r := newTestRun()
	s := &subscriber{idx: 3}
	h := r.hists[3].h
	t0 := time.Now().UnixNano()
	const n = latBatch + 44
	for i := int64(1); i <= n; i++ {
		// All within one flush interval, 2 ms after their send time.
		r.observe(s, uint64(i), i, t0, t0+2_000_000)
	}
	// The first event flushes (nothing was flushed yet), then one full batch.
	if got := h.TotalCount(); got != 1+latBatch {
		t.Fatalf("%d latencies recorded before the final flush, want %d", got, 1+latBatch)
	}
	r.flush(s)
	if got := h.TotalCount(); got != n {
		t.Fatalf("%d latencies recorded, want %d", got, n)
	}
	if p50 := h.ValueAtQuantile(50); p50 < 1990 || p50 > 2010 {
		t.Fatalf("p50 %d µs, want 2000", p50)
	}
	// An event arriving after the flush interval is flushed at once.
	r.observe(s, n+1, n+1, t0, t0+2_000_000+flushEvery)
	if got := h.TotalCount(); got != n+1 {
		t.Fatalf("%d latencies recorded after a late event, want %d", got, n+1)
	}
	if s.lastRecv != t0+2_000_000+flushEvery {
		t.Fatalf("lastRecv %d", s.lastRecv)
	}
}

func TestParsePayload(t *testing.T) {
	b := []byte(`data: {"id":"abcdefghij-12345","topic":"bench.0","type":"bench","data":{"bseq":42,"bts":1700000000000000000,"pad":"xx"},"time":"2026-11-21T00:00:00Z"}`)
	cur, seq, sent, ok := parsePayload(b)
	if !ok || cur != 12345 || seq != 42 || sent != 1700000000000000000 {
		t.Fatalf("got %d %d %d %v", cur, seq, sent, ok)
	}
	if _, _, _, ok := parsePayload([]byte(`{"op":"ok"}`)); ok {
		t.Fatal("a reply parsed as an event")
	}
	cases := []struct {
		in        string
		cur       uint64
		seq, sent int64
		ok        bool
	}{
		{`{"op":"event","id":"e-7","topic":"bench.1","type":"bench","data":{"bseq":1,"bts":2,"pad":""},"time":"t"}`, 7, 1, 2, true},
		// Another layout: fields found by search wherever they are.
		{`{"topic":"bench.1","id":"e-99","data":{"pad":"x","bts":1234567890123456789,"bseq":12345678},"type":"bench"}`, 99, 12345678, 1234567890123456789, true},
		{`{"op":"event","id":"e-7","data":{"bseq":1,"pad":"x"}}`, 0, 0, 0, false},
		{`{"op":"event","id":"e-7","data":{"bseq":x,"bts":1}}`, 0, 0, 0, false},
		{`{"op":"event","id":"e-7`, 0, 0, 0, false},
		{`data: {"id":"e-3","data":{"bseq":9,"bts":8}}`, 3, 9, 8, true},
	}
	for _, c := range cases {
		cur, seq, sent, ok := parsePayload([]byte(c.in))
		if ok != c.ok || (ok && (cur != c.cur || seq != c.seq || sent != c.sent)) {
			t.Errorf("%s: got %d %d %d %v, want %d %d %d %v", c.in, cur, seq, sent, ok, c.cur, c.seq, c.sent, c.ok)
		}
	}
}

// intAt agrees with strconv for every length, with digits eight at a time
// and one by one, and stops at the first non-digit.
func TestIntAt(t *testing.T) {
	for _, v := range []int64{0, 7, 12345678, 123456789, 9999999999999999, 1763736000123456789, math.MaxInt64} {
		for _, tail := range []string{"", ",", "/0", ":12345678", "\xff"} {
			b := []byte(" " + strconv.FormatInt(v, 10) + tail)
			n, end, ok := intAt(b, 1)
			if !ok || n != v || end != 1+len(strconv.FormatInt(v, 10)) {
				t.Errorf("%q: got %d end %d ok %v", b, n, end, ok)
			}
		}
	}
	for _, s := range []string{"", "x", "/", ":", "-1"} {
		if _, _, ok := intAt([]byte(s), 0); ok {
			t.Errorf("%q parsed as a number", s)
		}
	}
	for c := 0; c < 256; c++ {
		v := binary.LittleEndian.Uint64([]byte{'1', '2', '3', '4', byte(c), '6', '7', '8'})
		if got, want := eightDigits(v), c >= '0' && c <= '9'; got != want {
			t.Errorf("byte %#x: eightDigits %v", c, got)
		}
	}
}

// checkExact fails t unless rep shows every event delivered exactly once,
// in order, to every connected subscriber of its topic.
func checkExact(t *testing.T, rep *Report, subscribers int) {
	t.Helper()
	if rep.Connected != subscribers || rep.Published == 0 || len(rep.Errors) != 0 {
		t.Fatalf("connected %d of %d, published %d, errors %v", rep.Connected, subscribers, rep.Published, rep.Errors)
	}
	if rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("delivered %d of %d, lost %d, dup %d, ooo %d", rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder)
	}
	if rep.DeliveriesPerSec <= 0 {
		t.Fatalf("deliveries/s %v", rep.DeliveriesPerSec)
	}
	l := rep.LatencyMS
	if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max < 10000) {
		t.Fatalf("implausible latency summary %+v", l)
	}
}

// A short mixed run against a real server counts every delivery exactly.
func TestRunMixed(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress int
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "mixed", Subscribers: 21, Topics: 3, Publishers: 2,
		Rate: 200, Batch: 2, Duration: 1200 * time.Millisecond, SourceIPs: 3,
		Progress: func(Status) { progress++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 21)
	// 21 subscribers over 3 topics: each event reaches 7.
	if rep.Expected != rep.Published*7 {
		t.Fatalf("expected %d deliveries for %d events to 7 subscribers each", rep.Expected, rep.Published)
	}
	if progress == 0 {
		t.Fatal("no progress reported")
	}
	// The run has ended; the server sees its connections go.
	wait.For(t, 10*time.Second, "the server to drop the run's clients", func() bool {
		n := ts.hub.Stats().Clients
		return n["ws"]+n["sse"] == 0
	})
}

// Both transports work over TLS.
func TestRunTLS(t *testing.T) {
	ts := newTestServer(t, serverOptions{tls: true})
	pool := x509.NewCertPool()
	pool.AddCert(ts.srv.Certificate())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "mixed", Subscribers: 4, Topics: 1, Rate: 100,
		Duration: 300 * time.Millisecond, TLS: &tls.Config{RootCAs: pool},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 4)
	if rep.Expected != rep.Published*4 {
		t.Fatalf("expected %d deliveries for %d events", rep.Expected, rep.Published)
	}
}

func BenchmarkParsePayload(b *testing.B) {
	p := []byte(`{"op":"event","id":"mh0abcdefg-1234567","topic":"bench.0","type":"bench","data":{"bseq":123456,"bts":1763736000123456789,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"time":"2026-11-21T14:40:00.123456789Z"}`)
	for b.Loop() {
		if _, _, _, ok := parsePayload(p); !ok {
			b.Fatal("unparsed")
		}
	}
}

// With Keys, the events carry keys: every one is still delivered exactly
// once, and each topic's state on the server holds the keys cycled through.
func TestRunKeys(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: 4, Topics: 2, Publishers: 2,
		Rate: 200, Duration: 500 * time.Millisecond, Keys: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 4)
	for _, topic := range []string{"bench.0", "bench.1"} {
		st, err := ts.hub.State(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Events) != 3 {
			t.Fatalf("the state of %s holds %d keys, want 3", topic, len(st.Events))
		}
	}
	if _, err := Run(ctx, Config{URL: ts.url, Mode: ModeActions, Keys: 3, Duration: time.Millisecond}); err == nil {
		t.Fatal("keys in the actions mode: no error")
	}
}

// A dashboard run with deltas and compression asked for, against a server
// that may grant neither: every event arrives once and is what was
// published, and the kernel's byte count matches the frames within the
// few bytes of control frames.
func TestRunDashboardDeltaWire(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: 6, Topics: 2, Publishers: 2,
		Rate: 300, Duration: 600 * time.Millisecond, Keys: 5,
		PayloadShape: ShapeDashboard, Delta: true, WSCompression: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, 6)
	if rep.WireConnections != 6 || rep.WireDeliveries != rep.Delivered || rep.WSConnections != 6 {
		t.Fatalf("wire over %d connections, %d of %d deliveries, %d ws connections", rep.WireConnections, rep.WireDeliveries, rep.Delivered, rep.WSConnections)
	}
	if rep.PayloadBytesPerEvent < 2048 || rep.PayloadBytesPerEvent > 4096+200 {
		t.Fatalf("payload %.0f bytes per event", rep.PayloadBytesPerEvent)
	}
	if rep.DeflateConnections == 0 && rep.DeltaDeliveries == 0 {
		// Neither granted: the wire carries the frames as counted.
		if r := rep.CompressionRatio; r < 1 || r > 1.01 {
			t.Fatalf("compression ratio %v without compression or deltas", r)
		}
	} else if rep.CompressionRatio >= 1 {
		t.Fatalf("compression ratio %v with %d deflate connections and %d deltas", rep.CompressionRatio, rep.DeflateConnections, rep.DeltaDeliveries)
	}
	for _, bad := range []Config{
		{URL: ts.url, Delta: true},                                     // no keys
		{URL: ts.url, Delta: true, Keys: 3, Transport: "mixed"},        // not WebSocket only
		{URL: ts.url, WSCompression: true, Transport: "sse"},           // no WebSocket
		{URL: ts.url, PayloadShape: "huge"},                            // unknown shape
		{URL: ts.url, Mode: ModeConnect, PayloadShape: ShapeDashboard}, // publishes nothing
	} {
		if _, err := Run(ctx, bad); err == nil {
			t.Fatalf("%+v: no error", bad)
		}
	}
}

// Against a server that sends deltas, a delta subscriber rebuilds every
// keyed event after the first of its key from a delta, each is what was
// published, and the wire carries a fraction of the whole frames.
func TestRunDeltasEndToEnd(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const subs, keys, events = 4, 3, 90
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: subs, Topics: 1,
		Rate: 300, Events: events, Keys: keys, PayloadShape: ShapeDashboard, Delta: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, subs)
	if want := int64(subs * (events - keys)); rep.DeltaDeliveries != want {
		t.Fatalf("%d deliveries came as deltas, want every one after the first of each key: %d", rep.DeltaDeliveries, want)
	}
	if rep.WireDeliveries != subs*events || rep.CompressionRatio <= 0 || rep.CompressionRatio > 0.2 {
		t.Fatalf("wire: %d deliveries, ratio %v (%.0f of %.0f bytes per event)", rep.WireDeliveries, rep.CompressionRatio, rep.WireBytesPerEvent, rep.PayloadBytesPerEvent)
	}

	// Connections cut and resumed start their keys over: still every
	// event, each what was published.
	rep, err = Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: subs, Topics: 1, Prefix: "chaos",
		Rate: 300, Events: 300, Keys: keys, PayloadShape: ShapeDashboard, Delta: true,
		ChaosDisconnect: 20, Seed: 7,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, subs)
	if rep.Reconnects == 0 || rep.DeltaDeliveries == 0 {
		t.Fatalf("%d reconnects, %d deltas", rep.Reconnects, rep.DeltaDeliveries)
	}
}

// With Prime, every key has been delivered once before the measured phase:
// all that phase's deliveries are deltas, and its figures leave the primed
// events out while loss still counts them.
func TestRunPrimed(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const subs, topics, keys = 4, 2, 5
	rep, err := Run(ctx, Config{
		URL: ts.url, Transport: "ws", Subscribers: subs, Topics: topics, Publishers: 2,
		Rate: 200, Events: 60, Keys: keys, PayloadShape: ShapeDashboard, Delta: true, Prime: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkExact(t, rep, subs)
	primedDeliveries := int64(keys * subs) // each subscriber: its topic's keys
	if rep.Primed != topics*keys || rep.Published != 60+topics*keys || rep.Delivered != rep.Expected {
		t.Fatalf("primed %d, published %d, delivered %d of %d", rep.Primed, rep.Published, rep.Delivered, rep.Expected)
	}
	if rep.WireDeliveries != rep.Delivered-primedDeliveries || rep.DeltaDeliveries != rep.WireDeliveries {
		t.Fatalf("measured %d deliveries of %d, %d deltas", rep.WireDeliveries, rep.Delivered, rep.DeltaDeliveries)
	}
	if _, err := Run(ctx, Config{URL: ts.url, Prime: true}); err == nil {
		t.Fatal("priming without keys: no error")
	}
}

// Against Herald's own compression: every connection negotiates it, every
// event is read intact, and the kernel counts a third of the bytes or less;
// with deltas too, a fraction of that. A server with compression off
// declines, and the run is exact all the same.
func TestRunCompressionEndToEnd(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const subs, keys = 5, 4
	run := func(url, prefix string, delta bool) *Report {
		t.Helper()
		rep, err := Run(ctx, Config{
			URL: url, Transport: "ws", Subscribers: subs, Topics: 1, Prefix: prefix,
			Rate: 300, Events: 120, Keys: keys, PayloadShape: ShapeDashboard, Prime: true,
			WSCompression: true, Delta: delta,
		})
		if err != nil {
			t.Fatal(err)
		}
		checkExact(t, rep, subs)
		return rep
	}
	rep := run(ts.url, "z", false)
	if rep.DeflateConnections != subs || rep.WSConnections != subs {
		t.Fatalf("deflate on %d of %d connections", rep.DeflateConnections, rep.WSConnections)
	}
	if r := rep.CompressionRatio; r <= 0 || r > 0.4 {
		t.Fatalf("compression ratio %v (%.0f of %.0f bytes per event)", r, rep.WireBytesPerEvent, rep.PayloadBytesPerEvent)
	}
	deflated := rep.CompressionRatio
	rep = run(ts.url, "zd", true)
	if rep.DeflateConnections != subs || rep.DeltaDeliveries != rep.WireDeliveries || rep.Errors["delta_mismatch"] != 0 {
		t.Fatalf("deflate on %d, %d deltas of %d deliveries measured, errors %v", rep.DeflateConnections, rep.DeltaDeliveries, rep.WireDeliveries, rep.Errors)
	}
	if r := rep.CompressionRatio; r <= 0 || r > deflated/2 {
		t.Fatalf("compression ratio with deltas %v, without %v", r, deflated)
	}

	off := newTestServer(t, serverOptions{ws: ws.Options{NoCompression: true}})
	rep = run(off.url, "off", false)
	if rep.DeflateConnections != 0 || rep.CompressionRatio < 1 || rep.CompressionRatio > 1.01 {
		t.Fatalf("compression off: deflate on %d connections, ratio %v", rep.DeflateConnections, rep.CompressionRatio)
	}
}

// A dead node's subscribers spread evenly over the other nodes, WebSocket
// (even index) and SSE (odd) alike, and never onto the dead node.
func TestFailoverNodeSpreads(t *testing.T) {
	for n := 2; n <= 6; n++ {
		for dead := 0; dead < n; dead++ {
			got := map[[2]int]int{} // node, transport: subscribers
			for i := range 1200 {
				if (i/2+i%2)%n != dead {
					continue
				}
				to := failoverNode(i, dead, n)
				if to == dead || to < 0 || to >= n {
					t.Fatalf("n %d: subscriber %d of node %d fails over to %d", n, i, dead, to)
				}
				got[[2]int{to, i % 2}]++
			}
			var lo, hi int
			for _, c := range got {
				if lo == 0 || c < lo {
					lo = c
				}
				hi = max(hi, c)
			}
			if len(got) != 2*(n-1) || hi-lo > 1 {
				t.Fatalf("n %d, node %d dead: failovers by node and transport %v, want all %d others evenly", n, dead, got, n-1)
			}
		}
	}
}
