package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

// BenchmarkOutboxThroughput measures rows per second from the table to the
// log: b.N committed rows wait in the table (inserted before the timer
// starts), then a source starts and the timer stops when the last is in
// the log. Run with e.g. -benchtime 100000x.
func BenchmarkOutboxThroughput(b *testing.B) {
	for _, c := range []struct {
		name   string
		broker func(b *testing.B) hub.Broker
	}{
		{"memory", func(b *testing.B) hub.Broker { return hub.NewMemoryBroker(hub.MemoryOptions{Size: 1 << 21}) }},
		{"redis", func(b *testing.B) hub.Broker {
			rdb, prefix := redistest.Client(b)
			br, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix, Size: 1 << 21})
			if err != nil {
				b.Fatal(err)
			}
			return br
		}},
		{"nats", func(b *testing.B) hub.Broker {
			nc, name := natstest.Conn(b)
			br, err := natsbroker.New(context.Background(), natsbroker.Options{
				Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 1 << 21, Memory: true, DedupeWindow: hub.DefaultDedupeWindow,
			})
			if err != nil {
				b.Fatal(err)
			}
			return br
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			db := newDBB(b)
			conn := pgtest.Conn(b, db)
			fill(b, conn, b.N)
			broker := c.broker(b)
			b.ResetTimer()
			n := startNode(b, db+"&batch=1000", broker, nil)
			deadline := time.Now().Add(10 * time.Minute)
			for n.src.Published() < uint64(b.N) {
				if time.Now().After(deadline) {
					b.Fatalf("published %d of %d rows", n.src.Published(), b.N)
				}
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		})
	}
}

// fill commits n rows into the outbox, 1000 per transaction, with COPY.
func fill(b *testing.B, conn *pgx.Conn, n int) {
	ctx := context.Background()
	for done := 0; done < n; {
		k := min(1000, n-done)
		rows := make([][]any, k)
		for i := range rows {
			rows[i] = []any{"bench.rows", "row", fmt.Sprintf(`{"n":%d}`, done+i)}
		}
		if _, err := conn.CopyFrom(ctx, pgx.Identifier{"herald_outbox"}, []string{"topic", "type", "data"}, pgx.CopyFromRows(rows)); err != nil {
			b.Fatal(err)
		}
		done += k
	}
}
