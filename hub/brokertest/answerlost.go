package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// Muter loses the broker's answers on the way back while requests still
// reach it (internal/testkit/relay's Relay between the broker and its server).
type Muter interface {
	Mute()
	Unmute()
}

// RunAnswerLost checks that a publish whose answer was lost is stored
// once and answered with the cursors it was stored under: it mutes m, starts
// a publish (a single event, then a batch of two), waits until stored (the
// number of events in the log, read without going through m) shows it
// stored, and unmutes m. The broker must learn the outcome by asking again
// within its time, not store the events a second time. b must be on a new,
// empty log, and is not started.
func RunAnswerLost(t *testing.T, b hub.Broker, m Muter, stored func() int) {
	ctx := context.Background()
	total := 0
	for _, data := range [][]string{{`"one"`}, {`"two"`, `"three"`}} {
		var drafts []hub.Draft
		for _, d := range data {
			drafts = append(drafts, draft(t, "lost.a", d))
		}
		m.Mute()
		type result struct {
			msgs []*hub.Message
			err  error
		}
		done := make(chan result, 1)
		go func() {
			msgs, err := b.Publish(ctx, drafts)
			done <- result{msgs, err}
		}()
		total += len(data)
		wait.For(t, waitTimeout, "the publish to be stored", func() bool { return stored() == total })
		m.Unmute()
		var r result
		select {
		case r = <-done:
		case <-time.After(waitTimeout):
			t.Fatal("the publish did not return after its answer was lost")
		}
		if r.err != nil {
			t.Fatalf("publish %v: %v", data, r.err)
		}
		if n := stored(); n != total {
			t.Fatalf("the log holds %d events after publishing %v, want %d", n, data, total)
		}
		got := readAll(t, ctx, b, r.msgs[0].ID.Seq-1, all, 10, 0)
		if len(got) != len(data) {
			t.Fatalf("reading from the answered cursor %s: %d events, want %d", r.msgs[0].ID, len(got), len(data))
		}
		for i, msg := range r.msgs {
			if got := got[i]; got.ID != msg.ID || string(got.Data) != data[i] {
				t.Errorf("answered %s for %s; the log has %s there", msg.ID, data[i], got.Data)
			}
		}
	}
}
