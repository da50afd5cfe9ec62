// Package groupcommit coalesces the concurrent calls of a process to one
// server into groups, each sent in one round trip: a call queues its
// operation and waits; one goroutine, the committer, takes every operation
// queued (up to a group's bound) and runs them together, then takes what
// queued meanwhile. With one caller at a time a group is one operation, so
// a lone call waits for one round trip as before; under load, a round trip
// carries many.
package groupcommit

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
)

// ErrAbandoned is what Do returns when its context ended before the
// operation was taken into a group: it was never sent.
var ErrAbandoned = errors.New("failed to send the operation: its caller gave up before it was sent")

// The states of a queued operation.
const (
	queued    int32 = iota // waiting for the committer
	taken                  // in a group: the committer answers it
	abandoned              // its caller gave up before it was taken: never sent
)

// call is one queued operation.
type call[T any] struct {
	op    T
	state atomic.Int32
	done  chan struct{} // closed once the group ran
}

// Committer queues operations of type T and runs them in groups with its
// run function, which answers each (T carries its own result, which run
// writes and the caller of Do reads once Do returns nil).
//
// Do may be called from any goroutine. The committer goroutine exists only
// while there is something queued: the Do that finds the Committer idle
// starts it, and it ends once the queue is empty, so a Committer needs no
// Close. run is never called concurrently with itself, and must bound its
// own time (every operation of a group waits for it).
type Committer[T any] struct {
	run      func(group []T)
	maxGroup int // operations per group
	maxQueue int // operations queued, beyond the group being run

	mu      sync.Mutex
	queue   []*call[T]
	running bool // the committer goroutine is live
	// room is closed, and replaced, each time the committer takes from
	// the queue: callers waiting for room try again.
	room chan struct{}
}

// New returns a Committer that runs groups of at most maxGroup operations
// with run, and lets at most maxQueue wait for a group (Do waits for room
// beyond that).
func New[T any](maxGroup, maxQueue int, run func(group []T)) *Committer[T] {
	return &Committer[T]{run: run, maxGroup: max(maxGroup, 1), maxQueue: max(maxQueue, 1), room: make(chan struct{})}
}

// Do queues op and waits until its group has run. It returns ctx.Err() if
// ctx ends while the queue is full, and ErrAbandoned (wrapping nothing
// sent) if ctx ends before op is taken into a group; once op is taken, Do
// waits for run, which decides op's outcome.
func (c *Committer[T]) Do(ctx context.Context, op T) error {
	k := &call[T]{op: op, done: make(chan struct{})}
	for {
		c.mu.Lock()
		if len(c.queue) < c.maxQueue {
			c.queue = append(c.queue, k)
			if !c.running {
				c.running = true
				go c.loop()
			}
			c.mu.Unlock()
			break
		}
		room := c.room
		c.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	select {
	case <-k.done:
		return nil
	case <-ctx.Done():
		if k.state.CompareAndSwap(queued, abandoned) {
			return errors.Join(ErrAbandoned, ctx.Err())
		}
		<-k.done // taken: run answers it, bounded by run's own time
		return nil
	}
}

// take removes the next group from the queue, leaving out the operations
// whose callers gave up; ok is false when the queue was empty, and the
// committer goroutine is then over.
func (c *Committer[T]) take() (group []*call[T], ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		c.running = false
		return nil, false
	}
	n := min(len(c.queue), c.maxGroup)
	for _, k := range c.queue[:n] {
		if k.state.CompareAndSwap(queued, taken) {
			group = append(group, k)
		}
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

// loop is the committer goroutine: it runs group after group until the
// queue is empty.
func (c *Committer[T]) loop() {
	ops := make([]T, 0, c.maxGroup)
	for {
		group, ok := c.take()
		if !ok {
			return
		}
		if len(group) == 0 {
			continue
		}
		ops = ops[:0]
		for _, k := range group {
			ops = append(ops, k.op)
		}
		c.run(ops)
		clear(ops)
		for _, k := range group {
			close(k.done)
		}
	}
}
