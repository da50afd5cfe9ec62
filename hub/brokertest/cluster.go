package brokertest

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// RunCluster checks what brokers shared by several nodes add to the
// contract: brokers on one log, each with its own publishers, agree on one
// total order. newNodes must return n brokers on one new, empty log, not
// yet started.
//
// When publishes from different nodes collide, a cluster broker may leave
// positions that no event holds (the NATS broker does, see its package
// comment); the suite allows such holes, but not an event that is
// delivered or read twice, out of order, in part of its batch, or not at
// all.
func RunCluster(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	t.Run("TotalOrderAcrossNodes", func(t *testing.T) { testTotalOrderAcrossNodes(t, newNodes, 2, 40) })
	t.Run("StateTopicsAcrossNodes", func(t *testing.T) { testStateTopicsAcrossNodes(t, newNodes) })
	t.Run("DedupeAcrossNodes", func(t *testing.T) { testDedupeAcrossNodes(t, newNodes) })
	t.Run("ReplayFromTail", func(t *testing.T) { testReplayFromTail(t, newNodes) })
	t.Run("SkipReported", func(t *testing.T) { testSkipReported(t, newNodes) })
}

// RunManyPublishers is RunCluster's TotalOrderAcrossNodes with perNode
// publishers on each of two nodes, each publishing rounds batches: enough
// at once that a broker that appends a node's concurrent publishes
// together (group commit) forms groups of many batches, which must still
// each be contiguous, whole, and in one order.
func RunManyPublishers(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker, perNode, rounds int) {
	testTotalOrderAcrossNodes(t, newNodes, perNode, rounds)
}

func testTotalOrderAcrossNodes(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker, perNode, rounds int) {
	const nodes = 2
	bs := newNodes(t, nodes, Options{Size: 10 * nodes * perNode * rounds})
	recs := make([]*recorder, nodes)
	for i, b := range bs {
		recs[i] = &recorder{notify: make(chan struct{}, 1), gaps: true}
		if err := b.Start(recs[i].deliver); err != nil {
			t.Fatalf("failed to start node %d: %v", i, err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("failed to close node %d: %v", i, err)
			}
		})
	}
	ctx := ctxT(t)
	var mu sync.Mutex
	var batches [][]*hub.Message
	var wg sync.WaitGroup
	for n, b := range bs {
		for p := range perNode {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					ds := make([]hub.Draft, 1+(n+p+r)%4)
					for i := range ds {
						ds[i] = draft(t, fmt.Sprintf("cluster.n%d.p%d", n, p), fmt.Sprintf(`[%d,%d,%d,%d]`, n, p, r, i))
					}
					msgs, err := b.Publish(ctx, ds)
					if err != nil {
						t.Errorf("node %d: failed to publish: %v", n, err)
						return
					}
					for i, m := range msgs {
						if !bytes.Equal(m.Data, ds[i].Data) {
							t.Errorf("node %d: message %s carries %s, drafted %s", n, m.ID, m.Data, ds[i].Data)
						}
						if i > 0 && m.ID.Seq != msgs[i-1].ID.Seq+1 {
							t.Errorf("node %d: batch not contiguous: %d after %d", n, m.ID.Seq, msgs[i-1].ID.Seq)
						}
					}
					mu.Lock()
					batches = append(batches, msgs)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	bySeq := map[uint64]*hub.Message{}
	var maxSeq uint64
	for _, msgs := range batches {
		for _, m := range msgs {
			if bySeq[m.ID.Seq] != nil {
				t.Fatalf("seq %d assigned twice", m.ID.Seq)
			}
			bySeq[m.ID.Seq] = m
			maxSeq = max(maxSeq, m.ID.Seq)
		}
	}
	total := len(bySeq)
	// Every node delivers every published event, once, in the same order,
	// which is the order of their positions.
	var first []*hub.Message
	for i, rec := range recs {
		del := rec.waitN(t, total)
		if len(del) != total {
			t.Fatalf("node %d delivered %d events, want %d", i, len(del), total)
		}
		for j, m := range del {
			want := bySeq[m.ID.Seq]
			if want == nil {
				t.Fatalf("node %d delivered %s, which no publish returned", i, m.ID)
			}
			sameEvent(t, m, want)
			if first != nil && first[j].ID != m.ID {
				t.Fatalf("nodes 0 and %d disagree at delivery %d: %s vs %s", i, j, first[j].ID, m.ID)
			}
		}
		if first == nil {
			first = del
		}
		rec.check(t)
	}
	for i, b := range bs {
		read := readAll(t, ctx, b, 0, all, 50, 0)
		if len(read) != total {
			t.Fatalf("node %d read %d events, want %d", i, len(read), total)
		}
		for j, m := range read {
			sameEvent(t, m, first[j])
		}
		if bd := bounds(t, ctx, b); bd.Last < maxSeq {
			t.Fatalf("node %d: Bounds.Last = %d, below the newest event %d", i, bd.Last, maxSeq)
		}
	}
	holes := maxSeq - uint64(total)
	t.Logf("%d events from %d nodes, %d positions left unused", total, nodes, holes)
}
