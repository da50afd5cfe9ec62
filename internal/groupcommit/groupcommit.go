// Package groupcommit coalesces the concurrent calls of a process to one
// server into groups, each sent in one round trip: a call queues its
// operation and waits; one goroutine, the committer, takes every operation
// queued (up to a group's bounds) and sends them together, then takes what
// queued meanwhile. With one caller at a time a group is one operation, so
// a lone call waits for one round trip as before; under load, a round trip
// carries many.
//
// Queue is the primitive: items weighed in events and bytes, a bound on
// what waits, groups taken in order up to their own bounds, and the states
// (queued, taken, abandoned) that let a caller give up on an item that was
// not yet taken, which is then never sent. Bound bounds what a caller
// holds beyond the queue, such as the items sent whose answers are due.
// Committer is a Queue of operations whose committer goroutine exists only
// while there is something queued.
//
// Locks: a Queue and a Bound each have one mutex, and neither holds it
// while it takes another or runs its user's code (commit, the taker's
// wake-up), so there is no lock order to keep; an item's state is an
// atomic, changed by compare-and-swap, and needs no lock.
package groupcommit

import (
	"context"
	"errors"
)

// ErrAbandoned is what Do returns when its context ended before the
// operation was taken into a group: it was never sent.
var ErrAbandoned = errors.New("failed to send the operation: its caller gave up before it was sent")

// call is one queued operation.
type call[T any] struct {
	Ticket
	op   T
	done chan struct{} // closed once the group ran
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
	run   func(group []T)
	group Limit // operations per group, as Events
	q     *Queue[*call[T]]
}

// New returns a Committer that runs groups of at most maxGroup operations
// with run, and lets at most maxQueue wait for a group (Do waits for room
// beyond that).
func New[T any](maxGroup, maxQueue int, run func(group []T)) *Committer[T] {
	c := &Committer[T]{run: run, group: Limit{Events: max(maxGroup, 1)}}
	c.q = NewQueue[*call[T]](Limit{Events: max(maxQueue, 1)})
	// The Do that ends an idle spell starts the committer, which ends
	// when it finds the queue empty again (and so idle).
	c.q.wake = func() { go c.loop() }
	return c
}

// Do queues op and waits until its group has run. It returns ctx.Err() if
// ctx ends while the queue is full, and ErrAbandoned (wrapping nothing
// sent) if ctx ends before op is taken into a group; once op is taken, Do
// waits for run, which decides op's outcome.
func (c *Committer[T]) Do(ctx context.Context, op T) error {
	k := &call[T]{op: op, done: make(chan struct{})}
	if err := c.q.Put(ctx, k, Weight{Events: 1}); err != nil {
		return err // ctx's: the queue is never closed
	}
	select {
	case <-k.done:
		return nil
	case <-ctx.Done():
		if k.Abandon() {
			return errors.Join(ErrAbandoned, ctx.Err())
		}
		<-k.done // taken: run answers it, bounded by run's own time
		return nil
	}
}

// loop is the committer goroutine: it runs group after group until the
// queue is empty.
func (c *Committer[T]) loop() {
	ops := make([]T, 0, c.group.Events)
	c.q.drain(context.Background(), c.group, nil, func(group []*call[T]) {
		ops = ops[:0]
		for _, k := range group {
			ops = append(ops, k.op)
		}
		c.run(ops)
		clear(ops)
		for _, k := range group {
			close(k.done)
		}
	})
}
