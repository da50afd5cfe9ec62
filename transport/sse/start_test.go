package sse_test

import (
	"net/http"
	"strconv"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// TestStreamStart: a stream opened without a cursor starts (after the retry
// hint) with a block of only "id: CURSOR", the position it starts at. A
// stream dropped before any event and reopened with that cursor as
// Last-Event-ID gets every matching event published meanwhile, in order,
// once, then the live ones. With a cursor or state there is no such block.
func TestStreamStart(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	var all []*hub.Message
	for i := range 3 {
		all = append(all, publish(t, f.hub, "s", "", strconv.Itoa(-1-i)))
	}
	s := f.open([]string{"s"}, nil) // reads and checks the start block
	start, err := hub.ParseCursor(s.start)
	if err != nil || start.Epoch != f.hub.Epoch() || start.Seq > all[len(all)-1].ID.Seq {
		t.Fatalf("start %q is not a cursor of this log at or before the head", s.start)
	}
	s.close()
	for i := range 4 {
		all = append(all, publish(t, f.hub, "s", "", strconv.Itoa(i)))
		publish(t, f.hub, "other", "", strconv.Itoa(i))
	}

	s = f.open([]string{"s"}, http.Header{"Last-Event-ID": {s.start}})
	for _, m := range all {
		if m.ID.Seq <= start.Seq {
			continue
		}
		if fr := s.nextEvent(); fr.Raw != expectFrame(m) {
			t.Fatalf("got %q, want %q", fr.Raw, expectFrame(m))
		}
	}
	live := publish(t, f.hub, "s", "", `"live"`)
	if fr := s.nextEvent(); fr.Raw != expectFrame(live) {
		t.Fatalf("got %q, want the live event %q: a duplicate", fr.Raw, expectFrame(live))
	}

	// A state stream's cursor is its herald.synced's id: nothing before it.
	st := f.open([]string{"k"}, nil, "state", "1")
	if fr := st.next(); fr.Event != sse.SyncedEvent {
		t.Fatalf("state stream: first frame %q, want the synced", fr.Raw)
	}
}

// TestStreamStartRewind: with a rewind the start block comes first, then
// the rewound events, each with its own id; resuming from any of them
// misses nothing.
func TestStreamStartRewind(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	var all []*hub.Message
	for i := range 5 {
		all = append(all, publish(t, f.hub, "r", "", strconv.Itoa(i)))
	}
	s := f.open([]string{"r"}, nil, "rewind", "3")
	first := s.nextEvent()
	if first.Raw != expectFrame(all[2]) {
		t.Fatalf("first rewound event %q, want %q", first.Raw, expectFrame(all[2]))
	}
	s.close()
	all = append(all, publish(t, f.hub, "r", "", `"meanwhile"`))
	s = f.open([]string{"r"}, http.Header{"Last-Event-ID": {first.ID}}, "rewind", "3")
	for _, m := range all[3:] {
		if fr := s.nextEvent(); fr.Raw != expectFrame(m) {
			t.Fatalf("got %q, want %q", fr.Raw, expectFrame(m))
		}
	}
}
