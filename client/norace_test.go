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

// Reading a WebSocket event and delivering it allocates once too, over a
// real connection: coder/websocket's reader and the connection's one
// buffer of messages allocate nothing per message (a read whose context
// can end would: see sessionWS).
func TestWSReadAllocatesOnlyTheEvent(t *testing.T) {
	s := startWSReader(t)
	allocs := testing.AllocsPerRun(1000, func() {
		if m := <-s.msgs; m.Kind != KindEvent {
			t.Fatalf("got %v", m.Kind)
		}
	})
	if allocs > 1 {
		t.Fatalf("%v allocations per event, want 1", allocs)
	}
}
