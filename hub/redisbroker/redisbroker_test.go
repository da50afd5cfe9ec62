package redisbroker_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/relay"
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

// TestPublishAnswerLost: Redis runs a publish whose answer is lost on the
// way; the broker asks again, answers with the cursors of the first run,
// and the log holds the events once.
func TestPublishAnswerLost(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	rl := relay.Start(t, redistest.Addr(), relay.Options{})
	via := redis.NewClient(&redis.Options{Addr: rl.Addr(), ContextTimeoutEnabled: true})
	defer via.Close()
	b, err := redisbroker.New(context.Background(), redisbroker.Options{Client: via, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	brokertest.RunAnswerLost(t, b, rl, func() int {
		n, _ := rdb.XLen(context.Background(), "{"+prefix+"}:log").Result()
		return int(n)
	})
}

// TestRefusalIsNotUnavailable: a request that Redis refuses for a reason
// of its own (here the log's key holds a string) fails, but not with
// hub.ErrUnavailable: retrying would not help, and it is not an outage.
func TestRefusalIsNotUnavailable(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	ctx := context.Background()
	b, err := redisbroker.New(ctx, redisbroker.Options{Client: rdb, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := rdb.Set(ctx, "{"+prefix+"}:log", "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	d := hub.Draft{Topic: "refused.a", Data: []byte("1")}
	if err := d.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, []hub.Draft{d}); err == nil || errors.Is(err, hub.ErrUnavailable) {
		t.Errorf("publish to a log that is not a stream: %v, want an error other than ErrUnavailable", err)
	}
	_, err = b.Read(ctx, hub.ReadRequest{Patterns: []hub.Pattern{hub.MustPattern(">")}, Limit: 10})
	if err == nil || errors.Is(err, hub.ErrUnavailable) {
		t.Errorf("read of a log that is not a stream: %v, want an error other than ErrUnavailable", err)
	}
}
