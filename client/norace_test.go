//go:build !race

package client

import (
	"context"
	"testing"
)

// Reading an SSE event and delivering it allocates once: the event's copy
// of its envelope, which its strings and Data share. (The race detector
// adds allocations of its own, hence the build tag.)
func TestSSEReadAllocatesOnlyTheEvent(t *testing.T) {
	s := benchSubscription()
	r := newSSEReader(&sseStream{}, DefaultMaxMessage)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		typ, id, data, err := r.next()
		if err != nil {
			t.Fatal(err)
		}
		if err := s.sseEvent(ctx, typ, id, data); err != nil {
			t.Fatal(err)
		}
		<-s.msgs
	})
	if allocs > 1 {
		t.Fatalf("%v allocations per event, want 1", allocs)
	}
}
