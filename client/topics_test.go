package client

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// State reads a keyed topic's latest event of each key, oldest first, and
// the position it is exact at; Presence its members as they joined.
func TestStateAndPresence(t *testing.T) {
	node := start(t, server.Config{})
	c := dial(t, node.URL, Options{})
	ctx := testCtx(t)
	var last string
	for _, p := range []struct{ key, data string }{{"a", "1"}, {"b", "2"}, {"a", "3"}, {"c", "null"}} {
		id, err := c.Publish(ctx, "doc", "", json.RawMessage(p.data), WithKey(p.key))
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	st, err := c.State(ctx, "doc")
	if err != nil {
		t.Fatal(err)
	}
	if st.Cursor != last || len(st.Events) != 2 || st.Events[0].Key != "b" || string(st.Events[0].Data) != "2" ||
		st.Events[1].Key != "a" || string(st.Events[1].Data) != "3" {
		t.Fatalf("state %+v, want b=2 then a=3 at %s", st, last)
	}
	if _, err := c.State(ctx, "bad topic"); err == nil {
		t.Fatal("the state of an invalid topic")
	}

	member, err := c.Subscribe(ctx, []string{"room"}, &SubscribeOptions{Presence: true, Info: json.RawMessage(`{"name":"Ann"}`)})
	if err != nil {
		t.Fatal(err)
	}
	// The subscribe's ok comes before its join is published
	// (docs/protocol.md), so the member shows up soon after, not at once.
	var p *Presence
	wait.For(t, 5*time.Second, "the member", func() bool {
		var err error
		if p, err = c.Presence(ctx, "room"); err != nil {
			t.Fatal(err)
		}
		return len(p.Members) > 0
	})
	if p.Cursor == "" || p.Clients != 1 || p.Users != 0 || len(p.Members) != 1 {
		t.Fatalf("presence %+v, want one member", p)
	}
	if m := p.Members[0]; m.Client != member.ClientID() || m.User != "" || string(m.Info) != `{"name":"Ann"}` ||
		string(m.Raw) != `{"client":"`+member.ClientID()+`","user":null,"info":{"name":"Ann"}}` {
		t.Fatalf("member %+v (%s)", m, m.Raw)
	}
}
