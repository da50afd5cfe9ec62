package redisbroker

import "context"

// Halt stops b's heartbeat as a crash would, without its clean-up: the
// other nodes' sweepers then make its members leave.
func Halt(b *Broker) { close(b.halt) }

// Pause stops (true) or resumes (false) b's heartbeats and sweeps, as a
// node cut off from Redis for a while would see them.
func Pause(b *Broker, paused bool) { b.paused.Store(paused) }

// NewHeld is New with the committer not started: publishes queue until
// start is called, so that a test knows which batches form the first
// group. The broker must not be closed before start.
func NewHeld(ctx context.Context, o Options) (b *Broker, start func(), err error) {
	b, err = newBroker(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { go b.commitLoop() }, nil
}

// HoldTrim takes b's trim lock, as a trim waiting on Redis holds it, until
// release is called.
func HoldTrim(b *Broker) (release func()) {
	b.trimMu.Lock()
	return b.trimMu.Unlock
}

// Queued reports how many batches wait for the committer.
func Queued(b *Broker) int {
	return b.commit.Len()
}

// Sweeps reports whether b holds the sweep lease.
func (b *Broker) Sweeps(ctx context.Context) bool {
	holder, err := b.rdb.Get(ctx, b.leaseKey()).Result()
	return err == nil && holder == b.node
}
