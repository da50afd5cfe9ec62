package main

import (
	"sort"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestStalledClient adds connections that subscribe to every topic and
// then never read, among subscribers that do.
//
// Short: the functional part. With a small --queue-bytes, each stalled
// connection (one SSE, one WebSocket) is disconnected as a slow consumer
// (herald_disconnects_total{reason="slow_consumer"}), the run sees the
// server close it, and the readers lose nothing.
//
// Full (HERALD_SOAK=1): the performance part, on a server process with its
// default flags: runs with one stalled connection among 1,000 subscribers
// alternate with the same runs without it, and the readers' p99 latency
// with it may be at most 10% above the p99 without it.
func TestStalledClient(t *testing.T) {
	if soak() {
		testStalledClientLatency(t)
		return
	}
	in := startServe(t, "--addr", "127.0.0.1:0", "--queue-bytes", "65536", "--write-timeout", "1s")
	// 20 readers on 20 topics get one event in 20 each; the stalled
	// connections get all of them: 9 MB each, twice what the kernel's
	// buffers (a send buffer grows to net.ipv4.tcp_wmem's 4 MB here) and
	// the queue can hold, so the queue overflows whatever the timing.
	rep := runLoad(t, bench.Config{
		URL: in.URL, Transport: "mixed", Subscribers: 20, Topics: 20, Rate: 1400,
		Payload: 1024, Events: 7000, Stall: 2, Seed: testSeed(t),
	}, 2*time.Minute)
	logReport(t, "stall", rep)
	checkExactDelivery(t, rep)
	if rep.Stalled != 2 || rep.StalledDisconnected != 2 {
		t.Errorf("%d stalled connections, %d closed by the server: want 2 and 2", rep.Stalled, rep.StalledDisconnected)
	}
	wait.For(t, 10*time.Second, "both slow consumers in the metrics", func() bool {
		fams, _ := heraldtest.Scrape(t, in.URL+"/metrics")
		sse, _ := heraldtest.Value(fams, "herald_disconnects_total", "transport=sse", "reason=slow_consumer")
		ws, _ := heraldtest.Value(fams, "herald_disconnects_total", "transport=ws", "reason=slow_consumer")
		if sse > 1 || ws > 1 {
			t.Fatalf("%v SSE and %v WebSocket slow consumers: a reader was dropped too", sse, ws)
		}
		return sse == 1 && ws == 1
	})
}

// stallPairs is how many runs with a stalled connection the full check
// makes, and as many without.
const stallPairs = 3

// testStalledClientLatency runs the full check: without and with a
// stalled connection in the order ABBAAB…, so that a drift of the box's
// load over the test weighs on both alike, and compares the medians of
// the readers' p99.
func testStalledClientLatency(t *testing.T) {
	p := startProcess(t)
	seed := testSeed(t)
	// 1,000 readers on 10 topics, 500 events/s: 50,000 deliveries/s. The
	// stalled connection gets every event, 250 kB/s: its buffers fill and
	// the server drops it some 20 s into a 30 s run, so the readers are
	// measured while it stalls, when it is dropped, and after.
	cfg := bench.Config{
		URL: p.URL, Transport: "mixed", Subscribers: 1000, Topics: 10, Publishers: 4,
		Rate: 500, Payload: 256, Duration: 30 * time.Second, SourceIPs: 8, Seed: seed,
	}
	var without, with []float64
	for i := range 2 * stallPairs {
		stalled := i%4 == 1 || i%4 == 2
		c := cfg
		name := "without a stalled client"
		if stalled {
			c.Stall, name = 1, "with a stalled client"
		}
		rep := runLoad(t, c, 5*time.Minute)
		logReport(t, name, rep)
		checkExactDelivery(t, rep)
		if stalled {
			if rep.StalledDisconnected != 1 {
				t.Errorf("the server did not drop the stalled connection within the run")
			}
			with = append(with, rep.LatencyMS.P99)
		} else {
			without = append(without, rep.LatencyMS.P99)
		}
	}
	a, b := median(without), median(with)
	change := b/a - 1
	t.Logf("readers' p99: without a stalled client %v ms (median %.2f), with one %v ms (median %.2f): %+.1f%%",
		without, a, with, b, 100*change)
	if change >= 0.10 {
		t.Errorf("a stalled client moved the others' p99 by %+.1f%%, want less than +10%%", 100*change)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}
