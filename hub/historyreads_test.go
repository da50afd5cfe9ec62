package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// gatedBroker is a MemoryBroker whose Read waits at a gate until the test
// opens it, counting the reads that run at once.
type gatedBroker struct {
	*hub.MemoryBroker
	gate chan struct{}
	mu   sync.Mutex
	now  int // reads running
	most int // the most that ran at once
}

func (b *gatedBroker) Read(ctx context.Context, req hub.ReadRequest) (hub.ReadResult, error) {
	b.mu.Lock()
	b.now++
	b.most = max(b.most, b.now)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.now--
		b.mu.Unlock()
	}()
	select {
	case <-b.gate:
	case <-ctx.Done():
		return hub.ReadResult{}, ctx.Err()
	}
	return b.MemoryBroker.Read(ctx, req)
}

func (b *gatedBroker) running() (now, most int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.now, b.most
}

// TestHistoryReadsBounded: many clients that resume at once (the failover
// of a dead node's subscribers) read history at most HistoryReads at a
// time; the others wait their turn, and each still gets every event it
// missed, once, in order.
func TestHistoryReadsBounded(t *testing.T) {
	const limit, clients, events = 3, 40, 20
	b := &gatedBroker{MemoryBroker: hub.NewMemoryBroker(hub.MemoryOptions{}), gate: make(chan struct{})}
	h := newHub(t, hub.Options{Broker: b, HistoryReads: limit})
	for i := range events {
		pub(t, h, "hr.a", fmt.Sprint(i))
	}
	cols := make([]*collector, clients)
	for i := range cols {
		cols[i] = collect(t, newClient(t, h, "ws"))
		subscribe(t, cols[i].c, hub.SubscribeRequest{Patterns: pats("hr.a"), Since: cur(h, 0)})
	}
	eventually(t, "the first reads to wait at the gate", func() bool {
		now, _ := b.running()
		return now == limit
	})
	close(b.gate)
	for i, col := range cols {
		items := col.waitSeq(t, events)
		var got []uint64
		for _, it := range items {
			if it.Msg != nil {
				got = append(got, it.Msg.ID.Seq)
			}
		}
		if len(got) != events {
			t.Fatalf("client %d got %d events %v, want %d", i, len(got), got, events)
		}
		for j, seq := range got {
			if seq != uint64(j+1) {
				t.Fatalf("client %d got events %v, want 1 … %d in order", i, got, events)
			}
		}
	}
	if _, most := b.running(); most != limit {
		t.Fatalf("%d history reads ran at once, want at most and at some time exactly %d", most, limit)
	}
}
