package brokertest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// deduped returns a normalized draft with a dedupe key.
func deduped(t testing.TB, topic, key, data string) hub.Draft {
	d := draft(t, topic, data)
	d.Dedupe = key
	return d
}

// testDedupe checks Draft.Dedupe: a key appended once is skipped when it
// comes again, in a later publish or later in the same batch, and the
// skipped places are nil; a batch's other events are appended in order;
// readers and deliver see each event once; publishers racing with one key
// append it once.
func (s *suite) testDedupe(t *testing.T) {
	b, r := s.open(t, Options{})
	ctx := ctxT(t)
	first := publish(t, ctx, b, deduped(t, "dedupe.a", "row:1", `1`), draft(t, "dedupe.a", `2`))
	if first[0] == nil || first[1] == nil {
		t.Fatalf("a new dedupe key was skipped: %v", first)
	}
	again := publish(t, ctx, b,
		deduped(t, "dedupe.a", "row:1", `1`), deduped(t, "dedupe.a", "row:2", `3`),
		draft(t, "dedupe.a", `4`), deduped(t, "dedupe.a", "row:2", `3`))
	if again[0] != nil || again[3] != nil {
		t.Fatalf("a dedupe key appended before was appended again (appended: first %v, last %v)", again[0] != nil, again[3] != nil)
	}
	if again[1] == nil || again[2] == nil {
		t.Fatalf("a new event of a batch with duplicates was skipped (appended: %v, %v)", again[1] != nil, again[2] != nil)
	}
	if again[2].ID.Seq <= again[1].ID.Seq || again[1].ID.Seq <= first[1].ID.Seq {
		t.Fatalf("events out of order: %d, %d after %d", again[1].ID.Seq, again[2].ID.Seq, first[1].ID.Seq)
	}
	want := []*hub.Message{first[0], first[1], again[1], again[2]}
	got := readAll(t, ctx, b, 0, all, 100, 0)
	if len(got) != len(want) {
		t.Fatalf("Read returned %d events, want %d", len(got), len(want))
	}
	for i := range got {
		sameEvent(t, got[i], want[i])
	}

	// Racing publishers, each with a batch of the same keys.
	const racers, keys = 8, 5
	var appended atomic.Int64
	var wg sync.WaitGroup
	for range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds := make([]hub.Draft, keys)
			for k := range ds {
				ds[k] = deduped(t, "dedupe.race", fmt.Sprintf("race:%d", k), fmt.Sprint(k))
			}
			msgs, err := b.Publish(ctx, ds)
			if err != nil {
				t.Errorf("failed to publish: %v", err)
				return
			}
			for _, m := range msgs {
				if m != nil {
					appended.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := appended.Load(); n != keys {
		t.Fatalf("%d publishers of the same %d keys appended %d events, want %d", racers, keys, n, keys)
	}
	delivered := r.waitN(t, len(want)+keys)
	seen := map[string]int{}
	for _, m := range delivered {
		seen[string(m.Data)+"@"+m.Topic]++
	}
	for k := range keys {
		if n := seen[fmt.Sprint(k)+"@dedupe.race"]; n != 1 {
			t.Errorf("event %d of the race delivered %d times, want once", k, n)
		}
	}
	r.check(t)
}

// testDedupeAcrossNodes checks that a dedupe key is one key for the whole
// cluster: nodes publishing the same keys at once append each once, and
// every node delivers it once.
func testDedupeAcrossNodes(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	const nodes, keys = 2, 20
	bs := newNodes(t, nodes, Options{})
	recs := startNodes(t, bs)
	ctx := ctxT(t)
	var appended atomic.Int64
	var wg sync.WaitGroup
	for _, b := range bs {
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range keys {
					msgs, err := b.Publish(ctx, []hub.Draft{deduped(t, "dedupe.nodes", fmt.Sprintf("nodes:%d", k), fmt.Sprint(k))})
					if err != nil {
						t.Errorf("failed to publish: %v", err)
						return
					}
					if msgs[0] != nil {
						appended.Add(1)
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := appended.Load(); n != keys {
		t.Fatalf("%d publishers on %d nodes appended %d of %d keys, want each once", 2*nodes, nodes, n, keys)
	}
	for i, r := range recs {
		seen := map[string]int{}
		for _, m := range r.waitN(t, keys) {
			seen[string(m.Data)]++
		}
		for k := range keys {
			if n := seen[fmt.Sprint(k)]; n != 1 {
				t.Errorf("node %d delivered key %d %d times, want once", i, k, n)
			}
		}
		r.check(t)
	}
}
