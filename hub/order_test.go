package hub_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Deterministic cases of the one-order rule and the history/live seam. The
// concurrent tests in seam_test.go find these by chance; these pin each one.

// publishTopics publishes one event per topic, in order, and returns their seqs.
func publishTopics(t *testing.T, h *hub.Hub, topics ...string) []uint64 {
	t.Helper()
	var out []uint64
	for i, tp := range topics {
		out = append(out, pub(t, h, tp, fmt.Sprint(i)).ID.Seq)
	}
	return out
}

func cur(h *hub.Hub, seq uint64) string {
	return hub.Cursor{Epoch: h.Epoch(), Seq: seq}.String()
}

func wantSeqs(t *testing.T, items []hub.Item, want ...uint64) {
	t.Helper()
	if got := msgSeqs(items); !slices.Equal(got, want) || len(got) != len(items) {
		t.Fatalf("got %s, want %v", describe(items), want)
	}
}

// TestSinceOnLiveClient: the SPEC's one-order rule: "a since on a
// connection that has already delivered events replays from the later of
// since and the last delivered cursor".
func TestSinceOnLiveClient(t *testing.T) {
	t.Run("after delivered events", func(t *testing.T) {
		h := newHub(t, hub.Options{Shards: 1})
		c := newClient(t, h, "ws")
		col := collect(t, c)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a")})
		publishTopics(t, h, "a", "b", "a", "b", "b") // 1..5
		col.waitSeq(t, 3)
		settle(t, h)
		// Delivered up to 3: b is replayed from 3, not from 1 (that would go
		// back in the order) and not from the head (that would lose 4 and 5).
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Since: cur(h, 1)})
		publishTopics(t, h, "a", "b") // 6, 7
		wantSeqs(t, col.waitSeq(t, 7), 1, 3, 4, 5, 6, 7)
	})
	t.Run("nothing delivered yet", func(t *testing.T) {
		h := newHub(t, hub.Options{Shards: 1})
		c := newClient(t, h, "ws")
		col := collect(t, c)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a")})
		publishTopics(t, h, "b", "b", "b", "b") // 1..4
		settle(t, h)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Since: cur(h, 2)})
		publishTopics(t, h, "a") // 5
		wantSeqs(t, col.waitSeq(t, 5), 3, 4, 5)
	})
	t.Run("since later than delivered", func(t *testing.T) {
		h := newHub(t, hub.Options{Shards: 1})
		c := newClient(t, h, "ws")
		col := collect(t, c)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a")})
		publishTopics(t, h, "a", "b", "b", "b", "b") // 1..5
		col.waitSeq(t, 1)
		settle(t, h)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Since: cur(h, 3)})
		publishTopics(t, h, "b") // 6
		wantSeqs(t, col.waitSeq(t, 6), 1, 4, 5, 6)
	})
	t.Run("same pattern again with since", func(t *testing.T) {
		h := newHub(t, hub.Options{Shards: 1})
		c := newClient(t, h, "ws")
		col := collect(t, c)
		publishTopics(t, h, "a", "a", "a") // 1..3
		settle(t, h)
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a")})
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a"), Since: cur(h, 1)})
		publishTopics(t, h, "a") // 4
		wantSeqs(t, col.waitSeq(t, 4), 2, 3, 4)
		if got := c.Patterns(); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("Patterns = %v", got)
		}
	})
}

// TestSinceWhileReplaying: a since arriving while a replay is held (a full
// queue) starts from what was sent when it arrived; the running replay must
// not run ahead of it.
func TestSinceWhileReplaying(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 1, QueueBytes: 1, ReplayWait: waitTimeout})
	publishTopics(t, h, "x", "a", "x", "a", "x", "a") // 1..6
	settle(t, h)
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("x"), Since: cur(h, 0)})
	waitClosed(t, col.woke, "x1") // x1 is queued; the queue holds one event, so the replay waits
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a"), Since: cur(h, 0)})
	col.open()
	// One event fits the queue, so publish live only once the replay is drained.
	wantSeqs(t, col.waitSeq(t, 6), 1, 2, 3, 4, 5, 6)
	publishTopics(t, h, "a") // 7
	wantSeqs(t, col.waitSeq(t, 7), 1, 2, 3, 4, 5, 6, 7)
}

