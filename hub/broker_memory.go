package hub

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"
)

// MemoryBroker is the embedded, single-process Broker: a ring of the most
// recent events, bounded by count, by bytes and by age. Its epoch is drawn at creation,
// so cursors from a previous process are recognised as foreign.
//
// All methods are safe for concurrent use. Publish holds the broker's lock
// while it hands the batch to deliver, which is what keeps delivery in cursor
// order; deliver must therefore never call back into the broker.
type MemoryBroker struct {
	mu       sync.Mutex
	epoch    string
	ring     []*Message // capacity = size; ring[head] is the oldest retained
	head     int
	n        int
	bytes    int // retainedSize of the retained events
	max      int // bound of bytes
	last     uint64
	ttl      time.Duration
	topics   map[string]int // retained events per topic
	state    *memState
	presence *memPresence
	dedupe   *memDedupe
	deliver  func([]*Message)
	closed   bool
	now      func() time.Time

	ctlMu   sync.Mutex   // serializes the control function's calls; taken without mu
	control func([]byte) // set by OnControl
}

// MemoryOptions configures a MemoryBroker.
type MemoryOptions struct {
	Size int // events retained at most; default 10000
	// MaxBytes bounds the memory of the retained events, each counted as
	// its envelope plus a fixed allowance for the rest of its Message;
	// the oldest go first. An event larger than MaxBytes on its own is
	// delivered but not retained. Default DefaultHistoryBytes.
	MaxBytes int
	TTL      time.Duration // events older than this are dropped; 0 keeps them until Size or MaxBytes pushes them out
	// StateMaxKeys bounds the keys of one topic's state; past it the least
	// recently written key is dropped. Default DefaultStateMaxKeys.
	StateMaxKeys int
	// StateMaxBytes bounds the state of every topic together, each key
	// counted as its event's retained size plus a fixed allowance; past it
	// the least recently written keys of any topic go first. Default
	// DefaultStateMaxBytes.
	StateMaxBytes int
	// PresenceMaxMembers bounds the members of one topic; past it a join
	// is refused (the connection is not a member). Default
	// DefaultPresenceMaxMembers.
	PresenceMaxMembers int
	// DedupeWindow is how long a Draft.Dedupe key is remembered; default
	// DefaultDedupeWindow. DedupeMaxBytes bounds the memory of the keys
	// remembered; past it the oldest are forgotten early. Default
	// DefaultDedupeMaxBytes.
	DedupeWindow   time.Duration
	DedupeMaxBytes int
	Now            func() time.Time
}

