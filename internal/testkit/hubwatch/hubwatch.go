// Package hubwatch subscribes a test to a hub the way a transport does: a
// hub.Client whose writer (hub.Client.Serve) hands its batches to the test.
package hubwatch

import (
	"errors"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// finishTimeout bounds how long the cleanup waits for the writer to finish.
const finishTimeout = 10 * time.Second

// Watcher is a subscribed client and its writer. The writer hands each
// batch to the test goroutine and waits while the test does not read, so
// the hub's queue bound applies as to a slow socket.
//
// Concurrency: Next is called by one goroutine (the test's); the
// BatchWriter methods are the writer's.
type Watcher struct {
	c       *hub.Client
	batches chan []*hub.Message // from the writer
	done    chan struct{}       // closed at cleanup: the writer finishes
	ended   chan struct{}       // closed by Finish, after end is set
	end     hub.End
}

// Watch subscribes a new client of h to patterns and serves it until the
// test ends.
func Watch(t testing.TB, h *hub.Hub, patterns ...string) *Watcher {
	t.Helper()
	c, err := h.NewClient("test")
	if err != nil {
		t.Fatalf("failed to create a hub client: %v", err)
	}
	ps := make([]hub.Pattern, len(patterns))
	for i, p := range patterns {
		ps[i] = hub.MustPattern(p)
	}
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: ps}); err != nil {
		c.Close()
		t.Fatalf("failed to subscribe to %v: %v", patterns, err)
	}
	w := &Watcher{c: c, batches: make(chan []*hub.Message, 64), done: make(chan struct{}), ended: make(chan struct{})}
	c.Serve(w, &hub.WriterOptions{ParkAfter: time.Second}, w.done)
	t.Cleanup(func() {
		close(w.done)
		c.Interrupt()
		select {
		case <-w.ended:
		case <-time.After(finishTimeout):
			t.Error("the watcher's writer did not finish")
		}
	})
	return w
}

// Next waits up to d for the next batch of events and returns it; nil when
// none came in time. It fails t if the hub ended the client.
func (w *Watcher) Next(t testing.TB, d time.Duration) []*hub.Message {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case b := <-w.batches:
		return b
	case <-w.ended:
		t.Fatalf("the hub ended the watcher: %+v", w.end)
	case <-timer.C:
	}
	return nil
}

// WriteBatch passes the batch's events to the test goroutine (hub.BatchWriter).
func (w *Watcher) WriteBatch(items []hub.Item) error {
	msgs := make([]*hub.Message, 0, len(items))
	for _, it := range items {
		if it.Msg != nil {
			msgs = append(msgs, it.Msg)
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	select {
	case w.batches <- msgs:
		return nil
	case <-w.done:
		return errors.New("watcher done")
	}
}

// KeepAlive is never called: the writer has no keep-alive interval.
func (w *Watcher) KeepAlive() error { return nil }

// Finish records why the writer ended and closes the client.
func (w *Watcher) Finish(end hub.End) {
	w.c.Close()
	w.end = end
	close(w.ended)
}
