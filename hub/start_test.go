package hub_test

import (
	"slices"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// startOf returns a SubscribeRequest.Start that records the start it is
// given, and the frame it queues.
func startOf(got *hub.Cursor) func(hub.Cursor) []byte {
	return func(c hub.Cursor) []byte {
		*got = c
		return []byte("start " + c.String())
	}
}

// TestStartUnderDispatchLag: a subscription without a cursor starts at the
// position dispatched when it registered, which lags the log when the
// broker's delivery does: every matching event after it reaches the
// subscription (live), and a resume from it on another connection gets
// the same events, none twice. The start is queued before any event.
func TestStartUnderDispatchLag(t *testing.T) {
	lag := newLaggy(hub.MemoryOptions{})
	h := newHub(t, hub.Options{Broker: lag, Shards: 1})
	publishTopics(t, h, "x", "y", "x") // 1..3
	settle(t, h)
	lag.Pause()
	publishTopics(t, h, "x", "y", "x") // 4..6, in the log, not dispatched
	c := newClient(t, h, "ws")
	col := collect(t, c)
	var start hub.Cursor
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("x"), Ack: []byte("ack"), Start: startOf(&start)})
	if want := (hub.Cursor{Epoch: h.Epoch(), Seq: 3}); start != want {
		t.Fatalf("start %v, want %v: the dispatched position", start, want)
	}
	lag.Resume()
	seven := pub(t, h, "x", "7").ID.Seq
	items := col.waitSeq(t, seven)
	if len(items) == 0 || string(items[0].Raw) != "start "+start.String() {
		t.Fatalf("got %s, want the start first", describe(items))
	}
	if got := msgSeqs(items); !slices.Equal(got, []uint64{4, 6, seven}) {
		t.Fatalf("live: got %s, want 4 6 %d", describe(items), seven)
	}

	// A resume from the start, as a client cut off before any event makes.
	r := newClient(t, h, "ws")
	rcol := collect(t, r)
	var none hub.Cursor
	subscribe(t, r, hub.SubscribeRequest{Patterns: pats("x"), Since: start.String(), Ack: []byte("ack"), Start: startOf(&none)})
	if none != (hub.Cursor{}) {
		t.Fatalf("a subscription with since got a start %v", none)
	}
	items = rcol.waitSeq(t, seven)
	if string(items[0].Raw) != "ack" || !slices.Equal(msgSeqs(items), []uint64{4, 6, seven}) {
		t.Fatalf("resume: got %s, want ack 4 6 %d", describe(items), seven)
	}

	// A state subscription's cursor is its synced's: no start.
	s := newClient(t, h, "ws")
	scol := collect(t, s)
	subscribe(t, s, hub.SubscribeRequest{Patterns: pats("x"), State: true, Synced: syncedFrame("s"), Ack: []byte("ack"), Start: startOf(&none)})
	items = scol.waitFor(t, "the synced", func(items []hub.Item, _ error) bool { return slices.ContainsFunc(items, isSynced) })
	if none != (hub.Cursor{}) || string(items[0].Raw) != "ack" {
		t.Fatalf("state: got %s and a start %v, want the ack and no start", describe(items), none)
	}
}
