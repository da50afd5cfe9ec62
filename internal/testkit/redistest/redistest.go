// Package redistest gives tests the machine's Redis (127.0.0.1:6379, or
// HERALD_REDIS_ADDR) with a key prefix of their own, deleted when the test
// ends. Without Redis a test is skipped, except under CI (the CI variable
// set), where that fails: .ci/run starts Redis.
package redistest

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/internal/testkit/relay"
)

var prefixes atomic.Int64

// Addr is the Redis the tests use.
func Addr() string {
	if a := os.Getenv("HERALD_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// Client returns a client of the test's own and a fresh key prefix. When
// the test ends, every key of the prefix ({prefix}:…) is deleted and the
// client closed.
func Client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: Addr()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		if os.Getenv("CI") != "" {
			t.Fatalf("no Redis at %s under CI: %v", Addr(), err)
		}
		t.Skipf("no Redis at %s: %v", Addr(), err)
	}
	prefix := fmt.Sprintf("herald-test-%d-%d-%d", os.Getpid(), time.Now().UnixNano(), prefixes.Add(1))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, "{"+prefix+"}:*", 100).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	return rdb, prefix
}

// URL returns a --broker URL on the test's own prefix.
func URL(t testing.TB) string {
	t.Helper()
	_, prefix := Client(t)
	return "redis://" + Addr() + "/0?prefix=" + prefix
}

// Relayed returns a client that reaches the tests' Redis through a relay
// the test can mute or cut, configured as the server configures its own
// (a request's deadline bounds its reads); it is closed when the test ends.
func Relayed(t testing.TB) (*redis.Client, *relay.Relay) {
	t.Helper()
	rl := relay.Start(t, Addr(), relay.Options{})
	via := redis.NewClient(&redis.Options{Addr: rl.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { via.Close() })
	return via, rl
}
