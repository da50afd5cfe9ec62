package brokertest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// testState checks a topic's state: the latest event of each key, apart
// from history retention, a null removing its key, exact at its position
// while another goroutine publishes.
func (s *suite) testState(t *testing.T) {
	b, rec := s.open(t, Options{Size: 4})
	ctx := ctxT(t)
	if _, err := b.State(ctx, pats("st.a")); errors.Is(err, hub.ErrStateUnsupported) {
		t.Skip("the broker keeps no state")
	}
	keyed := func(topic, key, data string) hub.Draft {
		d := draft(t, topic, data)
		d.Key = key
		return d
	}
	state := func() hub.StateSnapshot {
		t.Helper()
		st, err := b.State(ctx, pats("st.a"))
		if err != nil {
			t.Fatalf("failed to read state: %v", err)
		}
		return st
	}
	if st := state(); len(st.Events) != 0 || st.Last.Seq != 0 {
		t.Fatalf("state of a new log = %d events at %d, want none at 0", len(st.Events), st.Last.Seq)
	}
	one := publish(t, ctx, b, keyed("st.a", "k1", `1`))[0]
	publish(t, ctx, b, keyed("st.a", "k2", `2`), keyed("st.b", "k1", `"other topic"`), draft(t, "st.a", `"no key"`))
	two := publish(t, ctx, b, keyed("st.a", "k2", `22`))[0]
	publish(t, ctx, b, keyed("st.a", "k3", `3`))
	gone := publish(t, ctx, b, keyed("st.a", "k3", `null`))[0] // removes k3
	// A broker that derives the state from the log (NATS) must have read
	// the keyed events before retention drops them: a node's own delivery
	// reads them back.
	rec.waitN(t, 7)
	// History keeps 4 events: k1's is no longer retained, its state is.
	for range 4 {
		publish(t, ctx, b, draft(t, "st.c", `"filler"`))
	}
	st := state()
	if len(st.Events) != 2 {
		t.Fatalf("state has %d events, want k1 and k2", len(st.Events))
	}
	sameEvent(t, st.Events[0], one)
	sameEvent(t, st.Events[1], two)
	if st.Last.Seq < gone.ID.Seq+4 || st.Last.Epoch != gone.ID.Epoch {
		t.Fatalf("state at %s, want at least %d in epoch %s", st.Last, gone.ID.Seq+4, gone.ID.Epoch)
	}

}

// testStateMaxKeys checks that past StateMaxKeys a topic's least recently
// written key is dropped, and that each topic has its own bound.
func (s *suite) testStateMaxKeys(t *testing.T) {
	b, _ := s.open(t, Options{StateMaxKeys: 3})
	ctx := ctxT(t)
	if _, err := b.State(ctx, pats("st.a")); errors.Is(err, hub.ErrStateUnsupported) {
		t.Skip("the broker keeps no state")
	}
	for _, k := range []string{"a", "b", "c", "a", "d"} {
		d := draft(t, "st.a", `1`)
		d.Key = k
		publish(t, ctx, b, d)
	}
	d := draft(t, "st.b", `1`)
	d.Key = "x"
	publish(t, ctx, b, d)
	for topic, want := range map[string]string{"st.a": "c a d", "st.b": "x"} {
		st, err := b.State(ctx, pats(topic))
		if err != nil {
			t.Fatalf("failed to read state: %v", err)
		}
		var keys []string
		for _, m := range st.Events {
			keys = append(keys, m.Key)
		}
		// "b" was the least recently written key of st.a when "d" came.
		if got := strings.Join(keys, " "); got != want {
			t.Errorf("state keys of %s = %q, want %q", topic, got, want)
		}
	}
}

// testStateExact checks that a snapshot taken while another goroutine
// publishes is exact at its position: the snapshot and the topic's events
// after it give the state the publisher leaves behind.
func (s *suite) testStateExact(t *testing.T) {
	b, _ := s.open(t, Options{})
	ctx := ctxT(t)
	if _, err := b.State(ctx, pats("st.a")); errors.Is(err, hub.ErrStateUnsupported) {
		t.Skip("the broker keeps no state")
	}
	for round := range 4 {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				d := draft(t, "st.a", fmt.Sprint(i))
				d.Key = fmt.Sprintf("c%d", (i+round)%7)
				if i%5 == 4 {
					d.Data = []byte("null")
				}
				if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
					panic(fmt.Sprintf("brokertest: failed to publish: %v", err))
				}
			}
		}()
		st, err := b.State(ctx, pats("st.a"))
		wg.Wait()
		if err != nil {
			t.Fatalf("failed to read state: %v", err)
		}
		cur := map[string]*hub.Message{}
		for i, m := range st.Events {
			if m.Topic != "st.a" || m.Key == "" || string(m.Data) == "null" || m.ID.Seq > st.Last.Seq {
				t.Fatalf("state event %s does not belong in a snapshot at %s", m.Envelope(), st.Last)
			}
			if i > 0 && m.ID.Seq <= st.Events[i-1].ID.Seq {
				t.Fatalf("state is not ascending by cursor")
			}
			cur[m.Key] = m
		}
		for _, m := range readAll(t, ctx, b, st.Last.Seq, []hub.Pattern{hub.MustPattern("st.a")}, 100, 0) {
			if string(m.Data) == "null" {
				delete(cur, m.Key)
			} else {
				cur[m.Key] = m
			}
		}
		final, err := b.State(ctx, pats("st.a"))
		if err != nil {
			t.Fatalf("failed to read state: %v", err)
		}
		if len(final.Events) != len(cur) {
			t.Fatalf("snapshot at %s and the events after it give %d keys, the state has %d", st.Last, len(cur), len(final.Events))
		}
		for _, m := range final.Events {
			if c := cur[m.Key]; c == nil || c.ID != m.ID {
				t.Fatalf("key %s: state has %s, the snapshot and the events after it give %v", m.Key, m.ID, c)
			}
		}
	}
}

