package hub_test

import (
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestPark checks the contract a transport's parked writer relies on: the
// parked func runs exactly once, at the first wake after Park (an event, a
// reply, a failure, Unpark or Close), and Park refuses when work is
// already waiting, so no wake is ever lost between a Drain and the Park.
func TestPark(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("park.>")})

	var calls atomic.Int32
	fn := func() { calls.Add(1) }
	if !c.Park(fn, nil) {
		t.Fatalf("Park refused with nothing queued")
	}
	pub(t, h, "park.a", `1`)
	wait.For(t, waitTimeout, "the parked func to run at the event", func() bool { return calls.Load() == 1 })
	pub(t, h, "park.a", `2`)
	if c.Park(fn, nil) {
		t.Fatalf("Park accepted with two events queued")
	}
	got := 0
	wait.For(t, waitTimeout, "both events", func() bool {
		items, err := c.Drain(nil)
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		got += len(items)
		return got == 2
	})
	if c.Unpark() {
		t.Fatalf("Unpark reported a parking that had ended")
	}

	// A reply wakes it too, and Unpark after that finds nothing parked.
	if !c.Park(fn, nil) {
		t.Fatalf("Park refused with an empty queue")
	}
	c.Queue([]byte("reply"))
	if calls.Load() != 2 || c.Unpark() {
		t.Fatalf("after a reply: %d calls, want 2 and nothing parked", calls.Load())
	}
	_, _ = c.Drain(nil)

	// Park refuses while the transport is busy.
	if c.Park(fn, func() bool { return true }) || c.Unpark() {
		t.Fatalf("Park accepted while busy reported true")
	}

	// Unpark restarts it without work.
	if !c.Park(fn, nil) || !c.Unpark() || calls.Load() != 3 {
		t.Fatalf("Unpark did not run the parked func once (%d calls)", calls.Load())
	}

	// A failure, and then Close, run it at most once more.
	if !c.Park(fn, nil) {
		t.Fatalf("Park refused")
	}
	c.Fail(hub.ErrSlowConsumer)
	c.Close()
	if calls.Load() != 4 {
		t.Fatalf("failure and Close ran the parked func %d times in all, want 4", calls.Load())
	}
	if c.Park(fn, nil) {
		t.Fatalf("Park accepted on a failed client")
	}
}
