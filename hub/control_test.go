package hub_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// TestControlDisconnect: a disconnect by user closes every connection of
// that user and no other; by client, the one connection named; each with
// hub.ErrDisconnected, which the transports close with 4001.
func TestControlDisconnect(t *testing.T) {
	h := newHub(t, hub.Options{})
	ctx := context.Background()
	ann1, ann2, bob, anon := newClient(t, h, "test"), newClient(t, h, "test"), newClient(t, h, "test"), newClient(t, h, "test")
	ann1.SetUser("ann")
	ann2.SetUser("ann")
	bob.SetUser("bob")
	cols := map[string]*collector{}
	for name, c := range map[string]*hub.Client{"ann1": ann1, "ann2": ann2, "bob": bob, "anon": anon} {
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("news")})
		cols[name] = collect(t, c)
	}
	n, err := h.Control(ctx, hub.Control{Op: hub.ControlDisconnect, User: "ann"})
	if err != nil || n != 2 {
		t.Fatalf("disconnect ann = %d, %v; want 2", n, err)
	}
	for _, name := range []string{"ann1", "ann2"} {
		if err := cols[name].waitErr(t); !errors.Is(err, hub.ErrDisconnected) {
			t.Errorf("%s closed with %v, want ErrDisconnected", name, err)
		}
	}
	if d := hub.DisconnectOf(hub.ErrDisconnected); d.Code != 4001 || d.Reason != "disconnected" || d.Label != "disconnected" {
		t.Errorf("ErrDisconnected = %+v, want 4001 disconnected", d)
	}
	// Once disconnected, they are not counted again, closed or not yet.
	ann1.Close()
	if n, err := h.Control(ctx, hub.Control{Op: hub.ControlDisconnect, User: "ann"}); err != nil || n != 0 {
		t.Errorf("disconnect ann again = %d, %v; want 0", n, err)
	}
	// Another node's connection, or one that never was, is nobody here.
	for _, id := range []string{"othernode-" + strings.SplitN(bob.ConnID(), "-", 2)[1], h.NodeID() + "-zzzz", h.NodeID() + "-", "x"} {
		if n, err := h.Control(ctx, hub.Control{Op: hub.ControlDisconnect, Client: id}); err != nil || n != 0 {
			t.Errorf("disconnect client %q = %d, %v; want 0", id, n, err)
		}
	}
	n, err = h.Control(ctx, hub.Control{Op: hub.ControlDisconnect, Client: anon.ConnID()})
	if err != nil || n != 1 {
		t.Fatalf("disconnect %s = %d, %v; want 1", anon.ConnID(), n, err)
	}
	if err := cols["anon"].waitErr(t); !errors.Is(err, hub.ErrDisconnected) {
		t.Errorf("anon closed with %v, want ErrDisconnected", err)
	}
	m := pub(t, h, "news", `1`)
	cols["bob"].waitSeq(t, m.ID.Seq)
	if _, err := cols["bob"].snapshot(); err != nil {
		t.Errorf("bob was closed: %v", err)
	}
	ann2.Close()
	anon.Close()
	if got := h.Stats().Disconnects["test"]["disconnected"]; got != 3 {
		t.Errorf("disconnects counted as disconnected = %d, want 3", got)
	}
}

