package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// itemsWriter is a connection's BatchWriter that keeps the events it is
// given, for checking what a subscription received.
type itemsWriter struct {
	c      *hub.Client
	mu     sync.Mutex
	seqs   []uint64
	change chan struct{} // closed and replaced at each batch
	ended  chan struct{}
}

func (w *itemsWriter) WriteBatch(items []hub.Item) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range items {
		if it.Msg != nil {
			w.seqs = append(w.seqs, it.Msg.ID.Seq)
		} else {
			w.seqs = append(w.seqs, 0) // anything else is wrong here; 0 shows it
		}
	}
	close(w.change)
	w.change = make(chan struct{})
	return nil
}

func (w *itemsWriter) KeepAlive() error { return nil }

func (w *itemsWriter) Finish(hub.End) {
	w.c.Close()
	close(w.ended)
}

// waitLen waits until n items arrived and returns them.
func (w *itemsWriter) waitLen(t *testing.T, n int) []uint64 {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		w.mu.Lock()
		got, change := slices.Clone(w.seqs), w.change
		w.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-change:
		case <-timer.C:
			t.Fatalf("timed out waiting for %d events; got %v", n, got)
		}
	}
}

// subscribeServed subscribes a new client of h and serves it with an
// itemsWriter until the test ends.
func subscribeServed(t *testing.T, h *hub.Hub, req hub.SubscribeRequest) *itemsWriter {
	t.Helper()
	c, err := h.NewClient("test")
	if err != nil {
		t.Fatal(err)
	}
	w := &itemsWriter{c: c, change: make(chan struct{}), ended: make(chan struct{})}
	c.Serve(w, &hub.WriterOptions{ParkAfter: time.Second}, nil)
	t.Cleanup(func() {
		c.Close()
		select {
		case <-w.ended:
		case <-time.After(waitTimeout):
			t.Error("the client's writer did not end")
		}
	})
	if err := c.Subscribe(req); err != nil {
		t.Fatal(err)
	}
	return w
}

// testRewind runs a hub on the broker: a rewind, which the hub serves with
// Read over windows at the end of the log, gets exactly the newest N
// matching events, then the live ones, for wildcards, several patterns,
// sparse patterns (several windows) and more than is retained.
func (s *suite) testRewind(t *testing.T) {
	const size = 1200
	h := startHub(t, hub.Options{Broker: s.newBroker(t, Options{Size: size})})
	ctx := ctxT(t)
	// 1500 events, the first 300 beyond retention: "s.x" every 97th,
	// "d.<n%3>" the rest.
	for i := 0; i < 1500; i += 100 {
		ds := make([]hub.Draft, 100)
		for j := range ds {
			topic := fmt.Sprintf("d.%d", (i+j)%3)
			if (i+j)%97 == 0 {
				topic = "s.x"
			}
			ds[j] = draft(t, topic, fmt.Sprint(i+j))
		}
		publish(t, ctx, h.Broker(), ds...)
	}
	for _, tc := range []struct {
		pats []string
		n    int
		live string // a topic the patterns match
	}{
		{[]string{"s.*"}, 5, "s.y"},                  // sparse: several windows
		{[]string{"d.1"}, 1, "d.1"},                  // the newest only
		{[]string{"d.>", "s.x"}, 300, "d.9.9"},       // several patterns, a wildcard
		{[]string{"s.>", "d.2"}, 1000, "s.x.y"},      // more than retained
		{[]string{"nothing", "q.*"}, 1000, "q.live"}, // none
	} {
		t.Run(fmt.Sprint(tc.pats, tc.n), func(t *testing.T) {
			var pats []hub.Pattern
			for _, p := range tc.pats {
				pats = append(pats, hub.MustPattern(p))
			}
			var want []uint64
			for _, m := range readAll(t, ctx, h.Broker(), bounds(t, ctx, h.Broker()).First-1, pats, 256, 0) {
				want = append(want, m.ID.Seq)
			}
			want = want[max(0, len(want)-tc.n):]
			w := subscribeServed(t, h, hub.SubscribeRequest{Patterns: pats, Rewind: tc.n})
			w.waitLen(t, len(want))
			live := publish(t, ctx, h.Broker(), draft(t, tc.live, "0"))
			want = append(want, live[0].ID.Seq)
			if got := w.waitLen(t, len(want)); !slices.Equal(got, want) {
				i := 0
				for i < min(len(got), len(want)) && got[i] == want[i] {
					i++
				}
				t.Fatalf("got %d events, want %d; they differ from #%d: got %v, want %v",
					len(got), len(want), i, got[i:min(len(got), i+5)], want[i:min(len(want), i+5)])
			}
		})
	}
}
