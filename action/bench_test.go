package action_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
)

// BenchmarkEcho is the whole cost of an echo action on one node, from
// Submit to its published result, with the default workers: submitters in
// parallel, and the workers running what they accept. It stops the clock
// once every action's result is published.
func BenchmarkEcho(b *testing.B) {
	h := newHub(b, 0)
	s := newService(b, h, action.Options{Echo: true, QueueSize: 1 << 20, Logger: slog.New(slog.DiscardHandler)})
	payload := json.RawMessage(`{"title":"milk","n":42}`)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _, err := s.Submit(context.Background(), action.Request{Type: "echo", Topic: "bench.actions", Payload: payload})
			if errors.Is(err, action.ErrQueueFull) {
				b.Error(err)
				return
			}
		}
	})
	deadline := time.Now().Add(waitLong)
	for s.Stats().Succeeded < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d actions succeeded", s.Stats().Succeeded, b.N)
		}
		time.Sleep(100 * time.Microsecond)
	}
}
