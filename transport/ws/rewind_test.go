package ws_test

import (
	"fmt"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/rewindtest"
)

// nextEvent reads the next frame and checks that it is an event.
func (c *client) nextEvent() uint64 {
	c.t.Helper()
	return c.expect("event").seq(c.t)
}

// subscribeRewind subscribes with a rewind and waits for the ok.
func (c *client) subscribeRewind(rewind any, topics ...string) {
	c.t.Helper()
	c.send(map[string]any{"op": "subscribe", "ref": "sub", "topics": topics, "rewind": rewind})
	if f := c.expect("ok"); string(f.Ref) != `"sub"` {
		c.t.Fatalf("subscribe reply %s: wrong ref", f)
	}
}

// TestRewindConcurrent: "rewind": N with a publisher running throughout
// gets the newest N matching events as of a moment during the subscribe,
// then every later one: the whole sequence is the history's, without a gap
// or a duplicate.
func TestRewindConcurrent(t *testing.T) {
	e := newEnv(t, envOptions{})
	topics := []string{"r.a", "r.b", "x.c.d", "other"}
	for i := range 400 {
		e.publish(topics[i%len(topics)], i)
	}
	for _, n := range []int{1, 37, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			pats := []string{"r.*", "x.>"}
			p := rewindtest.Publish(t, e.hub, topics, 300)
			defer p.Wait()
			c := e.dial(nil)
			lo := rewindtest.Head(t, e.hub)
			c.subscribeRewind(n, pats...)
			rewindtest.Receive(t, e.hub, p, pats, n, lo, c.nextEvent)
		})
	}
}

// TestRewindQuiet: exact events on a quiet log, for wildcards, several
// patterns, more than retained, a cursor that wins, and several subscribes
// on one connection.
func TestRewindQuiet(t *testing.T) {
	// Event i+1 is of topics[i%4]; the newest 100 of 150 are retained.
	topics := []string{"a.b", "a.c.d", "e", "f.g"}
	var fg []uint64
	for seq := uint64(51); seq <= 150; seq++ {
		if seq%4 == 0 {
			fg = append(fg, seq)
		}
	}
	type op struct {
		topics []string
		rewind any
		since  uint64
		want   []uint64 // the events that follow the ok
	}
	for _, tc := range []struct {
		name string
		ops  []op
		live string // then an event of live arrives
	}{
		{"wildcard", []op{{[]string{"a.*"}, 3, 0, []uint64{141, 145, 149}}}, "a.b"},
		{"patterns together", []op{{[]string{"a.>", "e"}, 4, 0, []uint64{146, 147, 149, 150}}}, "a.x.y"},
		{"more than retained", []op{{[]string{"f.g"}, 1000, 0, fg}}, "f.g"},
		{"zero", []op{{[]string{"e"}, 0, 0, nil}}, "e"},
		{"null", []op{{[]string{"e"}, nil, 0, nil}}, "e"},
		{"cursor wins", []op{{[]string{"e"}, 5, 141, []uint64{143, 147}}}, "e"},
		// A rewind on a connection that was sent events never goes back
		// before the last one sent (one order)...
		{"second subscribe", []op{
			{[]string{"e"}, 1, 0, []uint64{147}},
			{[]string{"f.g"}, 5, 0, []uint64{148}},
		}, "f.g"},
		// ...and on one that was not, it gives the newest of its own.
		{"second subscribe, nothing sent", []op{
			{[]string{"q"}, 3, 0, nil},
			{[]string{"a.b", "e"}, 2, 0, []uint64{147, 149}},
		}, "q"},
		// A subscribe of a pattern the connection has is a re-subscribe:
		// its rewind too starts after the last event sent.
		{"re-subscribe", []op{
			{[]string{"e"}, 2, 0, []uint64{143, 147}},
			{[]string{"e"}, 10, 0, nil},
		}, "e"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOptions{hub: hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 100})}})
			for i := range 150 {
				e.publish(topics[i%len(topics)], i)
			}
			c := e.dial(nil)
			for _, o := range tc.ops {
				m := map[string]any{"op": "subscribe", "ref": "sub", "topics": o.topics, "rewind": o.rewind}
				if o.since != 0 {
					m["since"] = hub.Cursor{Epoch: e.hub.Epoch(), Seq: o.since}.String()
				}
				c.send(m)
				c.expect("ok")
				for _, w := range o.want {
					if got := c.nextEvent(); got != w {
						t.Fatalf("%v: got %d, want %d (of %v)", o.topics, got, w, o.want)
					}
				}
			}
			live := e.publish(tc.live, "live")
			got := c.nextEvent()
			// Without a rewind the subscription is live from the subscribe
			// on, and events published before it may still be on their way.
			for last := tc.ops[len(tc.ops)-1]; (last.rewind == 0 || last.rewind == nil) && got < live.ID.Seq; {
				got = c.nextEvent()
			}
			if got != live.ID.Seq {
				t.Fatalf("got %d, want the live event %d", got, live.ID.Seq)
			}
		})
	}
}

// TestRewindInvalid: a rewind that is not an integer in 0..1000 gets an
// error reply with invalid_request, subscribes nothing, and the connection
// stays usable.
func TestRewindInvalid(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	for _, v := range []string{`-1`, `1001`, `"x"`, `1.5`, `"5"`, `1e2`, `true`, `{}`, `[]`} {
		c.send(`{"op":"subscribe","ref":"bad","topics":["a"],"rewind":` + v + `}`)
		f := c.expect("error")
		if f.Error == nil || f.Error.Code != "invalid_request" || string(f.Ref) != `"bad"` {
			t.Fatalf("rewind %s: got %s, want invalid_request for ref \"bad\"", v, f)
		}
		c.roundTrip("after " + v)
	}
	// Nothing was subscribed to "a"; the connection still subscribes.
	c.subscribeRewind(0, "b")
	e.publish("a", 1)
	m := e.publish("b", 2)
	if got := c.nextEvent(); got != m.ID.Seq {
		t.Fatalf("got event %d, want only %d of b", got, m.ID.Seq)
	}
}
