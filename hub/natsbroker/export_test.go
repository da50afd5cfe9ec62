package natsbroker

import (
	"context"

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
