package redisbroker_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

// BenchmarkPublish measures Publish of one event, plain and keyed, on the
// machine's Redis, from 16 goroutines at once, so that Redis's time per
// run of the publish script, not one round trip, bounds events/s. The
// keyed runs cycle through 16 keys of one topic, so the state replaces
// entries rather than grows.
//
//	go test -run '^$' -bench Publish -benchtime 2000x ./hub/redisbroker/
func BenchmarkPublish(b *testing.B) {
	for _, keyed := range []bool{false, true} {
		name := "plain"
		if keyed {
			name = "keyed"
		}
		b.Run(name, func(b *testing.B) {
			rdb, prefix := redistest.Client(b)
			br := startBench(b, rdb, prefix)
			ctx := context.Background()
			data := []byte(`{"order":42,"status":"paid","items":[1,2,3]}`)
			var keys [16]string
			for i := range keys {
				keys[i] = fmt.Sprintf("user:%d", i)
			}
			b.ReportAllocs()
			b.SetParallelism(8) // × GOMAXPROCS goroutines
			b.ResetTimer()
			start := time.Now()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := n.Add(1)
					d := hub.Draft{Topic: "orders.42", Type: "order.paid", Data: data}
					if keyed {
						d.Key = keys[i%int64(len(keys))]
					}
					if _, err := br.Publish(ctx, []hub.Draft{d}); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkPublishTwoNodes measures what two nodes on one prefix append
// together with group commit: 256 goroutines, half publishing through each
// broker, one plain event per Publish. It is the broker's own ceiling,
// without the HTTP requests in front of it.
//
//	go test -run '^$' -bench PublishTwoNodes -benchtime 200000x ./hub/redisbroker/
func BenchmarkPublishTwoNodes(b *testing.B) {
	rdb, prefix := redistest.Client(b)
	var nodes [2]*redisbroker.Broker
	for i := range nodes {
		nodes[i] = startBench(b, rdb, prefix)
	}
	ctx := context.Background()
	data := []byte(`{"order":42,"status":"paid","items":[1,2,3]}`)
	b.ReportAllocs()
	b.SetParallelism(128) // × GOMAXPROCS goroutines
	b.ResetTimer()
	start := time.Now()
	var n, g atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		br := nodes[g.Add(1)%2]
		for pb.Next() {
			n.Add(1)
			if _, err := br.Publish(ctx, []hub.Draft{{Topic: "orders.42", Type: "order.paid", Data: data}}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "events/s")
}

// startBench starts a broker on prefix that discards what it delivers,
// closed when b ends.
func startBench(b *testing.B, rdb *redis.Client, prefix string) *redisbroker.Broker {
	br, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix})
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(func([]*hub.Message) {}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = br.Close() })
	return br
}
