package redisbroker_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, o brokertest.Options) hub.Broker {
		rdb, prefix := redistest.Client(t)
		b, err := redisbroker.New(context.Background(), redisbroker.Options{
			Client: rdb, Prefix: prefix, Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Block: 200 * time.Millisecond,
			StateMaxKeys: o.StateMaxKeys, PresenceMaxMembers: o.PresenceMaxMembers,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func newCluster(t *testing.T, n int, o brokertest.Options) []hub.Broker {
	_, prefix := redistest.Client(t)
	var bs []hub.Broker
	for range n {
		rdb, _ := redistest.Client(t) // a connection per node
		b, err := redisbroker.New(context.Background(), redisbroker.Options{
			Client: rdb, Prefix: prefix, Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, Block: 200 * time.Millisecond,
			PresenceMaxMembers: o.PresenceMaxMembers, NodeTTL: o.NodeTTL,
		})
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
	return bs
}

func TestCluster(t *testing.T) {
	brokertest.RunCluster(t, newCluster)
	brokertest.RunControl(t, 2, newCluster)
	brokertest.RunPresenceCluster(t, newCluster, func(b hub.Broker) { redisbroker.Halt(b.(*redisbroker.Broker)) })
}

// TestPublishAnswerLost: Redis runs a publish whose answer is lost on the
// way; the broker asks again, answers with the cursors of the first run,
// and the log holds the events once.
func TestPublishAnswerLost(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	via, rl := redistest.Relayed(t)
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

// TestManyPublishers: 16 publishers per node on two nodes, so that each
// node's committer appends groups of many batches.
func TestManyPublishers(t *testing.T) {
	brokertest.RunManyPublishers(t, newCluster, 16, 25)
}

// newHeld returns a broker whose committer waits for Release (NewHeld),
// on client rdb.
func newHeld(t *testing.T, rdb redis.UniversalClient, o redisbroker.Options) brokertest.Held {
	b, start, err := redisbroker.NewHeld(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(start) }
	t.Cleanup(func() {
		release() // Close waits for the committer
		b.Close()
	})
	return brokertest.Held{Broker: b, Queued: func() int { return redisbroker.Queued(b) }, Release: release}
}

// TestQueueBound: past the queue's bound (10,000 events, or 8 MiB) a
// publish waits for room; one whose time runs out meanwhile fails as not
// stored, and the others are appended, each batch whole, once the
// committer runs.
func TestQueueBound(t *testing.T) {
	t.Run("events", func(t *testing.T) { testQueueBound(t, 10, 1000, 1) })
	t.Run("bytes", func(t *testing.T) { testQueueBound(t, 8, 100, 10<<10) })
}

func testQueueBound(t *testing.T, batches, perBatch, size int) {
	rdb, prefix := redistest.Client(t)
	h := newHeld(t, rdb, redisbroker.Options{Client: rdb, Prefix: prefix, Size: 20000})
	brokertest.RunQueueBound(t, h, batches, perBatch, size, func() int {
		n, _ := rdb.XLen(context.Background(), "{"+prefix+"}:log").Result()
		return int(n)
	})
}

// TestGroupCancel: a publish cancelled while queued is left out of its
// group, which leaves no gap; Redis holds one outcome key for the group.
func TestGroupCancel(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	brokertest.RunGroupCancel(t, newHeld(t, rdb, redisbroker.Options{Client: rdb, Prefix: prefix}))
	keys, err := rdb.Keys(context.Background(), "{"+prefix+"}:pub:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 {
		t.Errorf("%d outcome keys after one group, want 1: %v", len(keys), keys)
	}
}

// TestGroupDedupe: a dedupe key twice in one group is appended once.
func TestGroupDedupe(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	brokertest.RunGroupDedupe(t, newHeld(t, rdb, redisbroker.Options{Client: rdb, Prefix: prefix}))
}

// TestGroupAnswerLost: the answer of a group of publishes is lost; the
// broker asks again for the whole group, and every publisher gets its
// batch's cursors from the first run.
func TestGroupAnswerLost(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	via, rl := redistest.Relayed(t)
	brokertest.RunGroupAnswerLost(t, newHeld(t, via, redisbroker.Options{Client: via, Prefix: prefix}), rl, func() int {
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

// TestStateMaxBytes: past StateMaxBytes the least recently written keys
// of any topic go first, and an event larger than the bound on its own
// removes its key's older value and is not kept.
func TestStateMaxBytes(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	data := `"` + strings.Repeat("x", 1000) + `"`
	// Each key counts about 1100 bytes: room for three, not four.
	b, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix, StateMaxBytes: 3500})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pub := func(topic, key, data string) {
		d := hub.Draft{Topic: topic, Key: key, Data: []byte(data)}
		if err := d.Normalize(); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Publish(ctx, []hub.Draft{d}); err != nil {
			t.Fatal(err)
		}
	}
	keys := func() string {
		var out []string
		for _, topic := range []string{"t.1", "t.2", "t.3"} {
			st, err := b.State(ctx, []hub.Pattern{hub.MustPattern(topic)})
			if err != nil {
				t.Fatal(err)
			}
			var ks []string
			for _, m := range st.Events {
				ks = append(ks, m.Key)
			}
			out = append(out, strings.Join(ks, " "))
		}
		return strings.Join(out, "|")
	}
	pub("t.1", "a", data)
	pub("t.2", "b", data)
	pub("t.1", "c", data)
	pub("t.1", "a", data) // a is now the most recently written
	pub("t.3", "d", data) // b, on another topic, goes
	if got := keys(); got != "c a||d" {
		t.Fatalf("state keys = %q, want %q", got, "c a||d")
	}
	pub("t.1", "c", `"`+strings.Repeat("y", 5000)+`"`)
	if got := keys(); got != "a||d" {
		t.Fatalf("state keys after an oversize event = %q, want %q", got, "a||d")
	}
	// The byte count followed the removals: a third key fits again.
	pub("t.2", "e", data)
	if got := keys(); got != "a|e|d" {
		t.Fatalf("state keys = %q, want %q", got, "a|e|d")
	}
}

// TestReadsDoNotWaitForATrim: with an age bound, reads trim the log now and
// then; one trim waiting on Redis must not hold the other reads, which go
// on without it.
func TestReadsDoNotWaitForATrim(t *testing.T) {
	rdb, prefix := redistest.Client(t)
	b, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix, TTL: time.Hour, Block: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.Publish(ctx, []hub.Draft{{Topic: "trim.t", Data: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	release := sync.OnceFunc(redisbroker.HoldTrim(b))
	defer release()
	done := make(chan error, 1)
	go func() {
		res, err := b.Read(ctx, hub.ReadRequest{Patterns: []hub.Pattern{hub.MustPattern("trim.t")}, Limit: 10})
		if err == nil && len(res.Messages) != 1 {
			err = errors.New("want the one event")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read: %v", err)
		}
	case <-time.After(5 * time.Second):
		release()
		<-done
		t.Fatal("a read waited for another's trim")
	}
}