// TestControlUnsubscribe: an unsubscribe removes the patterns as written,
// only those, and a member of a topic it removes leaves it.
func TestControlUnsubscribe(t *testing.T) {
	h := newHub(t, hub.Options{})
	ctx := context.Background()
	lobby := newClient(t, h, "test")
	subscribe(t, lobby, hub.SubscribeRequest{Patterns: pats("lobby"), PresenceEvents: true})
	lcol := collect(t, lobby)
	ann := newClient(t, h, "test")
	ann.SetUser("ann")
	subscribe(t, ann, hub.SubscribeRequest{Patterns: pats("room.1", "room.2", "orders.*")})
	subscribe(t, ann, hub.SubscribeRequest{Patterns: pats("lobby"), Presence: true, User: "ann"})
	col := collect(t, ann)
	lcol.waitFor(t, "ann's join", func(items []hub.Item, _ error) bool { return len(presenceEvents(items)) == 1 })

	n, err := h.Control(ctx, hub.Control{Op: hub.ControlUnsubscribe, User: "ann", Topics: []string{"room.1", "orders.1", "lobby"}})
	if err != nil || n != 1 {
		t.Fatalf("unsubscribe = %d, %v; want 1", n, err)
	}
	got := ann.Patterns()
	if strings.Join(sorted(got), ",") != "orders.*,room.2" {
		t.Errorf("ann's patterns = %v, want orders.* and room.2 (orders.1 is not a pattern ann wrote)", got)
	}
	items := lcol.waitFor(t, "ann's leave", func(items []hub.Item, _ error) bool { return len(presenceEvents(items)) == 2 })
	if ev := presenceEvents(items); ev[1].Type != hub.TypeLeave || ev[1].Key != ann.ConnID() {
		t.Errorf("after the unsubscribe lobby got %s %s, want ann's leave", ev[1].Type, ev[1].Key)
	}
	if p := presenceOf(t, h, "lobby"); p.Clients != 0 {
		t.Errorf("lobby presence after the unsubscribe = %+v, want ann gone", p)
	}
	pub(t, h, "room.1", `"gone"`)
	m := pub(t, h, "room.2", `"kept"`)
	for _, it := range col.waitSeq(t, m.ID.Seq) {
		if it.Msg != nil && it.Msg.Topic == "room.1" {
			t.Errorf("ann got an event of room.1 after unsubscribing from it")
		}
	}
	// Nothing left to remove: not counted.
	if n, err := h.Control(ctx, hub.Control{Op: hub.ControlUnsubscribe, User: "ann", Topics: []string{"room.1"}}); err != nil || n != 0 {
		t.Errorf("unsubscribe again = %d, %v; want 0", n, err)
	}
}

func sorted(ss []string) []string {
	out := append([]string(nil), ss...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestValidateControl: what a control operation must be.
func TestValidateControl(t *testing.T) {
	long := strings.Repeat("u", hub.MaxControlUser+1)
	many := make([]string, hub.MaxControlTopics+1)
	for i := range many {
		many[i] = "a"
	}
	bad := []hub.Control{
		{Op: "kick", User: "u"},
		{Op: hub.ControlDisconnect},
		{Op: hub.ControlDisconnect, User: "u", Client: "c"},
		{Op: hub.ControlDisconnect, User: long},
		{Op: hub.ControlDisconnect, Client: strings.Repeat("c", hub.MaxControlClient+1)},
		{Op: hub.ControlDisconnect, User: "u", Topics: []string{"a"}},
		{Op: hub.ControlUnsubscribe, User: "u"},
		{Op: hub.ControlUnsubscribe, User: "u", Topics: []string{}},
		{Op: hub.ControlUnsubscribe, User: "u", Topics: many},
		{Op: hub.ControlUnsubscribe, User: "u", Topics: []string{"a..b"}},
		{Op: hub.ControlDisconnect, User: "\xff"},
	}
	for _, c := range bad {
		err := hub.ValidateControl(c)
		if !errors.Is(err, hub.ErrInvalidControl) && !errors.Is(err, hub.ErrInvalidPattern) {
			t.Errorf("ValidateControl(%.80v) = %v, want a refusal", c, err)
		}
	}
	for _, c := range []hub.Control{
		{Op: hub.ControlDisconnect, User: "u"},
		{Op: hub.ControlDisconnect, Client: "n-1"},
		{Op: hub.ControlUnsubscribe, Client: "n-1", Topics: []string{"a.*", "b.>"}},
	} {
		if err := hub.ValidateControl(c); err != nil {
			t.Errorf("ValidateControl(%v) = %v", c, err)
		}
	}
}

// TestControlUnsubscribeBeforeServe: an unsubscribe that reaches a client
// subscribed but not yet served (an SSE stream whose response is on its
// way) is still told to it, once its writer starts.
func TestControlUnsubscribeBeforeServe(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	c.SetUser("ann")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("room.1", "room.2")})
	n, err := h.Control(context.Background(), hub.Control{Op: hub.ControlUnsubscribe, User: "ann", Topics: []string{"room.1"}})
	if err != nil || n != 1 {
		t.Fatalf("unsubscribe = %d, %v; want 1", n, err)
	}
	r := newRecorder(c)
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Second, Unsubscribed: func(p []string) []byte { return []byte("unsubscribed " + strings.Join(p, ",")) }}, nil)
	eventually(t, "the unsubscribed frame", func() bool { return r.count() > 0 })
	r.mu.Lock()
	got := string(r.items[0].Raw)
	r.mu.Unlock()
	if got != "unsubscribed room.1" {
		t.Errorf("first item %q, want the unsubscribed frame of room.1", got)
	}
	c.Close()
	r.end(t)
}
