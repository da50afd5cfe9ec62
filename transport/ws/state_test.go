package ws_test

import (
	"context"
	"testing"

	"github.com/heraldpush/herald/hub"
)

func (e *env) publishKeyed(topic, key, data string) *hub.Message {
	e.t.Helper()
	msgs, err := e.hub.Publish(context.Background(), hub.Draft{Topic: topic, Key: key, Data: []byte(data)})
	if err != nil {
		e.t.Fatal(err)
	}
	return msgs[0]
}

// TestStateSubscribe: "state": true gets the ok, the state in cursor order,
// {"op":"synced"} with the subscribe's ref, the state's position and the
// patterns, then live events; a second state subscribe on the same
// connection gets its own state and synced.
func TestStateSubscribe(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.publishKeyed("d.1", "a", "1")
	e.publishKeyed("d.2", "a", "2")
	e.publishKeyed("d.1", "a", "3")
	e.publishKeyed("e", "k", "4")
	c := e.dial(nil)
	c.send(`{"op":"subscribe","ref":{"n":1},"topics":["d.*"],"state":true}`)
	c.expect("ok")
	for _, want := range []uint64{2, 3} {
		if f := c.expect("event"); f.seq(t) != want {
			t.Fatalf("state event %s, want %d", f, want)
		}
	}
	f := c.expect("synced")
	if string(f.Ref) != `{"n":1}` || f.seq(t) != 4 || len(f.Topics) != 1 || f.Topics[0] != "d.*" {
		t.Fatalf("synced %s", f)
	}
	m := e.publishKeyed("d.9", "z", "5")
	if f := c.expect("event"); f.ID != m.ID.String() {
		t.Fatalf("got %s, want the live event", f)
	}
	c.send(`{"op":"subscribe","topics":["e"],"state":true}`)
	c.expect("ok")
	if f := c.expect("event"); f.seq(t) != 4 {
		t.Fatalf("state event %s, want 4", f)
	}
	if f := c.expect("synced"); f.Ref != nil || f.seq(t) != 5 {
		t.Fatalf("synced %s, want at 5 without ref", f)
	}
}

// TestStateSubscribeInvalid: a "state" that is not a boolean gets an
// invalid_request error reply and the connection stays usable; on a broker
// without state the reply is not_implemented.
func TestStateSubscribeInvalid(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	for _, msg := range []string{
		`{"op":"subscribe","ref":"s","topics":["a"],"state":"yes"}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"state":1}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"state":{}}`,
	} {
		c.send(msg)
		if f := c.expect("error"); f.Error.Code != "invalid_request" || string(f.Ref) != `"s"` {
			t.Fatalf("%s: got %s", msg, f)
		}
		c.roundTrip("alive")
	}
	e = newEnv(t, envOptions{hub: hub.Options{Broker: noStateBroker{hub.NewMemoryBroker(hub.MemoryOptions{})}}})
	c = e.dial(nil)
	c.send(`{"op":"subscribe","ref":"s","topics":["a"],"state":true}`)
	if f := c.expect("error"); f.Error.Code != "not_implemented" {
		t.Fatalf("got %s, want not_implemented", f)
	}
	c.roundTrip("alive")
	c.subscribe("", "a")
}

// noStateBroker is a memory broker that answers as a broker keeping no
// state does.
type noStateBroker struct{ *hub.MemoryBroker }

func (noStateBroker) State(context.Context, []hub.Pattern) (hub.StateSnapshot, error) {
	return hub.StateSnapshot{}, hub.ErrStateUnsupported
}
