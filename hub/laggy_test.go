package hub_test

import (
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
)

// laggyBroker is a MemoryBroker whose deliveries go through a queue and a
// forwarding goroutine that the test can pause: the shape of a cluster broker
// whose reader (XREAD, a JetStream consumer) runs behind the log. Events are
// in the log before they are forwarded, so it keeps the Broker contract; it
// lets tests hold the hub's view of the log (what has been dispatched)
// behind what a client can already read.
type laggyBroker struct {
	*hub.MemoryBroker
	mu      sync.Mutex
	cond    *sync.Cond
	queue   [][]*hub.Message // unbounded: test use only
	paused  bool
	closed  bool
	deliver func([]*hub.Message)
	done    chan struct{}
}

func newLaggy(o hub.MemoryOptions) *laggyBroker {
	b := &laggyBroker{MemoryBroker: hub.NewMemoryBroker(o), done: make(chan struct{})}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *laggyBroker) Start(deliver func([]*hub.Message)) error {
	b.deliver = deliver
	if err := b.MemoryBroker.Start(b.enqueue); err != nil {
		return err
	}
	go b.forward()
	return nil
}

// enqueue runs under the memory broker's lock, so the queue is in log order.
func (b *laggyBroker) enqueue(msgs []*hub.Message) {
	b.mu.Lock()
	b.queue = append(b.queue, msgs)
	b.cond.Signal()
	b.mu.Unlock()
}

func (b *laggyBroker) forward() {
	defer close(b.done)
	for {
		b.mu.Lock()
		for !b.closed && (b.paused || len(b.queue) == 0) {
			b.cond.Wait()
		}
		if b.closed {
			b.mu.Unlock()
			return
		}
		msgs := b.queue[0]
		b.queue = b.queue[1:]
		b.mu.Unlock()
		b.deliver(msgs)
	}
}

// Pause holds deliveries back from now on; Resume lets them through.
func (b *laggyBroker) Pause() { b.mu.Lock(); b.paused = true; b.mu.Unlock() }

func (b *laggyBroker) Resume() {
	b.mu.Lock()
	b.paused = false
	b.cond.Signal()
	b.mu.Unlock()
}

// Close keeps the contract: deliver is not called after it returns.
func (b *laggyBroker) Close() error {
	err := b.MemoryBroker.Close()
	b.mu.Lock()
	closed := b.closed
	b.closed = true
	b.cond.Signal()
	b.mu.Unlock()
	if !closed && b.deliver != nil {
		<-b.done
	}
	return err
}

// TestLaggyBrokerConformance proves the test broker is a Broker, and that
// the suite holds for an implementation that delivers asynchronously.
func TestLaggyBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, o brokertest.Options) hub.Broker {
		return newLaggy(hub.MemoryOptions{Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, StateMaxKeys: o.StateMaxKeys, PresenceMaxMembers: o.PresenceMaxMembers})
	})
}
