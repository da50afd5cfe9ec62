package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// tailedBroker is a MemoryBroker that says it reports skips in delivery
// (it has none), so that the hub keeps a tail on it, as on the cluster
// brokers; it counts the reads that reach it.
type tailedBroker struct {
	*hub.MemoryBroker
	reads atomic.Int64
}

func (b *tailedBroker) OnSkip(func(uint64)) {}

func (b *tailedBroker) Read(ctx context.Context, req hub.ReadRequest) (hub.ReadResult, error) {
	b.reads.Add(1)
	return b.MemoryBroker.Read(ctx, req)
}

// TestReplayFromTail: clients that resume while events keep being
// published (a failover) get every event after their cursors once, in
// order, with no gap at the seam with live delivery. Cursors inside the
// tail are served without reading the broker; older ones read it.
func TestReplayFromTail(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tailEvents int
		since      uint64
		fromBroker bool
	}{
		{"inside the tail", 0, 40, false},
		{"older than the tail", 30, 5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &tailedBroker{MemoryBroker: hub.NewMemoryBroker(hub.MemoryOptions{})}
			h := newHub(t, hub.Options{Broker: b, TailEvents: tc.tailEvents})
			topics := []string{"tl.a", "tl.b", "tl.c"}
			var want []uint64 // seqs of tl.b after the cursor
			var mu sync.Mutex
			publish := func(i int) {
				m := pub(t, h, topics[i%len(topics)], fmt.Sprint(i))
				if m.Topic == "tl.b" && m.ID.Seq > tc.since {
					mu.Lock()
					want = append(want, m.ID.Seq)
					mu.Unlock()
				}
			}
			for i := range 100 {
				publish(i)
			}
			const clients = 30
			cols := make([]*collector, clients)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 100; i < 400; i++ {
					publish(i)
				}
			}()
			for i := range cols {
				cols[i] = collect(t, newClient(t, h, "ws"))
				subscribe(t, cols[i].c, hub.SubscribeRequest{Patterns: pats("tl.b"), Since: cur(h, tc.since)})
			}
			<-done
			last := pub(t, h, "tl.b", `"last"`)
			want = append(want, last.ID.Seq)
			for i, col := range cols {
				if got := msgSeqs(col.waitSeq(t, last.ID.Seq)); !slices.Equal(got, want) {
					t.Fatalf("client %d got %v,\nwant %v", i, got, want)
				}
			}
			pages := h.Stats().ReplayPages
			if reads := b.reads.Load(); (reads > 0) != tc.fromBroker || pages["broker"] != reads {
				t.Fatalf("%d reads of the broker (pages %v), want them only for cursors older than the tail", reads, pages)
			}
			if !tc.fromBroker && pages["tail"] == 0 {
				t.Fatalf("no replay page was read from the tail (pages %v)", pages)
			}
		})
	}
}

// TestNoTailOnMemoryBroker: on the memory broker, whose log is in memory
// already, the hub keeps no tail: replays read the broker.
func TestNoTailOnMemoryBroker(t *testing.T) {
	h := newHub(t, hub.Options{})
	for i := range 5 {
		pub(t, h, "nt.a", fmt.Sprint(i))
	}
	col := collect(t, newClient(t, h, "ws"))
	subscribe(t, col.c, hub.SubscribeRequest{Patterns: pats("nt.a"), Since: cur(h, 2)})
	wantSeqs(t, col.waitSeq(t, 5), 3, 4, 5)
	if pages := h.Stats().ReplayPages; pages["tail"] != 0 || pages["broker"] == 0 {
		t.Fatalf("replay pages %v, want all from the broker", pages)
	}
}
