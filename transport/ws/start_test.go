package ws_test

import (
	"testing"

	"github.com/heraldpush/herald/hub"
)

// TestSubscribeStart: the ok of a subscribe without since carries the
// cursor the subscription starts at. A connection dropped before any event,
// resumed from that cursor on a new one, gets every matching event
// published meanwhile, in order, once, then the live ones. With since or
// state, the ok carries no id.
func TestSubscribeStart(t *testing.T) {
	e := newEnv(t, envOptions{})
	var all []*hub.Message // the "s" events, in order
	for i := range 3 {
		all = append(all, e.publish("s", -1-i))
	}
	c := e.dial(nil)
	c.send(map[string]any{"op": "subscribe", "ref": 1, "topics": []string{"s"}})
	ok := c.expect("ok")
	start, err := hub.ParseCursor(ok.ID)
	if err != nil || start.Epoch != e.hub.Epoch() || start.Seq > all[len(all)-1].ID.Seq {
		t.Fatalf("ok %s: id is not a cursor of this log at or before the head", ok)
	}
	c.c.CloseNow()
	for i := range 4 {
		all = append(all, e.publish("s", i))
		e.publish("other", i)
	}

	c = e.dial(nil)
	c.send(map[string]any{"op": "subscribe", "ref": 2, "topics": []string{"s"}, "since": ok.ID})
	if f := c.expect("ok"); f.ID != "" {
		t.Fatalf("ok %s of a subscribe with since: want no id", f)
	}
	for _, m := range all {
		if m.ID.Seq <= start.Seq {
			continue
		}
		if got := c.nextEvent(); got != m.ID.Seq {
			t.Fatalf("got event %d, want %d", got, m.ID.Seq)
		}
	}
	live := e.publish("s", "live")
	if got := c.nextEvent(); got != live.ID.Seq {
		t.Fatalf("got event %d, want the live one %d: a duplicate", got, live.ID.Seq)
	}

	c.send(map[string]any{"op": "subscribe", "ref": 3, "topics": []string{"k"}, "state": true})
	if f := c.expect("ok"); f.ID != "" {
		t.Fatalf("ok %s of a state subscribe: want no id (the synced's is the cursor)", f)
	}
	if f := c.expect("synced"); f.ID == "" {
		t.Fatalf("synced %s without id", f)
	}
}

// TestSubscribeStartRewind: with a rewind, the ok's id comes first and the
// rewound events follow; a client that keeps the ok's id, then each
// event's, resumes exactly wherever it is cut off.
func TestSubscribeStartRewind(t *testing.T) {
	e := newEnv(t, envOptions{})
	var all []*hub.Message
	for i := range 5 {
		all = append(all, e.publish("r", i))
	}
	c := e.dial(nil)
	c.send(map[string]any{"op": "subscribe", "ref": 1, "topics": []string{"r"}, "rewind": 3})
	ok := c.expect("ok")
	if _, err := hub.ParseCursor(ok.ID); err != nil {
		t.Fatalf("ok %s: no start cursor", ok)
	}
	first := c.expect("event")
	if first.seq(t) != all[2].ID.Seq {
		t.Fatalf("first rewound event %s, want %s", first, all[2].ID)
	}
	c.c.CloseNow()
	all = append(all, e.publish("r", "meanwhile"))

	c = e.dial(nil)
	c.send(map[string]any{"op": "subscribe", "ref": 2, "topics": []string{"r"}, "since": first.ID, "rewind": 3})
	c.expect("ok")
	for _, m := range all {
		if m.ID.Seq <= first.seq(t) {
			continue
		}
		if got := c.nextEvent(); got != m.ID.Seq {
			t.Fatalf("got event %d, want %d", got, m.ID.Seq)
		}
	}
}
