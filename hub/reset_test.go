package hub_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// TestResetReasons: a cursor that cannot be served yields exactly one Reset
// (reason, the subscription's patterns, the head cursor) before anything
// else of that subscription, then live events, and nothing at or before the
// reset cursor.
func TestResetReasons(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 5}), Shards: 2})
	for i := range 20 {
		pub(t, h, "r.a", fmt.Sprint(i))
	}
	other := newHub(t, hub.Options{})
	foreign := pub(t, other, "r.a", "0").ID.String()
	epoch := h.Epoch()
	at := func(seq func(b hub.Bounds) uint64) func(hub.Bounds) string {
		return func(b hub.Bounds) string { return hub.Cursor{Epoch: epoch, Seq: seq(b)}.String() }
	}
	fixed := func(s string) func(hub.Bounds) string { return func(hub.Bounds) string { return s } }
	cases := []struct {
		name   string
		since  func(hub.Bounds) string
		reason string
	}{
		{"older than retention", at(func(hub.Bounds) uint64 { return 3 }), hub.ReasonHistoryGone},
		{"just before retention", at(func(b hub.Bounds) uint64 { return b.First - 2 }), hub.ReasonHistoryGone},
		{"another hub's cursor", fixed(foreign), hub.ReasonEpochChanged},
		{"another epoch, same shape", fixed(hub.Cursor{Epoch: "zzzzzzzzzz", Seq: 18}.String()), hub.ReasonEpochChanged},
		{"malformed", fixed("garbage"), hub.ReasonUnknownCursor},
		{"malformed seq", fixed(epoch + "-x"), hub.ReasonUnknownCursor},
		{"future seq", at(func(b hub.Bounds) uint64 { return b.Last + 1 }), hub.ReasonUnknownCursor},
		{"largest seq", at(func(hub.Bounds) uint64 { return math.MaxUint64 }), hub.ReasonUnknownCursor},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cl := newClient(t, h, "sse")
			col := collect(t, cl)
			b := head(t, h)
			headSeq := b.Last
			subscribe(t, cl, hub.SubscribeRequest{Patterns: pats("r.*", "x"), Since: c.since(b), Ack: []byte("ack")})
			items := col.waitFor(t, "ack and reset", func(items []hub.Item, _ error) bool { return len(items) >= 2 })
			if string(items[0].Raw) != "ack" || items[1].Reset == nil {
				t.Fatalf("got %s, want ack, then reset", describe(items))
			}
			r := items[1].Reset
			if r.Reason != c.reason || !slices.Equal(r.Topics, []string{"r.*", "x"}) || r.Cursor != (hub.Cursor{Epoch: epoch, Seq: headSeq}) {
				t.Fatalf("reset = %+v, want %s with topics [r.* x] at %s-%d", r, c.reason, epoch, headSeq)
			}
			// Then live events after the reset cursor, nothing older.
			eventually(t, "the replay to end", func() bool { return !hub.Catching(cl) })
			m1 := pub(t, h, "r.a", `"live"`)
			m2 := pub(t, h, "r.b", `"live"`)
			items = col.waitSeq(t, m2.ID.Seq)
			wantSeqs(t, items[2:], m1.ID.Seq, m2.ID.Seq)
			if m1.ID.Seq != headSeq+1 {
				t.Fatalf("test bug: something else published (%d after %d)", m1.ID.Seq, headSeq)
			}
		})
	}
	t.Run("oldest retained is fine", func(t *testing.T) {
		// First-1 is still servable: no reset, the 5 retained events follow.
		b := head(t, h)
		cl := newClient(t, h, "sse")
		col := collect(t, cl)
		subscribe(t, cl, hub.SubscribeRequest{Patterns: pats("r.*"), Since: hub.Cursor{Epoch: epoch, Seq: b.First - 1}.String()})
		items := col.waitSeq(t, b.Last)
		wantSeqs(t, items, b.First, b.First+1, b.First+2, b.First+3, b.Last)
	})
}

// TestResetWhenReplayFallsBehind: a replay that is held (its writer does not
// drain) while retention moves past it tells the client history_gone at the
// head and continues from there, without events from the lost range.
func TestResetWhenReplayFallsBehind(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10}), Shards: 1, QueueBytes: 1, ReplayWait: waitTimeout})
	for i := range 20 {
		pub(t, h, "f.a", fmt.Sprint(i))
	}
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("f.a"), Since: cur(h, 10)})
	waitClosed(t, col.woke, "the replay's first event") // 11..20 read; 11 queued, the rest waits
	for i := range 30 {
		pub(t, h, "f.a", fmt.Sprint(i)) // 21..50: 11..40 fall out of retention
	}
	col.open()
	items := col.waitFor(t, "a reset", func(items []hub.Item, _ error) bool {
		return slices.ContainsFunc(items, func(it hub.Item) bool { return it.Reset != nil })
	})
	i := slices.IndexFunc(items, func(it hub.Item) bool { return it.Reset != nil })
	wantSeqs(t, items[:i], 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
	if r := items[i].Reset; r.Reason != hub.ReasonHistoryGone || r.Cursor.Seq != 50 || !slices.Equal(r.Topics, []string{"f.a"}) {
		t.Fatalf("reset = %+v, want history_gone at 50 for [f.a]", r)
	}
	// With a one-event queue, publish live only once the replay has ended
	// and the reset has been drained.
	eventually(t, "the replay to end", func() bool { return !hub.Catching(c) })
	m := pub(t, h, "f.a", `"live"`)
	items = col.waitSeq(t, m.ID.Seq)
	if got := items[i+1:]; len(got) != 1 || got[0].Msg != m {
		t.Fatalf("after the reset got %s, want only %d", describe(got), m.ID.Seq)
	}
}
