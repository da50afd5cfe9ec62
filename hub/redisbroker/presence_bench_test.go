package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

// Presence on Redis (docs/benchmarks.md, "Presence"):
//
//	go test -run '^$' -bench 'Presence' -benchtime 20x ./hub/redisbroker/
func benchBroker(b *testing.B) *redisbroker.Broker {
	rdb, prefix := redistest.Client(b)
	br, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix, Block: 200 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	return br
}

func BenchmarkPresenceSnapshot(b *testing.B) {
	brokertest.BenchPresenceSnapshot(b, benchBroker(b), 10000)
}

func BenchmarkPresenceFanout(b *testing.B) { brokertest.BenchPresenceFanout(b, benchBroker(b), 1000) }

func BenchmarkPresenceChurn(b *testing.B) {
	brokertest.BenchPresenceChurn(b, benchBroker(b), 1000, 2*time.Second, 200)
}
