package redisbroker_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, o brokertest.Options) hub.Broker {
		rdb, prefix := redistest.Client(t)
		b, err := redisbroker.New(context.Background(), redisbroker.Options{
			Client: rdb, Prefix: prefix, Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Block: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestCluster(t *testing.T) {
	brokertest.RunCluster(t, func(t *testing.T, n int, o brokertest.Options) []hub.Broker {
		_, prefix := redistest.Client(t)
		var bs []hub.Broker
		for range n {
			rdb, _ := redistest.Client(t) // a connection per node
			b, err := redisbroker.New(context.Background(), redisbroker.Options{
				Client: rdb, Prefix: prefix, Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Block: 200 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, b)
		}
		return bs
	})
}
