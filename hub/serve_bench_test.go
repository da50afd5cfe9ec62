package hub_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// BenchmarkServe measures the live path through the connections' writers
// (Client.Serve): each wake, drain, batch and latency sample, with a
// BatchWriter that counts and discards, so no socket cost is included.
// Publishing runs up to serveAhead events ahead of the writers; one op is
// one event delivered to every subscriber.
func BenchmarkServe(b *testing.B) {
	for _, subs := range []int{1000, 8000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { benchServe(b, subs) })
	}
}

// countWriter counts what it is given; Finish closes the client.
type countWriter struct {
	c     *hub.Client
	got   *atomic.Int64
	ended chan struct{}
}

func (w *countWriter) WriteBatch(items []hub.Item) error {
	w.got.Add(int64(len(items)))
	return nil
}

func (w *countWriter) KeepAlive() error { return nil }

func (w *countWriter) Finish(hub.End) {
	w.c.Close()
	close(w.ended)
}

// serveAhead is how many events publishing may run ahead of the writers.
const serveAhead = 256

func benchServe(b *testing.B, subs int) {
	ctx := context.Background()
	h, err := hub.New(hub.Options{QueueBytes: 1 << 20, ObserveLatency: func(time.Duration) {}})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := h.Close(ctx); err != nil {
			b.Error(err)
		}
	}()
	var got atomic.Int64
	done := make(chan struct{})
	opts := &hub.WriterOptions{ParkAfter: time.Second}
	writers := make([]*countWriter, subs)
	for i := range writers {
		c, err := h.NewClient("bench")
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("bench.t")}}); err != nil {
			b.Fatal(err)
		}
		writers[i] = &countWriter{c: c, got: &got, ended: make(chan struct{})}
		c.Serve(writers[i], opts, done)
	}
	defer func() {
		close(done)
		for _, w := range writers {
			w.c.Interrupt()
			<-w.ended
		}
	}()
	drafts := []hub.Draft{{Topic: "bench.t", Data: []byte(`{"n":1}`)}}
	b.ResetTimer()
	start := time.Now()
	// await waits until n events have reached every subscriber.
	await := func(n int) {
		want := int64(n) * int64(subs)
		deadline := time.Now().Add(time.Minute)
		for got.Load() < want {
			if time.Now().After(deadline) {
				b.Fatalf("delivered %d of %d", got.Load(), want)
			}
			runtime.Gosched()
		}
	}
	for i := range b.N {
		if _, err := h.Publish(ctx, drafts...); err != nil {
			b.Fatal(err)
		}
		if i%serveAhead == 0 {
			await(i - serveAhead) // keeps every queue far below its bound
		}
	}
	await(b.N)
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(subs)/elapsed.Seconds(), "deliveries/s")
}
