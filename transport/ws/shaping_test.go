package ws_test

import (
	"fmt"
	"testing"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/testkit/payload"
)

// applier plays event frames as herald.js does: a delta is applied to the
// data last received for the same topic and key.
type applier struct {
	t      testing.TB
	last   map[string][]byte
	deltas int
}

func (a *applier) data(f frame) string {
	a.t.Helper()
	if a.last == nil {
		a.last = map[string][]byte{}
	}
	k := f.Topic + "\x00"
	if f.Key != nil {
		k += *f.Key
	}
	var d []byte
	if f.Delta != nil {
		if f.Data != nil {
			a.t.Fatalf("a frame with both data and delta: %s", f)
		}
		base, ok := a.last[k]
		if !ok {
			a.t.Fatalf("a delta without a base: %s", f)
		}
		var err error
		if d, err = delta.Apply(base, []byte(*f.Delta)); err != nil {
			a.t.Fatalf("%s: %v", f, err)
		}
		a.deltas++
	} else {
		d = f.Data
	}
	if f.Key != nil {
		a.last[k] = d
	}
	return string(d)
}

// TestDeltaSubscribe: "delta":"fossil" gets keyed events after the first of
// each key as deltas that rebuild the published data exactly; another
// connection without deltas gets full data; a resume starts again whole.
func TestDeltaSubscribe(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	c.send(`{"op":"subscribe","ref":"s","topics":["dash.*"],"delta":"fossil"}`)
	c.expect("ok")
	plain := e.dial(nil)
	plain.subscribe("", "dash.*")
	var want []string
	for i := range 8 {
		want = append(want, payload.Dashboard(i))
		e.publishKeyed("dash.1", []string{"a", "b"}[i%2], payload.Dashboard(i))
	}
	a := &applier{t: t}
	var ids []string
	for i := range want {
		f := c.expect("event")
		ids = append(ids, f.ID)
		if got := a.data(f); got != want[i] {
			t.Fatalf("event %d: data %.60q…, want %.60q…", i, got, want[i])
		}
		if f.Delta != nil && len(f.raw) > 400 {
			t.Fatalf("a %d-byte delta frame for a one-field change", len(f.raw))
		}
		if g := plain.expect("event"); g.Delta != nil || string(g.Data) != want[i] {
			t.Fatalf("a connection without deltas got %s", g)
		}
	}
	if a.deltas != 6 {
		t.Fatalf("%d deltas, want 6 (all but the first of each key)", a.deltas)
	}
	// Resuming on a new connection: the first event of each key is whole.
	r := e.dial(nil)
	r.send(fmt.Sprintf(`{"op":"subscribe","topics":["dash.*"],"delta":"fossil","since":%q}`, ids[3]))
	r.expect("ok")
	b := &applier{t: t}
	for i := 4; i < len(want); i++ {
		if got := b.data(r.expect("event")); got != want[i] {
			t.Fatalf("resumed event %d differs", i)
		}
	}
	if b.deltas != 2 {
		t.Fatalf("resumed: %d deltas, want 2", b.deltas)
	}
}

// TestConflateSubscribe: with "conflate", a burst of updates of two keys
// arrives as far fewer events that end on the latest value of each.
func TestConflateSubscribe(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	c.send(`{"op":"subscribe","ref":"s","topics":["px"],"conflate":"200ms"}`)
	c.expect("ok")
	for i := range 200 {
		e.publishKeyed("px", []string{"AAPL", "MSFT"}[i%2], fmt.Sprint(i))
	}
	got := map[string]string{}
	n := 0
	for got["AAPL"] != "198" || got["MSFT"] != "199" {
		f := c.expect("event")
		n++
		got[*f.Key] = string(f.Data)
	}
	if n > 20 {
		t.Fatalf("%d events for a 200-event burst: not conflated", n)
	}
	c.roundTrip("alive")
}

// TestShapingInvalid: an unknown delta format or a conflate interval out
// of range gets an invalid_request reply; the connection stays usable.
func TestShapingInvalid(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	for _, msg := range []string{
		`{"op":"subscribe","ref":"s","topics":["a"],"delta":"xdelta"}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"delta":"FOSSIL"}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"conflate":"10ms"}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"conflate":"2m"}`,
		`{"op":"subscribe","ref":"s","topics":["a"],"conflate":"soon"}`,
	} {
		c.send(msg)
		if f := c.expect("error"); f.Error.Code != "invalid_request" || string(f.Ref) != `"s"` {
			t.Fatalf("%s: got %s", msg, f)
		}
		c.roundTrip("alive")
	}
	c.send(`{"op":"subscribe","ref":"s","topics":["a"],"delta":true}`)
	if f := c.expect("error"); f.Error.Code != "invalid_json" {
		t.Fatalf("delta true: got %s", f)
	}
	c.roundTrip("alive")
}
