package redisbroker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Group commit: a node's concurrent publishes share one run of
// publishScript. Publish queues its batch; one goroutine per Broker, the
// committer, takes every batch queued (up to a group's bounds) and appends
// them with one script call, then takes what queued meanwhile. With one
// publisher at a time a group is one batch, so a lone publish waits for
// one round trip as before; under load, a round trip carries many.
//
// The bounds of a group keep one script call short (Redis runs nothing
// else meanwhile); the bounds of the queue keep what waits for the
// committer bounded. A batch larger than a bound on its own still goes,
// alone.
const (
	groupMaxEvents = 1000
	groupMaxBytes  = 1 << 20
	queueMaxEvents = 10 * groupMaxEvents
	queueMaxBytes  = 8 * groupMaxBytes
)

// The states of a pending batch.
const (
	queued    int32 = iota // waiting for the committer
	taken                  // in a group: the committer answers it
	abandoned              // its publisher gave up before it was taken: never sent
)

// pending is a batch waiting for its group's outcome.
type pending struct {
	drafts   []hub.Draft
	size     int  // bytes counted against the bounds (see Publish)
	dedupe   bool // some draft has a Dedupe key
	deadline time.Time
	state    atomic.Int32
	done     chan pubResult // buffered: the committer never waits on it
}

type pubResult struct {
	msgs []*hub.Message
	err  error
}

// committer is the queue of batches to append and its goroutine.
//
// Publish calls enqueue from any goroutine; take and run belong to the
// committer goroutine, which New starts and Close ends (it fails what is
// still queued with hub.ErrClosed).
type committer struct {
	mu            sync.Mutex
	queue         []*pending
	events, bytes int  // what queue holds
	closed        bool // set when the committer ended: enqueue refuses
	// room is closed, and replaced, each time the committer takes from
	// the queue: publishers waiting for room try again.
	room chan struct{}
	wake chan struct{} // a token when the queue may be non-empty
	done chan struct{} // closed when the committer has ended
}

func newCommitter() *committer {
	return &committer{room: make(chan struct{}), wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// enqueue queues p, waiting while the queue is full until there is room
// or ctx ends. It fails with hub.ErrClosed once the committer has ended.
func (c *committer) enqueue(ctx context.Context, p *pending) error {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return hub.ErrClosed
		}
		if len(c.queue) == 0 ||
			(c.events+len(p.drafts) <= queueMaxEvents && c.bytes+p.size <= queueMaxBytes) {
			c.queue = append(c.queue, p)
			c.events += len(p.drafts)
			c.bytes += p.size
			c.mu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default: // a token is there already
			}
			return nil
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// take removes the next group from the queue: the batches at its front,
// in order, up to the group's bounds (at least one), leaving out those
// whose publishers gave up or whose time is up (so the group may be
// empty). ok is false when the queue was empty.
func (c *committer) take() (group []*pending, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	events, bytes, n := 0, 0, 0
	for _, p := range c.queue {
		if len(group) > 0 && (events+len(p.drafts) > groupMaxEvents || bytes+p.size > groupMaxBytes) {
			break
		}
		n++
		c.events -= len(p.drafts)
		c.bytes -= p.size
		if !p.state.CompareAndSwap(queued, taken) {
			continue // abandoned
		}
		if !p.deadline.After(now) {
			// Its publisher is giving up: answer it, unsent.
			p.done <- pubResult{err: fmt.Errorf("failed to publish to Redis: %w", hub.Unavailable(context.DeadlineExceeded))}
			continue
		}
		group = append(group, p)
		events += len(p.drafts)
		bytes += p.size
	}
	if n == 0 {
		return nil, false
	}
	clear(c.queue[:n])
	c.queue = c.queue[n:]
	if len(c.queue) == 0 {
		c.queue = nil // let the backing array go
	}
	close(c.room)
	c.room = make(chan struct{})
	return group, true
}

// shut ends the queue: enqueue refuses from now on, and what is queued
// fails with hub.ErrClosed.
func (c *committer) shut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, p := range c.queue {
		if p.state.CompareAndSwap(queued, taken) {
			p.done <- pubResult{err: hub.ErrClosed}
		}
	}
	c.queue = nil
	c.events, c.bytes = 0, 0
	close(c.room)
}

// commitLoop is the committer goroutine: it appends group after group
// until b.ctx ends (Close).
func (b *Broker) commitLoop() {
	c := b.commit
	defer close(c.done)
	defer c.shut()
	for {
		select {
		case <-c.wake:
		case <-b.ctx.Done():
			return
		}
		for b.ctx.Err() == nil {
			group, ok := c.take()
			if !ok {
				break
			}
			if len(group) > 0 {
				b.commitGroup(group)
			}
		}
	}
}
