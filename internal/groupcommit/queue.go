package groupcommit

import (
	"context"
	"sync"
	"sync/atomic"
)

// Weight is what an item counts against a Limit: its events (messages,
// operations: whatever its user counts) and its bytes.
type Weight struct{ Events, Bytes int }

func (w *Weight) add(v Weight) { w.Events += v.Events; w.Bytes += v.Bytes }
func (w *Weight) sub(v Weight) { w.Events -= v.Events; w.Bytes -= v.Bytes }

// Limit bounds a sum of weights; a field of zero bounds nothing. An item
// heavier than a limit on its own still goes, alone: a limit holds back
// what would join others beyond it, never a lone item, which could
// otherwise never pass.
type Limit struct{ Events, Bytes int }

// fits reports whether w joins sum within l.
func (l Limit) fits(sum, w Weight) bool {
	return (l.Events <= 0 || sum.Events+w.Events <= l.Events) &&
		(l.Bytes <= 0 || sum.Bytes+w.Bytes <= l.Bytes)
}

// The states of an item's Ticket. An item moves from queued to one of the
// others once, by compare-and-swap, so that its caller (Abandon) and the
// taker (Take, Close) agree on who answers it without sharing a lock.
const (
	queued    int32 = iota // put, waiting for a Take
	taken                  // taken into a group, or failed by Close: the taker answers it
	abandoned              // its caller gave up before it was taken: never sent
)

// Ticket is an item's place in a Queue. An item type embeds it, as a
// value, which makes a pointer to the item an Item and costs no
// allocation of its own. An item is put once.
type Ticket struct {
	state  atomic.Int32
	weight Weight // set by Put, read by Take: both under the queue's lock
}

func (t *Ticket) ticket() *Ticket { return t }

// Abandon withdraws the item if no Take has taken it yet, and reports
// whether it did: the item is then never returned by Take or Close, so
// never sent, and the caller answers itself. false means the item was
// taken (or failed by Close) and its answer comes from the taker: the
// caller waits for it, or takes the outcome for unknown. Abandon may be
// called from any goroutine; it does not block.
func (t *Ticket) Abandon() bool { return t.state.CompareAndSwap(queued, abandoned) }

// Item is what a Queue holds: a pointer to a type that embeds Ticket.
type Item interface{ ticket() *Ticket }

// gate counts the weights held against a limit and lets callers wait for
// room. It has no lock of its own: its owner's mutex guards every field,
// and admit releases that mutex while it waits, as a sync.Cond would (a
// Cond cannot also wait for a context).
type gate struct {
	limit Limit
	held  Weight
	n     int // items held: when none is, any item passes
	// room is closed when weight is released or the gate closes. The
	// first caller to wait makes it, and release clears it, so that no
	// release allocates while nobody waits.
	room chan struct{}
	err  error // set by shut: admit fails with it
}

// admit counts w, waiting while it does not fit (and something is held)
// until there is room or ctx ends. It fails with ctx.Err(), or with g.err
// once the gate is shut, and then counts nothing. mu is g's owner's mutex:
// held on entry and on return, released while waiting.
func (g *gate) admit(ctx context.Context, mu *sync.Mutex, w Weight) error {
	for {
		if g.err != nil {
			return g.err
		}
		if g.n == 0 || g.limit.fits(g.held, w) {
			g.held.add(w)
			g.n++
			return nil
		}
		if g.room == nil {
			g.room = make(chan struct{})
		}
		room := g.room
		mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
		}
		mu.Lock()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// release gives back the weight w of n items, and wakes the callers
// waiting for room.
func (g *gate) release(w Weight, n int) {
	g.held.sub(w)
	g.n -= n
	g.wake()
}

// shut makes admit fail with err from now on, the callers waiting
// included.
func (g *gate) shut(err error) {
	g.err = err
	g.held, g.n = Weight{}, 0
	g.wake()
}

func (g *gate) wake() {
	if g.room != nil {
		close(g.room)
		g.room = nil
	}
}

// Bound bounds what its callers hold at once, in events and bytes: Admit
// counts a weight, waiting for room, and Release gives it back. It bounds
// what a Queue does not count, such as the items taken and sent that
// still await their answers.
//
// Admit, Release and Close may be called from any goroutine.
type Bound struct {
	mu sync.Mutex
	g  gate
}

// NewBound returns a Bound of l.
func NewBound(l Limit) *Bound { return &Bound{g: gate{limit: l}} }

// Admit counts w against the limit. While w does not fit with what is
// held (and something is), it waits for a Release, until ctx ends: it
// then fails with ctx.Err(). Once the Bound is closed it fails with
// Close's error. An Admit that returned nil is followed by one Release of
// the same weight.
func (b *Bound) Admit(ctx context.Context, w Weight) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.g.admit(ctx, &b.mu, w)
}

// Release gives back what an Admit counted. After Close it does nothing.
func (b *Bound) Release(w Weight) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.g.err == nil {
		b.g.release(w, 1)
	}
}

// Close makes Admit fail with err from now on, the calls waiting for room
// included.
func (b *Bound) Close(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.g.shut(err)
}

// keepItems bounds the backing arrays a Queue and its taker keep between
// bursts: a burst's larger array goes, rather than pinning its memory.
const keepItems = 1 << 12

