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
