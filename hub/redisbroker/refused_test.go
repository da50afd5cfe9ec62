package redisbroker_test

import (
	"context"
	"errors"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestFullRedisIsUnavailable: a Redis that refuses writes because it is
// out of memory (maxmemory with noeviction) is an outage, as one that does
// not answer is: the publish fails with hub.ErrUnavailable (503), and goes
// through again once Redis has room.
func TestFullRedisIsUnavailable(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("no redis-server binary")
	}
	// A Redis of its own: the shared one must not run out of memory.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	srv := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wait.For(t, 10*time.Second, "redis-server to answer", func() bool { return rdb.Ping(ctx).Err() == nil })

	b, err := redisbroker.New(ctx, redisbroker.Options{Client: rdb, Prefix: "full"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	d := hub.Draft{Topic: "full.a", Data: []byte("1")}
	if err := d.Normalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, []hub.Draft{d}); !errors.Is(err, hub.ErrUnavailable) {
		t.Fatalf("publish to a full Redis: %v, want hub.ErrUnavailable", err)
	}
	if err := rdb.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
		t.Fatalf("publish once Redis has room: %v", err)
	}
}
