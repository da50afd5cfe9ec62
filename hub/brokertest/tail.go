package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// testReplayFromTail runs a hub on each of two nodes: subscribers of the
// second resume from a cursor while the first keeps publishing, as the
// subscribers of a dead node do on the survivors. Each gets every event
// after its cursor once, in order, and the second node serves their
// catch-up from its tail of the log (hub.Options.TailBytes), which the
// cluster brokers support by reporting skips in their delivery.
func testReplayFromTail(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	bs := newNodes(t, 2, Options{Size: 10_000})
	hubs := make([]*hub.Hub, 2)
	for i, b := range bs {
		if _, ok := b.(hub.SkipReporter); !ok {
			t.Fatalf("%T does not report skips in its delivery: the hub keeps no tail on it", b)
		}
		hubs[i] = startHub(t, hub.Options{Broker: b})
	}
	ctx := ctxT(t)
	pats := []hub.Pattern{hub.MustPattern("tail.b")}
	var mu sync.Mutex
	var want []uint64 // tail.b after the cursor
	var cursor hub.Cursor
	publishRound := func(round int) {
		ds := make([]hub.Draft, 6)
		for i := range ds {
			ds[i] = draft(t, fmt.Sprintf("tail.%c", "abc"[i%3]), fmt.Sprint(round*6+i))
		}
		msgs := publish(t, ctx, hubs[0].Broker(), ds...)
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			if m.Topic == "tail.b" && cursor.Epoch != "" && m.ID.Seq > cursor.Seq {
				want = append(want, m.ID.Seq)
			}
		}
	}
	for r := range 20 {
		publishRound(r)
	}
	// The cursor: an event the second node has delivered, so inside its tail.
	w := subscribeServed(t, hubs[1], hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("tail.mark")}})
	mark := publish(t, ctx, hubs[0].Broker(), draft(t, "tail.mark", "0"))
	w.waitLen(t, 1)
	mu.Lock()
	cursor = mark[0].ID
	mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := 20; r < 80; r++ {
			publishRound(r)
		}
	}()
	ws := make([]*itemsWriter, 10)
	for i := range ws {
		ws[i] = subscribeServed(t, hubs[1], hub.SubscribeRequest{Patterns: pats, Since: cursor.String()})
	}
	<-done
	last := publish(t, ctx, hubs[0].Broker(), draft(t, "tail.b", `"last"`))
	want = append(want, last[0].ID.Seq)
	for i, w := range ws {
		if got := w.waitLen(t, len(want)); !slices.Equal(got, want) {
			t.Fatalf("subscriber %d got %v,\nwant %v", i, got, want)
		}
	}
	if pages := hubs[1].Stats().ReplayPages; pages["tail"] == 0 {
		t.Fatalf("no replay page came from the tail: %v", pages)
	}
}

// testSkipReported: a node whose delivery is held up while the log moves
// past its retention resumes after the events it missed, and says so
// first (hub.SkipReporter), with the position it resumes at: the hub's
// tail must not join the events before the gap to those after it.
func testSkipReported(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	const size = 20
	bs := newNodes(t, 2, Options{Size: size})
	release := make(chan struct{})
	var mu sync.Mutex
	var got []uint64 // delivered seqs, and 0 where the skip came
	var skips []uint64
	first := make(chan struct{})
	var once sync.Once
	bs[0].(hub.SkipReporter).OnSkip(func(next uint64) {
		mu.Lock()
		defer mu.Unlock()
		skips = append(skips, next)
		got = append(got, 0)
	})
	if err := bs[0].Start(func(msgs []*hub.Message) {
		mu.Lock()
		for _, m := range msgs {
			got = append(got, m.ID.Seq)
		}
		mu.Unlock()
		once.Do(func() { close(first) })
		<-release // held up: the log moves on meanwhile
	}); err != nil {
		t.Fatal(err)
	}
	if err := bs[1].Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i, b := range bs {
			if err := b.Close(); err != nil {
				t.Errorf("failed to close node %d: %v", i, err)
			}
		}
	})
	ctx := ctxT(t)
	publish(t, ctx, bs[1], draft(t, "skip.a", "0"))
	select {
	case <-first:
	case <-time.After(waitTimeout):
		t.Fatal("the first event was not delivered")
	}
	// Far more than the retention, and than a reader may have fetched
	// ahead of its delivery (the NATS consumer's 512).
	for i := range 20 {
		ds := make([]hub.Draft, 100)
		for j := range ds {
			ds[j] = draft(t, "skip.a", fmt.Sprint(i*100+j))
		}
		publish(t, ctx, bs[1], ds...)
	}
	last := publish(t, ctx, bs[1], draft(t, "skip.a", `"last"`))[0].ID.Seq
	close(release)
	wait.For(t, waitTimeout, fmt.Sprintf("delivery to reach %d", last), func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == last
	})
	mu.Lock()
	seqs, all := slices.Clone(got), slices.Clone(skips)
	mu.Unlock()
	sk := all
	if len(sk) == 0 {
		t.Fatalf("events were missed without a skip reported: %v", seqs)
	}
	// Every gap between two delivered events was reported before the
	// later one was delivered, with a position inside it. A skip may be
	// reported while events from before it are still to be delivered
	// (NATS holds a batch until it is whole).
	var reported []uint64
	prev := uint64(0)
	for _, s := range seqs {
		if s == 0 {
			reported = append(reported, sk[0])
			sk = sk[1:]
			continue
		}
		if prev != 0 && s <= prev {
			t.Fatalf("delivered %d after %d: %v", s, prev, seqs)
		}
		if prev != 0 && s != prev+1 && !slices.ContainsFunc(reported, func(n uint64) bool { return n > prev && n <= s }) {
			t.Fatalf("a gap without a skip reported before it, %d then %d (skips to %v): %v", prev, s, all, seqs)
		}
		prev = s
	}
}
