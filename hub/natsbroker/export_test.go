package natsbroker

import (
	"context"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Snapshot exposes snapshot, the state of several patterns at one
// position, to the tests.
func (b *Broker) Snapshot(ctx context.Context, pats []hub.Pattern) (hub.Cursor, []*hub.Message, error) {
	return b.snapshot(ctx, pats)
}

// NarrowFeed makes the feed from delivery to the state applier hold n
// chunks (-1: none), so that it overflows; call before Start.
func (b *Broker) NarrowFeed(n int) { b.feedCap = n }

// CatchUps is how often the state applier has read the stream itself.
func (b *Broker) CatchUps() int64 { return b.catchUps.Load() }

// Applied is the state applier's position.
func (b *Broker) Applied() uint64 {
	if p := b.applied.Load(); p != nil {
		return p.seq
	}
	return 0
}

// Halt stops b's heartbeat as a crash would, without its clean-up: the
// other nodes' sweepers then make its members leave.
func Halt(b *Broker) { close(b.halt) }

// Pause stops (true) or resumes (false) b's heartbeats and sweeps, as a
// node cut off from NATS for a while would see them.
func Pause(b *Broker, paused bool) { b.paused.Store(paused) }

// Compact runs a compaction of the presence and state streams now.
// It removes tombstones older than age (instead of compactAge); call
// it while b is paused.
func (b *Broker) Compact(ctx context.Context, age time.Duration) error {
	b.compactAge.Store(int64(age))
	return b.compact(ctx)
}

// DropPresenceCache forgets the members this node keeps, so that the next
// read of a topic's members reads the presence stream.
func (b *Broker) DropPresenceCache() {
	b.presCache.mu.Lock()
	b.presCache.topics, b.presCache.size, b.presCache.complete = nil, 0, false
	b.presCache.mu.Unlock()
}

// PresenceComplete reports whether b holds every topic's members (loaded
// when it started, presence_preload.go).
func (b *Broker) PresenceComplete() bool {
	b.presCache.mu.Lock()
	defer b.presCache.mu.Unlock()
	return b.presCache.complete
}

// SetPresenceCacheMembers bounds the members b keeps. Call before Start.
func (b *Broker) SetPresenceCacheMembers(n int) { b.presCache.max = n }

// OnFlush has b's state applier call f before each write round, with the
// log positions it is about to write; f may block to hold the applier
// back. Call before Start.
func (b *Broker) OnFlush(f func(seqs []uint64)) { b.flushHook = f }

// WaitPresenceLoad waits until b's load of every topic's members at start
// has ended, kept or given up.
func WaitPresenceLoad(b *Broker) { b.preloading.Wait() }

// Sweeps reports whether b holds the sweep lease.
func (b *Broker) Sweeps(ctx context.Context) bool {
	kv, err := b.nodesBucket(ctx)
	if err != nil {
		return false
	}
	e, err := kv.Get(ctx, leaseKey)
	return err == nil && string(e.Value()) == b.node
}

// NewHeld is New with the sender not started: publishes queue until start
// is called, so that a test knows what the sender takes first.
func NewHeld(ctx context.Context, o Options) (b *Broker, start func(), err error) {
	b, err = newBroker(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return b, b.startSender, nil
}

// Queued reports how many attempts wait for the sender.
func Queued(b *Broker) int {
	return b.sender.queue.Len()
}

// OnChange has b's presence changes call f at their steps (see
// changeHook); f may block to hold a change there. Call before the first
// change.
func (b *Broker) OnChange(f func(step string)) { b.changeHook = f }

// OpenStateStream opens the state stream as a snapshot (create unset) or
// the applier (create set) does; it reports whether there is one.
func (b *Broker) OpenStateStream(ctx context.Context, create bool) (bool, error) {
	s, err := b.stateStream(ctx, create)
	return s != nil, err
}

// OpenPresenceStream is OpenStateStream for the presence stream.
func (b *Broker) OpenPresenceStream(ctx context.Context, create bool) (bool, error) {
	s, err := b.presStream(ctx, create)
	return s != nil, err
}

// DropStreams forgets the state and presence streams, as after they were
// found gone.
func (b *Broker) DropStreams() {
	b.dropStateStream()
	b.dropPresStream()
}

// SetStreamOpenWait bounds the shared opens of the state and presence
// streams to d until the returned function restores the bound.
func SetStreamOpenWait(d time.Duration) (restore func()) {
	old := streamOpenWait
	streamOpenWait = d
	return func() { streamOpenWait = old }
}