// TestSinceStartsAtCursorUnderDispatchLag: a new since subscription wants
// nothing at or before its cursor, even when the hub has not dispatched up to
// that cursor yet (a broker whose delivery runs behind its log) and the
// replay reads from further back for another pattern.
func TestSinceStartsAtCursorUnderDispatchLag(t *testing.T) {
	lag := newLaggy(hub.MemoryOptions{})
	h := newHub(t, hub.Options{Broker: lag, Shards: 1, QueueBytes: 1, ReplayWait: waitTimeout})
	lag.Pause()
	publishTopics(t, h, "x", "x", "a", "b", "a", "b", "a", "b") // 1..8, none dispatched
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("x"), Since: cur(h, 0)})
	waitClosed(t, col.woke, "x1") // x1 queued, replay held
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a"), Since: cur(h, 5)})
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Since: cur(h, 2)})
	col.open()
	lag.Resume()
	wantSeqs(t, col.waitSeq(t, 8), 1, 2, 4, 6, 7, 8)
	publishTopics(t, h, "a") // 9
	wantSeqs(t, col.waitSeq(t, 9), 1, 2, 4, 6, 7, 8, 9)
}

// TestSinceAfterReplayEnds hammers the moment a replay finishes: a since
// subscription arriving just as the previous replay goes live must still be
// served (its replay must run, and the client must go live again). A lost
// request leaves the client catching forever: live events pile up in
// pending and are never delivered.
func TestSinceAfterReplayEnds(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 1})
	publishTopics(t, h, "q.0", "q.1")
	clients, perClient := 40, 100
	if testing.Short() {
		clients = 10
	}
	for n := range clients {
		c := newClient(t, h, "ws")
		last := head(t, h).Last
		spin := 0
		for i := range perClient {
			if err := c.Subscribe(hub.SubscribeRequest{Patterns: pats(fmt.Sprintf("q.%d", i)), Since: cur(h, last-1)}); err != nil {
				t.Fatal(err)
			}
			// Vary the gap so that some subscribes land as a replay ends.
			for range (i*7 + n) % 48 {
				spin += i
			}
		}
		_ = spin
		m := pub(t, h, fmt.Sprintf("q.%d", perClient-1), "0")
		if err := waitOwn(c, m); err != nil {
			t.Fatalf("client %d: %v (catching %v)", n, err, hub.Catching(c))
		}
		c.Close()
	}
}

// waitOwn drains c until it receives m.
func waitOwn(c *hub.Client, m *hub.Message) error {
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	var items []hub.Item
	for {
		select {
		case <-hub.Wake(c):
		case <-timer.C:
			return fmt.Errorf("event %d never arrived", m.ID.Seq)
		}
		var err error
		items, err = hub.Drain(c, items)
		if err != nil {
			return err
		}
		for _, it := range items {
			if it.Msg == m {
				return nil
			}
		}
	}
}