// NewMemoryBroker returns a broker with a fresh epoch.
func NewMemoryBroker(o MemoryOptions) *MemoryBroker {
	if o.Size <= 0 {
		o.Size = 10000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultHistoryBytes
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StateMaxKeys <= 0 {
		o.StateMaxKeys = DefaultStateMaxKeys
	}
	if o.StateMaxBytes <= 0 {
		o.StateMaxBytes = DefaultStateMaxBytes
	}
	if o.PresenceMaxMembers <= 0 {
		o.PresenceMaxMembers = DefaultPresenceMaxMembers
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	if o.DedupeMaxBytes <= 0 {
		o.DedupeMaxBytes = DefaultDedupeMaxBytes
	}
	return &MemoryBroker{
		epoch:    NewEpoch(),
		max:      o.MaxBytes,
		ring:     make([]*Message, o.Size),
		ttl:      o.TTL,
		topics:   make(map[string]int),
		state:    newMemState(o.StateMaxKeys, o.StateMaxBytes),
		presence: newMemPresence(o.PresenceMaxMembers),
		dedupe:   newMemDedupe(o.DedupeWindow, o.DedupeMaxBytes),
		now:      o.Now,
	}
}

// Start implements Broker.
func (b *MemoryBroker) Start(deliver func([]*Message)) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.deliver != nil {
		return fmt.Errorf("failed to start memory broker: already started")
	}
	b.deliver = deliver
	return nil
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(ctx context.Context, drafts []Draft) ([]*Message, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	msgs := make([]*Message, len(drafts))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	now := b.now()
	skipped := 0
	for i, d := range drafts {
		if d.Dedupe != "" {
			if b.dedupe.seen(d.Dedupe, now) {
				skipped++
				continue
			}
			b.dedupe.add(d.Dedupe, now)
		}
		b.last++
		m := NewMessage(Event{
			ID:    Cursor{Epoch: b.epoch, Seq: b.last},
			Topic: d.Topic,
			Type:  d.Type,
			Key:   d.Key,
			Data:  d.Data,
			Time:  now,
		})
		b.push(m)
		if m.Key != "" {
			b.state.apply(m)
		}
		msgs[i] = m
	}
	b.expireLocked(now)
	if b.deliver != nil && skipped < len(msgs) {
		if skipped == 0 {
			b.deliver(msgs)
		} else {
			b.deliver(appended(msgs, skipped))
		}
	}
	return msgs, nil
}

// push appends m, evicting the oldest events while the ring is full or
// over its byte bound. Lock is held on entry.
func (b *MemoryBroker) push(m *Message) {
	if b.n == len(b.ring) {
		b.dropOldest()
	}
	b.ring[(b.head+b.n)%len(b.ring)] = m
	b.n++
	b.bytes += m.retainedSize()
	b.topics[m.Topic]++
	for b.bytes > b.max {
		b.dropOldest()
	}
}

// dropOldest removes the oldest retained event. Lock is held on entry.
func (b *MemoryBroker) dropOldest() {
	old := b.ring[b.head]
	b.ring[b.head] = nil
	b.head = (b.head + 1) % len(b.ring)
	b.n--
	b.bytes -= old.retainedSize()
	if c := b.topics[old.Topic]; c <= 1 {
		delete(b.topics, old.Topic)
	} else {
		b.topics[old.Topic] = c - 1
	}
}

// expireLocked drops events older than the TTL. Lock is held on entry.
func (b *MemoryBroker) expireLocked(now time.Time) {
	if b.ttl <= 0 {
		return
	}
	cutoff := now.Add(-b.ttl)
	for b.n > 0 && b.ring[b.head].Time.Before(cutoff) {
		b.dropOldest()
	}
}

// first is the Seq of the oldest retained event. Lock is held on entry.
func (b *MemoryBroker) first() uint64 { return b.last - uint64(b.n) + 1 }

// at returns the retained message with the given Seq. Lock is held on entry
// and first() <= seq <= last.
func (b *MemoryBroker) at(seq uint64) *Message {
	return b.ring[(b.head+int(seq-b.first()))%len(b.ring)]
}

// lockToRead takes b.mu for a read of the log and drops what has expired.
// On an error it holds no lock; otherwise the caller unlocks.
func (b *MemoryBroker) lockToRead(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ErrClosed
	}
	b.expireLocked(b.now())
	return nil
}

// Read implements Broker.
func (b *MemoryBroker) Read(ctx context.Context, req ReadRequest) (ReadResult, error) {
	if req.Limit <= 0 {
		return ReadResult{}, fmt.Errorf("failed to read history: limit %d must be positive", req.Limit)
	}
	if err := b.lockToRead(ctx); err != nil {
		return ReadResult{}, err
	}
	defer b.mu.Unlock()
	first := b.first()
	if req.After+1 < first {
		return ReadResult{}, ErrHistoryGone
	}
	res := ReadResult{Next: req.After}
	scanned := 0
	for seq := req.After + 1; seq <= b.last; seq++ {
		if len(res.Messages) == req.Limit || (req.MaxScan > 0 && scanned == req.MaxScan) {
			res.More = true
			return res, nil
		}
		m := b.at(seq)
		scanned++
		res.Next = seq
		for _, p := range req.Patterns {
			if p.Match(m.Topic) {
				res.Messages = append(res.Messages, m)
				break
			}
		}
	}
	return res, nil
}

// Latest implements Broker.
func (b *MemoryBroker) Latest(ctx context.Context, topic string, limit int) ([]*Message, error) {
	if err := b.lockToRead(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	var out []*Message
	if b.topics[topic] == 0 {
		return out, nil
	}
	for seq := b.last; seq >= b.first() && seq > 0 && len(out) < limit; seq-- {
		if m := b.at(seq); m.Topic == topic {
			out = append(out, m)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Bounds implements Broker.
func (b *MemoryBroker) Bounds(ctx context.Context) (Bounds, error) {
	if err := b.lockToRead(ctx); err != nil {
		return Bounds{}, err
	}
	defer b.mu.Unlock()
	return Bounds{Epoch: b.epoch, First: b.first(), Last: b.last}, nil
}

// State implements Broker. It collects the matching entries under the lock
// Publish appends under, so the snapshot is exact at the position it
// reports; the entries are put in cursor order after the lock is released.
func (b *MemoryBroker) State(ctx context.Context, patterns []Pattern) (StateSnapshot, error) {
	if len(patterns) == 0 {
		return StateSnapshot{Events: []*Message{}}, nil
	}
	if err := b.lockToRead(ctx); err != nil {
		return StateSnapshot{}, err
	}
	last := Cursor{Epoch: b.epoch, Seq: b.last}
	events, topics := b.state.snapshot(patterns)
	b.mu.Unlock()
	if topics > 1 {
		// Each topic's entries are in cursor order already; several
		// topics' interleave.
		slices.SortFunc(events, func(x, y *Message) int { return cmp.Compare(x.seq, y.seq) })
	}
	return StateSnapshot{Last: last, Events: events}, nil
}

// Topics implements Broker.
func (b *MemoryBroker) Topics(ctx context.Context) ([]TopicHistory, error) {
	if err := b.lockToRead(ctx); err != nil {
		return nil, err
	}
	defer b.mu.Unlock()
	out := make([]TopicHistory, 0, len(b.topics))
	for t, n := range b.topics {
		out = append(out, TopicHistory{Topic: t, Events: n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Topic < out[j].Topic })
	return out, nil
}

// Ping implements Broker; the memory broker is ready until closed.
func (b *MemoryBroker) Ping(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Close implements Broker.
func (b *MemoryBroker) Close() error {
	b.mu.Lock()
	b.closed = true
	b.deliver = nil
	b.mu.Unlock()
	// A control call in progress ends before Close returns.
	b.ctlMu.Lock()
	b.control = nil
	b.ctlMu.Unlock()
	return nil
}

// OnControl implements ControlBroker: the memory broker is a cluster of
// one node, so a control message goes back to its own hub.
func (b *MemoryBroker) OnControl(f func(msg []byte)) {
	b.ctlMu.Lock()
	b.control = f
	b.ctlMu.Unlock()
}

// PublishControl implements ControlBroker: it calls the OnControl function
// before it returns, under a lock of its own (not the log's), so that calls
// come one at a time.
func (b *MemoryBroker) PublishControl(ctx context.Context, msg []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := CheckControlMessage(msg); err != nil {
		return err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return ErrClosed
	}
	b.ctlMu.Lock()
	defer b.ctlMu.Unlock()
	if b.control != nil {
		b.control(msg)
	}
	return nil
}

// appended returns the messages of a Publish result without the nil places
// of skipped drafts.
func appended(msgs []*Message, skipped int) []*Message {
	out := make([]*Message, 0, len(msgs)-skipped)
	for _, m := range msgs {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}