// Queue holds items between the callers that put them and one taker that
// sends them in groups, in the order they were put. Each item has a
// Weight; what waits in the queue is bounded (NewQueue), and a Put waits
// for room. A caller that gives up on its item before it is taken
// abandons it (Ticket.Abandon): it is then never sent, and the taker
// passes over it.
//
// Put, Len and Close may be called from any goroutine, and Abandon on an
// item's Ticket too. Take and Serve are the taker's: groups come out in
// the order of the items only if one goroutine at a time takes. The taker
// answers each item it takes, and after Close the caller of Close answers
// the items it returns; how is the user's (a channel in the item,
// typically), and an item's caller waits for that answer once Abandon has
// reported false.
//
// The taker need not be running all the time: the queue is idle from the
// moment a Take finds it empty, and the Put that ends that wakes the
// taker (Serve).
type Queue[T Item] struct {
	wake func() // called, without mu, by the Put that ends an idle spell

	mu sync.Mutex
	// g counts the items queued, those abandoned included until the
	// taker passes them: they held their room while they waited.
	g     gate
	items []T // items[head:] are queued, in order
	head  int
	idle  bool          // no item was put since a Take found the queue empty
	ready chan struct{} // Serve's wake-up: a token once idle ended
}

// NewQueue returns a Queue that lets items of at most wait in total wait
// to be taken (a zero Limit bounds nothing).
func NewQueue[T Item](wait Limit) *Queue[T] {
	q := &Queue[T]{g: gate{limit: wait}, idle: true, ready: make(chan struct{}, 1)}
	q.wake = func() {
		select {
		case q.ready <- struct{}{}:
		default: // a token is there already
		}
	}
	return q
}

// Put queues item, of weight w. While the queue is full it waits for
// room, until ctx ends: it then fails with ctx.Err(), item not queued.
// Once the queue is closed it fails with Close's error.
func (q *Queue[T]) Put(ctx context.Context, item T, w Weight) error {
	q.mu.Lock()
	if err := q.g.admit(ctx, &q.mu, w); err != nil {
		q.mu.Unlock()
		return err
	}
	item.ticket().weight = w
	if len(q.items) == cap(q.items) && q.head > 0 && q.head >= len(q.items)/2 {
		// Half the array is taken items: move the queued ones to its
		// front rather than growing it (the move costs at most what
		// was appended since the last one).
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, item)
	wake := q.idle
	q.idle = false
	q.mu.Unlock()
	if wake {
		q.wake()
	}
	return nil
}

// Take removes the next group from the front of the queue and appends it
// to buf: the items in order, as many as fit in group together (at least
// one, however heavy), passing over the abandoned ones, which count for
// nothing. Those it returns are taken: the taker answers them. ok is false
// when the queue was empty, and it is then idle. With ok true the group
// may still be empty, when every item Take passed was abandoned.
func (q *Queue[T]) Take(group Limit, buf []T) (_ []T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	waiting := q.items[q.head:]
	if len(waiting) == 0 {
		q.idle = true
		return buf, false
	}
	var sum, passed Weight
	n, took := 0, 0
	for _, it := range waiting {
		t := it.ticket()
		// An item abandoned already counts for nothing: it neither
		// fills the group nor ends it.
		if t.state.Load() != abandoned && took > 0 && !group.fits(sum, t.weight) {
			break
		}
		n++
		passed.add(t.weight)
		if !t.state.CompareAndSwap(queued, taken) {
			continue // abandoned
		}
		buf = append(buf, it)
		sum.add(t.weight)
		took++
	}
	clear(waiting[:n])
	q.head += n
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
		if cap(q.items) > keepItems {
			q.items = nil
		}
	}
	q.g.release(passed, n)
	return buf, true
}

// Serve is a taker that lives until ctx ends: it waits for items, takes
// them group after group (up to group) and hands each group that is not
// empty to commit, until the queue is empty, and waits again. Once ctx
// has ended it takes nothing more and returns, leaving what is queued to
// Close. commit may reorder or clear the slice it is given, which Serve
// reuses: it must not keep it.
func (q *Queue[T]) Serve(ctx context.Context, group Limit, commit func([]T)) {
	var buf []T
	for {
		select {
		case <-q.ready:
		case <-ctx.Done():
			return
		}
		buf = q.drain(ctx, group, buf, commit)
	}
}

// drain takes group after group and hands each one that is not empty to
// commit, until the queue is empty or ctx ends. It returns buf, emptied,
// for the next drain.
func (q *Queue[T]) drain(ctx context.Context, group Limit, buf []T, commit func([]T)) []T {
	for ctx.Err() == nil {
		g, ok := q.Take(group, buf[:0])
		if len(g) > 0 {
			commit(g)
		}
		clear(g) // let the items go
		buf = g[:0]
		if cap(buf) > keepItems {
			buf = nil
		}
		if !ok {
			break
		}
	}
	return buf
}

// Close ends the queue: Put fails with err from now on, the calls waiting
// for room included. It returns the items still queued, in order, the
// abandoned ones left out; they are taken, and the caller of Close
// answers them (with err, typically), as the taker would have. A second
// Close returns none.
func (q *Queue[T]) Close(err error) []T {
	q.mu.Lock()
	defer q.mu.Unlock()
	left := q.items[q.head:q.head]
	for _, it := range q.items[q.head:] {
		if it.ticket().state.CompareAndSwap(queued, taken) {
			left = append(left, it)
		}
	}
	clear(q.items[q.head+len(left):])
	q.items, q.head = nil, 0
	q.g.shut(err)
	return left
}

// Len returns how many items wait in the queue, the abandoned ones the
// taker has not yet passed included.
func (q *Queue[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) - q.head
}
