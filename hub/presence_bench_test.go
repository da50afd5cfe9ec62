package hub_test

import (
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
)

// Presence on the memory broker (docs/benchmarks.md, "Presence"):
//
//	go test -run '^$' -bench 'Presence' -benchtime 20x ./hub/
func BenchmarkPresenceSnapshot(b *testing.B) {
	brokertest.BenchPresenceSnapshot(b, hub.NewMemoryBroker(hub.MemoryOptions{}), 10000)
}

func BenchmarkPresenceFanout(b *testing.B) {
	brokertest.BenchPresenceFanout(b, hub.NewMemoryBroker(hub.MemoryOptions{}), 1000)
}

func BenchmarkPresenceChurn(b *testing.B) {
	brokertest.BenchPresenceChurn(b, hub.NewMemoryBroker(hub.MemoryOptions{}), 1000, 2*time.Second, 200)
}