// pats parses patterns.
func pats(ss ...string) []hub.Pattern {
	out := make([]hub.Pattern, len(ss))
	for i, s := range ss {
		out[i] = hub.MustPattern(s)
	}
	return out
}

// testStateTopics checks a snapshot of several topics (a wildcard and a
// literal pattern) on one broker with two publishers.
func (s *suite) testStateTopics(t *testing.T) {
	b, _ := s.open(t, Options{})
	if _, err := b.State(ctxT(t), pats("st.a")); errors.Is(err, hub.ErrStateUnsupported) {
		t.Skip("the broker keeps no state")
	}
	checkStateTopics(t, []hub.Broker{b, b})
}

// testStateTopicsAcrossNodes is testStateTopics with each publisher on a
// node of its own, the snapshot read on the first.
func testStateTopicsAcrossNodes(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	bs := newNodes(t, 2, Options{})
	for i, b := range bs {
		if err := b.Start(func([]*hub.Message) {}); err != nil {
			t.Fatalf("failed to start node %d: %v", i, err)
		}
		t.Cleanup(func() { _ = b.Close() })
	}
	if _, err := bs[0].State(ctxT(t), pats("st.a")); errors.Is(err, hub.ErrStateUnsupported) {
		t.Skip("the broker keeps no state")
	}
	checkStateTopics(t, bs)
}

// checkStateTopics publishes keyed events to topics st.t0..st.t5 (new
// topics keep joining while it reads, and keys are removed, so topics also
// leave) and st.x.y from each of pubs at once, reads the state of
// "st.*" and "st.x.y" from pubs[0] meanwhile, and checks that every
// snapshot is exact at its one position: the snapshot and the events after
// it give the final state of every topic.
func checkStateTopics(t *testing.T, pubs []hub.Broker) {
	ctx := ctxT(t)
	want := pats("st.*", "st.x.y")
	for round := range 3 {
		var wg sync.WaitGroup
		for n, b := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 40 {
					topic := fmt.Sprintf("st.t%dr%d", i%6, round) // new topics each round
					if i%9 == 8 {
						topic = "st.x.y"
					}
					d := draft(t, topic, fmt.Sprint(i))
					d.Key = fmt.Sprintf("n%dk%d", n, i%5)
					if i%7 == 6 {
						d.Data = []byte("null")
					}
					if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
						panic(fmt.Sprintf("brokertest: failed to publish: %v", err))
					}
				}
			}()
		}
		var snaps []hub.StateSnapshot
		for range 3 {
			st, err := pubs[0].State(ctx, want)
			if err != nil {
				t.Fatalf("failed to read state: %v", err)
			}
			snaps = append(snaps, st)
		}
		wg.Wait()
		final, err := pubs[0].State(ctx, want)
		if err != nil {
			t.Fatalf("failed to read state: %v", err)
		}
		finalKeys := foldState(t, final, nil)
		for _, st := range snaps {
			cur := foldState(t, st, want)
			for _, m := range readAll(t, ctx, pubs[0], st.Last.Seq, want, 100, 0) {
				if m.Key == "" {
					continue
				}
				if string(m.Data) == "null" {
					delete(cur, m.Topic+"\n"+m.Key)
				} else {
					cur[m.Topic+"\n"+m.Key] = m
				}
			}
			if len(cur) != len(finalKeys) {
				t.Fatalf("snapshot at %s and the events after it give %d keys, the state has %d", st.Last, len(cur), len(finalKeys))
			}
			for k, m := range finalKeys {
				if c := cur[k]; c == nil || c.ID != m.ID {
					t.Fatalf("%q: state has %s, the snapshot at %s and the events after it give %v", k, m.ID, st.Last, c)
				}
			}
		}
	}
}

// foldState checks a snapshot's form (ascending, nothing after its
// position, only topics that pats match when given) and returns its events
// by topic and key.
func foldState(t *testing.T, st hub.StateSnapshot, pats []hub.Pattern) map[string]*hub.Message {
	t.Helper()
	out := map[string]*hub.Message{}
	for i, m := range st.Events {
		if m.Key == "" || string(m.Data) == "null" || m.ID.Seq > st.Last.Seq || m.ID.Epoch != st.Last.Epoch {
			t.Fatalf("state event %s does not belong in a snapshot at %s", m.Envelope(), st.Last)
		}
		if pats != nil && !slices.ContainsFunc(pats, func(p hub.Pattern) bool { return p.Match(m.Topic) }) {
			t.Fatalf("state event %s matches none of the patterns", m.Envelope())
		}
		if i > 0 && m.ID.Seq <= st.Events[i-1].ID.Seq {
			t.Fatalf("state is not ascending by cursor")
		}
		out[m.Topic+"\n"+m.Key] = m
	}
	return out
}