// TestGoLiveWaitsForRoom: when a replay reaches the end of the log with its
// queue full and live events waiting in pending, it must wait for the writer
// (and read those events from the log) rather than overflow the queue and
// fail a writer that is draining, just slowly. All events here have the same
// size, so the queue holds exactly k of them.
func TestGoLiveWaitsForRoom(t *testing.T) {
	const k = 10
	at := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	broker := hub.NewMemoryBroker(hub.MemoryOptions{Now: func() time.Time { return at }})
	b, err := broker.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	probe := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: b.Epoch, Seq: 100}, Topic: "g.a", Type: "message", Data: []byte("0"), Time: at})
	size := len(probe.Envelope()) + 64 // what a message counts against the queue bound
	h := newHub(t, hub.Options{Broker: broker, Shards: 1, QueueBytes: k * size, ReplayWait: waitTimeout})
	for range 99 {
		pub(t, h, "fill", "0") // so that the events below all have 3-digit seqs
	}
	for range 2 * k {
		pub(t, h, "g.a", "0") // 100..119
	}
	for _, m := range history(t, h)[99:] {
		if len(m.Envelope()) != len(probe.Envelope()) {
			t.Fatalf("test bug: event %s differs in size from %s", m.Envelope(), probe.Envelope())
		}
	}
	settle(t, h) // or undispatched history would reach the client live
	c := newClient(t, h, "ws")
	defer c.Close()
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("g.a"), Since: cur(h, 99)})
	eventually(t, "a full queue", func() bool { return hub.Queued(c) == k })
	for range 3 {
		pub(t, h, "g.a", "0") // 120..122, live: into pending
	}
	settle(t, h)
	var got []hub.Item
	drain := func() {
		items, err := hub.Drain(c, nil)
		if err != nil {
			t.Fatalf("client failed after %s: %v", describe(got), err)
		}
		got = append(got, items...)
	}
	if hub.Pending(c) != 3 {
		t.Fatalf("pending holds %d events, want 3", hub.Pending(c))
	}
	drain()
	// The replay refills the queue with the last k events of the log and
	// finds pending with nowhere to go: it drops pending (those events are
	// in the log) and waits for room.
	eventually(t, "the replay to wait for room", func() bool {
		return hub.Err(c) != nil || hub.Queued(c) == k && hub.Pending(c) == 0
	})
	drain()
	eventually(t, "the replay to end", func() bool { return !hub.Catching(c) })
	drain()
	m := pub(t, h, "g.a", "0") // 123, live
	eventually(t, "the live event", func() bool { return hub.Queued(c) == 1 })
	drain()
	var want []uint64
	for s := uint64(100); s <= m.ID.Seq; s++ {
		want = append(want, s)
	}
	wantSeqs(t, got, want...)
}

// TestLiveSubscribeDuringReplay is case (c) pinned down: a live pattern
// joins while the replay holds a page read without it. Its event in that
// page is also in pending, but the replay runs past it; unless the page is
// read again with the new pattern, goLive drops it as already covered.
// Events are equal in size so that the queue holds exactly k of them, and
// delivery lags (a paused broker reader) so that they reach pending only
// after the pattern joined.
func TestLiveSubscribeDuringReplay(t *testing.T) {
	const k = 4
	at := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	lag := newLaggy(hub.MemoryOptions{Now: func() time.Time { return at }})
	b, err := lag.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	probe := hub.NewMessage(hub.Event{ID: hub.Cursor{Epoch: b.Epoch, Seq: 100}, Topic: "g.x", Type: "message", Data: []byte("0"), Time: at})
	h := newHub(t, hub.Options{Broker: lag, Shards: 1, QueueBytes: k * (len(probe.Envelope()) + 64), ReplayWait: waitTimeout})
	lag.Pause()
	for range 99 {
		pub(t, h, "fill", "0")
	}
	for range k + 1 {
		pub(t, h, "g.x", "0") // 100..104
	}
	pub(t, h, "g.c", "0") // 105
	c := newClient(t, h, "ws")
	defer c.Close()
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("g.x"), Since: cur(h, 99)})
	eventually(t, "a full queue", func() bool { return hub.Queued(c) == k }) // 100..103; 104 waits
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("g.c")})
	lag.Resume()
	eventually(t, "104 and 105 in pending", func() bool { return hub.Pending(c) == 2 })
	var got []hub.Item
	for !slices.ContainsFunc(got, func(it hub.Item) bool { return it.Msg != nil && it.Msg.ID.Seq == 105 }) {
		select {
		case <-hub.Wake(c):
		case <-time.After(waitTimeout):
			t.Fatalf("105 never arrived; got %s", describe(got))
		}
		items, err := hub.Drain(c, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, items...)
	}
	wantSeqs(t, got, 100, 101, 102, 103, 104, 105)
}
