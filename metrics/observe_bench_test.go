package metrics

import (
	"testing"
	"time"
)

// BenchmarkObserveLatency is the cost the delivery path pays per write of
// a connection (hub.Client.Written): reading the clock and one histogram
// observation, from every writer at once.
func BenchmarkObserveLatency(b *testing.B) {
	m := New("bench")
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveLatency(time.Since(start))
		}
	})
}
