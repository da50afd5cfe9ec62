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
			Client: rdb, Prefix: prefix, Size: o.Size, TTL: o.TTL, Block: 200 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
