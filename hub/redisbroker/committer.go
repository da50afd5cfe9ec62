package redisbroker

import (
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
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
// alone. The queue is a groupcommit.Queue: its Ticket is how a publisher
// that gives up takes its batch back before the committer takes it.
const (
	groupMaxEvents = 1000
	groupMaxBytes  = 1 << 20
	queueMaxEvents = 10 * groupMaxEvents
	queueMaxBytes  = 8 * groupMaxBytes
)

var (
	groupLimit = groupcommit.Limit{Events: groupMaxEvents, Bytes: groupMaxBytes}
	queueLimit = groupcommit.Limit{Events: queueMaxEvents, Bytes: queueMaxBytes}
)

// pending is a batch waiting for its group's outcome.
type pending struct {
	groupcommit.Ticket
	drafts   []hub.Draft
	dedupe   bool // some draft has a Dedupe key
	deadline time.Time
	done     chan pubResult // buffered: the committer never waits on it
}

type pubResult struct {
	msgs []*hub.Message
	err  error
}

// commitLoop is the committer goroutine, which New starts: it appends
// group after group until b.ctx ends (Close), and then fails what is still
// queued with hub.ErrClosed.
func (b *Broker) commitLoop() {
	defer close(b.commitDone)
	b.commit.Serve(b.ctx, groupLimit, b.commitGroup)
	for _, p := range b.commit.Close(hub.ErrClosed) {
		p.done <- pubResult{err: hub.ErrClosed}
	}
}
