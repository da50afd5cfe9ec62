package redisbroker

import (
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
)

// transientReplies begin Redis's refusals that mean "not now" (loading,
// failing over, busy, out of clients, out of memory under maxmemory, a
// failed snapshot that stops writes, too few replicas): the command did
// not run, and may later. Each is an outage of Redis to Herald's clients
// (503), not a fault of their request.
var transientReplies = []string{"LOADING", "BUSY", "MASTERDOWN", "READONLY", "CLUSTERDOWN", "TRYAGAIN", "max number of clients",
	"OOM", "MISCONF", "NOREPLICAS"}

// unreachable reports whether err is a failure to reach Redis, rather
// than Redis's answer (or a bug), and notes it for the next publish.
func (b *Broker) unreachable(err error) bool {
	var reply redis.Error
	if errors.As(err, &reply) {
		for _, p := range transientReplies {
			if redis.HasErrorPrefix(err, p) {
				b.down.Store(true)
				return true
			}
		}
		return false
	}
	if hub.IsConnFailure(err) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) {
		b.down.Store(true)
		return true
	}
	return false
}

// fail marks err as hub.ErrUnavailable if it is a failure to reach Redis.
func (b *Broker) fail(err error) error {
	if b.unreachable(err) {
		return hub.Unavailable(err)
	}
	return err
}
