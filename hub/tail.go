package hub

import (
	"sort"
	"sync"
)

// DefaultTailBytes is the default Options.TailBytes: at a cluster's usual
// event sizes, tens of seconds of the log, which is what the subscribers
// of a node that died need to resume on the others.
const DefaultTailBytes = 32 << 20

// DefaultTailEvents is the default Options.TailEvents.
const DefaultTailEvents = 100_000

// SkipReporter is implemented by brokers whose delivery can pass over
// events of the log: a node that fell further behind than the retention
// resumes after the events it missed. OnSkip registers f, which the broker
// calls from its delivering goroutine before it delivers the event at
// position next, when the events it delivers from next on do not follow
// those it delivered before. The hub's tail (Options.TailBytes) then
// starts again there, so that it never claims to hold what it never saw.
// The hub keeps a tail only on a broker that implements it; the memory
// broker does not (its log is in memory already).
type SkipReporter interface {
	OnSkip(f func(next uint64))
}

// tail is the newest part of the log as this node delivered it: every
// event with lo < Seq <= hi, oldest first, bounded by count and by bytes.
// It serves the replays that start inside it (scan), so that the
// subscribers of a node that died, resuming on this one all at once, read
// memory instead of each reading the broker's log for its few topics.
//
// It is written by the broker's delivering goroutine (Hub.deliver) alone
// and read by replays. mu takes no other lock and is taken with none held.
type tail struct {
	maxBytes  int64
	maxEvents int

	mu    sync.RWMutex
	valid bool // lo and hi hold; false at the start and after a new log
	// breakAt is where delivery resumes after the last skip reported
	// (SkipReporter): the tail is empty until an event at or after it
	// starts it again. 0: none. A broker may report a skip while it
	// still holds events from before it (NATS holds a batch until it is
	// whole), and several skips before it delivers again: the events
	// delivered between them are left out, so that the tail never spans
	// one.
	breakAt uint64
	lo      uint64
	hi      uint64
	ring    []*Message // ring[(head+i)%len(ring)], i < n, ascending by seq
	head    int
	n       int
	bytes   int64
}

func newTail(maxBytes int64, maxEvents int) *tail {
	return &tail{maxBytes: maxBytes, maxEvents: maxEvents}
}

// at returns the i-th oldest event. t.mu is held on entry.
func (t *tail) at(i int) *Message { return t.ring[(t.head+i)%len(t.ring)] }

// append adds a delivered batch: msgs follow every event already held,
// without any event of the log between (the broker reports the
// contrary first, through skip).
func (t *tail) append(msgs []*Message) {
	if len(msgs) == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, m := range msgs {
		if t.breakAt != 0 {
			if m.seq < t.breakAt {
				continue // before a skip the broker reported: the tail starts after it
			}
			t.breakAt = 0
		}
		if !t.valid {
			t.valid = true
			t.lo, t.hi = m.seq-1, m.seq-1
		}
		if m.seq <= t.hi {
			continue // not newer than what is held: never expected, never kept twice
		}
		size := int64(m.retainedSize())
		for t.n > 0 && (t.n == t.maxEvents || t.bytes+size > t.maxBytes) {
			t.dropOldest()
		}
		if size > t.maxBytes {
			// Too big to keep: the tail starts after it.
			t.lo, t.hi = m.seq, m.seq
			continue
		}
		if t.n == len(t.ring) {
			t.grow()
		}
		t.ring[(t.head+t.n)%len(t.ring)] = m
		t.n++
		t.bytes += size
		t.hi = m.seq
	}
}

// dropOldest forgets the oldest event. t.mu is held on entry.
func (t *tail) dropOldest() {
	m := t.ring[t.head]
	t.ring[t.head] = nil
	t.head = (t.head + 1) % len(t.ring)
	t.n--
	t.bytes -= int64(m.retainedSize())
	t.lo = m.seq
}

// grow doubles the ring, up to maxEvents. t.mu is held on entry.
func (t *tail) grow() {
	size := min(max(2*len(t.ring), 64), t.maxEvents)
	ring := make([]*Message, size)
	for i := range t.n {
		ring[i] = t.at(i)
	}
	t.ring, t.head = ring, 0
}

// dropAll forgets every event held. t.mu is held on entry.
func (t *tail) dropAll() {
	clear(t.ring)
	t.head, t.n, t.bytes = 0, 0, 0
}

// reset forgets everything: the next delivered batch starts the tail
// again. Called for a new log.
func (t *tail) reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropAll()
	t.valid, t.lo, t.hi, t.breakAt = false, 0, 0, 0
}

// skip is SkipReporter's f: delivery resumes at next after passing over
// events before it.
func (t *tail) skip(next uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropAll()
	t.valid = false
	t.breakAt = max(t.breakAt, next)
}

// read answers req as Broker.Read would, if the tail holds every event
// after req.After that this node has delivered; ok is false otherwise.
// Its end is this node's delivery, not the log's: More is false at hi,
// though the broker may hold later events. For a replay that is exact
// (Client.scan): the events after hi have not been dispatched yet, so they
// reach the client live.
func (t *tail) read(req ReadRequest) (res ReadResult, ok bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if !t.valid || req.After < t.lo {
		return ReadResult{}, false
	}
	res.Next = req.After
	if req.After >= t.hi {
		// Nothing after it has been delivered here yet.
		return res, true
	}
	i := sort.Search(t.n, func(i int) bool { return t.at(i).seq > req.After })
	for scanned := 0; i < t.n; i++ {
		if len(res.Messages) == req.Limit || (req.MaxScan > 0 && scanned == req.MaxScan) {
			res.More = true
			return res, true
		}
		m := t.at(i)
		scanned++
		res.Next = m.seq
		for _, p := range req.Patterns {
			if p.Match(m.Topic) {
				res.Messages = append(res.Messages, m)
				break
			}
		}
	}
	return res, true
}
