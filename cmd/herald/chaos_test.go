package main

import (
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
)

// TestChaosDisconnects cuts random subscribers' connections from the
// client side while a fixed number of events is published to one topic
// they all follow, half of them on SSE and half on WebSocket. Each cut
// subscriber reconnects at once and resumes from its last cursor
// (Last-Event-ID, subscribe since). Every subscriber must end with every
// event, in order, once, and no resume may meet a reset: the history is
// sized to hold the whole run.
//
// Short: an in-process server, 100 subscribers, 2,000 events. Full
// (HERALD_SOAK=1): a server process, 1,000 subscribers, 100,000 events.
func TestChaosDisconnects(t *testing.T) {
	events := pick[int64](2000, 100_000)
	args := []string{"--history-size", strconv.FormatInt(2*events, 10)}
	var url string
	if soak() {
		url = startProcess(t, args...).URL
	} else {
		url = startServe(t, append([]string{"--addr", "127.0.0.1:0"}, args...)...).URL
	}
	cfg := bench.Config{
		URL:             url,
		Transport:       "mixed",
		Subscribers:     pick(100, 1000),
		Topics:          1,
		Publishers:      1,
		Rate:            pick(200.0, 500.0),
		Events:          events,
		ChaosDisconnect: pick(20.0, 20.0),
		Seed:            testSeed(t),
		SourceIPs:       8,
		Drain:           pick(60*time.Second, 2*time.Minute),
	}
	rep := runLoad(t, cfg, pick(3*time.Minute, 10*time.Minute))
	logReport(t, "chaos", rep)
	checkExactDelivery(t, rep)
	if rep.Published != events || rep.Expected != events*int64(cfg.Subscribers) {
		t.Errorf("published %d events for %d deliveries, want %d for %d", rep.Published, rep.Expected, events, events*int64(cfg.Subscribers))
	}
	if rep.Reconnects == 0 || rep.Reconnects != rep.Disconnects {
		t.Errorf("%d reconnects after %d forced disconnects: want every cut subscriber resumed, and some cut", rep.Reconnects, rep.Disconnects)
	}
}
