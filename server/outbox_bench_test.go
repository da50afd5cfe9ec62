package server_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/testkit/clienttest"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/outbox"
	"github.com/heraldpush/herald/server"
)

// BenchmarkOutboxLatency measures the time from a row's commit to its
// event's arrival at an SSE subscriber, at 1,000 rows/s: one row per
// millisecond, each INSERT its own transaction (the clock starts before
// the statement is sent, so the commit itself is counted). b.N rows; run
// with e.g. -benchtime 10000x. Reports p50 and p99 in ms.
func BenchmarkOutboxLatency(b *testing.B) {
	db := pgtest.Database(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		b.Fatal(err)
	}
	n := heraldtest.Start(b, server.Config{Sources: []string{db}})
	sub := clienttest.Subscribe(ctx, b, n.URL, "sse", []string{"latency.t"}, &client.SubscribeOptions{Buffer: 4096})
	conn := pgtest.Conn(b, db)
	sent := make([]time.Time, b.N)
	lat := make([]float64, 0, b.N)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(lat) < b.N {
			select {
			case m := <-sub.C():
				i, err := strconv.Atoi(string(m.Event.Data))
				if err != nil || i >= b.N {
					b.Errorf("unexpected event %s", m.Event.Data)
					return
				}
				lat = append(lat, float64(time.Since(sent[i]))/float64(time.Millisecond))
			case <-ctx.Done():
				return
			}
		}
	}()
	b.ResetTimer()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for i := range b.N {
		<-tick.C
		sent[i] = time.Now()
		if _, err := conn.Exec(ctx, "INSERT INTO herald_outbox (topic, data) VALUES ('latency.t', $1)", strconv.Itoa(i)); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	b.StopTimer()
	if len(lat) < b.N {
		b.Fatalf("received %d of %d rows", len(lat), b.N)
	}
	slices.Sort(lat)
	b.ReportMetric(lat[len(lat)/2], "p50-ms")
	b.ReportMetric(lat[len(lat)*99/100], "p99-ms")
	b.ReportMetric(lat[len(lat)-1], "max-ms")
}
