package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
)

func TestMemoryBrokerConformance(t *testing.T) {
	brokertest.Run(t, func(t *testing.T, o brokertest.Options) hub.Broker {
		return hub.NewMemoryBroker(hub.MemoryOptions{Size: o.Size, MaxBytes: o.MaxBytes, TTL: o.TTL, StateMaxKeys: o.StateMaxKeys, PresenceMaxMembers: o.PresenceMaxMembers})
	})
}

func TestMemoryControl(t *testing.T) {
	brokertest.RunControl(t, 1, func(t *testing.T, n int, o brokertest.Options) []hub.Broker {
		return []hub.Broker{hub.NewMemoryBroker(hub.MemoryOptions{Size: o.Size})}
	})
}

// fakeClock is an injected MemoryOptions.Now: tests move time explicitly
// instead of sleeping.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// memDeliveries records what a MemoryBroker delivers.
type memDeliveries struct {
	mu      sync.Mutex
	batches [][]*hub.Message
}

func (d *memDeliveries) deliver(msgs []*hub.Message) {
	d.mu.Lock()
	d.batches = append(d.batches, msgs)
	d.mu.Unlock()
}

func newMem(t *testing.T, o hub.MemoryOptions) (*hub.MemoryBroker, *memDeliveries) {
	t.Helper()
	b := hub.NewMemoryBroker(o)
	d := &memDeliveries{}
	if err := b.Start(d.deliver); err != nil {
		t.Fatalf("failed to start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, d
}

func mdraft(topic, data string) hub.Draft {
	d := hub.Draft{Topic: topic, Data: []byte(data)}
	if err := d.Normalize(); err != nil {
		panic(err)
	}
	return d
}

func mpub(t *testing.T, b hub.Broker, ds ...hub.Draft) []*hub.Message {
	t.Helper()
	msgs, err := b.Publish(context.Background(), ds)
	if err != nil {
		t.Fatalf("failed to publish: %v", err)
	}
	return msgs
}

func seqs(msgs []*hub.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i, m := range msgs {
		out[i] = m.ID.Seq
	}
	return out
}

// TestMemoryBrokerOversizedEvent: an event larger than MaxBytes on its own
// is delivered but leaves nothing retained, and the log goes on from it.
func TestMemoryBrokerOversizedEvent(t *testing.T) {
	ctx := context.Background()
	b, d := newMem(t, hub.MemoryOptions{MaxBytes: 4 << 10})
	mpub(t, b, mdraft("big.a", "1"))
	mpub(t, b, mdraft("big.a", `"`+strings.Repeat("x", 8<<10)+`"`))
	d.mu.Lock()
	delivered := len(d.batches)
	d.mu.Unlock()
	if delivered != 2 {
		t.Fatalf("delivered %d batches, want 2", delivered)
	}
	bd, err := b.Bounds(ctx)
	if err != nil || bd.First != 3 || bd.Last != 2 {
		t.Fatalf("Bounds = %+v, %v; want an empty log ending at 2", bd, err)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 1, Patterns: all, Limit: 10}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 1 = %v, want ErrHistoryGone", err)
	}
	if ms := mpub(t, b, mdraft("big.a", "3")); ms[0].ID.Seq != 3 {
		t.Fatalf("next event at %d, want 3", ms[0].ID.Seq)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 2, Patterns: all, Limit: 10})
	if err != nil || fmt.Sprint(seqs(res.Messages)) != "[3]" {
		t.Fatalf("Read after 2 = %v, %v; want [3]", seqs(res.Messages), err)
	}
}

func TestMemoryBrokerRetentionByCount(t *testing.T) {
	ctx := context.Background()
	b, _ := newMem(t, hub.MemoryOptions{Size: 3})
	for i := range 5 {
		mpub(t, b, mdraft(fmt.Sprintf("cnt.t%d", i%2), fmt.Sprint(i)))
	}
	bd, err := b.Bounds(ctx)
	if err != nil || bd.First != 3 || bd.Last != 5 {
		t.Fatalf("Bounds = %+v, %v; want First 3 Last 5", bd, err)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 1, Patterns: all, Limit: 10}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 1 = %v, want ErrHistoryGone", err)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 2, Patterns: all, Limit: 10})
	if err != nil || fmt.Sprint(seqs(res.Messages)) != "[3 4 5]" || res.More || res.Next != 5 {
		t.Fatalf("Read after 2 = %v next %d more %v, %v; want [3 4 5] next 5", seqs(res.Messages), res.Next, res.More, err)
	}
	ts, _ := b.Topics(ctx)
	if fmt.Sprint(ts) != "[{cnt.t0 2} {cnt.t1 1}]" {
		t.Fatalf("Topics = %v, want only retained events counted", ts)
	}
	// A batch bigger than the ring keeps its newest part.
	mpub(t, b, mdraft("cnt.b", "1"), mdraft("cnt.b", "2"), mdraft("cnt.b", "3"), mdraft("cnt.b", "4"))
	bd, _ = b.Bounds(ctx)
	if bd.First != 7 || bd.Last != 9 {
		t.Fatalf("after an oversize batch Bounds = %+v, want First 7 Last 9", bd)
	}
	ts, _ = b.Topics(ctx)
	if fmt.Sprint(ts) != "[{cnt.b 3}]" {
		t.Fatalf("Topics = %v, want [{cnt.b 3}]", ts)
	}
}

func TestMemoryBrokerRetentionByAge(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{now: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)}
	t0 := clock.Now()
	b, _ := newMem(t, hub.MemoryOptions{Size: 100, TTL: 10 * time.Second, Now: clock.Now})
	mpub(t, b, mdraft("age.a", "1"), mdraft("age.b", "2")) // seq 1, 2 at t0
	clock.Advance(5 * time.Second)
	m := mpub(t, b, mdraft("age.a", "3")) // seq 3 at t0+5s
	if !m[0].Time.Equal(t0.Add(5 * time.Second)) {
		t.Fatalf("event time = %v, want the injected clock's %v", m[0].Time, t0.Add(5*time.Second))
	}
	// Exactly TTL old is still retained; older is not.
	clock.Advance(5 * time.Second)
	if bd, _ := b.Bounds(ctx); bd.First != 1 || bd.Last != 3 {
		t.Fatalf("at exactly TTL Bounds = %+v, want First 1 Last 3", bd)
	}
	clock.Advance(time.Nanosecond)
	if bd, _ := b.Bounds(ctx); bd.First != 3 || bd.Last != 3 {
		t.Fatalf("past TTL Bounds = %+v, want First 3 Last 3", bd)
	}
	if ts, _ := b.Topics(ctx); fmt.Sprint(ts) != "[{age.a 1}]" {
		t.Fatalf("Topics = %v, want [{age.a 1}]", ts)
	}
	if got, _ := b.Latest(ctx, "age.b", 5); len(got) != 0 {
		t.Fatalf("Latest(age.b) = %v, want nothing (expired)", seqs(got))
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 1, Patterns: all, Limit: 5}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 1 = %v, want ErrHistoryGone", err)
	}
	// Everything expires: First = Last+1, reading at the head is fine.
	clock.Advance(time.Minute)
	if bd, _ := b.Bounds(ctx); bd.First != 4 || bd.Last != 3 {
		t.Fatalf("all expired: Bounds = %+v, want First 4 Last 3", bd)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 3, Patterns: all, Limit: 5})
	if err != nil || len(res.Messages) != 0 || res.More || res.Next != 3 {
		t.Fatalf("Read at head = %+v, %v", res, err)
	}
	if ts, _ := b.Topics(ctx); len(ts) != 0 {
		t.Fatalf("Topics = %v, want none", ts)
	}
	// Publishing expires on its own too (no reader needed), and counts continue.
	m = mpub(t, b, mdraft("age.c", "4"))
	if m[0].ID.Seq != 4 {
		t.Fatalf("seq after expiry = %d, want 4", m[0].ID.Seq)
	}
}

func TestMemoryBrokerReadPaging(t *testing.T) {
	ctx := context.Background()
	b, _ := newMem(t, hub.MemoryOptions{})
	for i := range 10 {
		tp := "pg.a"
		if i%2 == 1 {
			tp = "pg.b"
		}
		mpub(t, b, mdraft(tp, fmt.Sprint(i))) // pg.a at odd seqs, pg.b at even
	}
	a := []hub.Pattern{hub.MustPattern("pg.a")}
	bb := []hub.Pattern{hub.MustPattern("pg.b")}
	cases := []struct {
		name    string
		req     hub.ReadRequest
		want    string
		next    uint64
		more    bool
		wantErr bool
	}{
		{"limit stops after the last match", hub.ReadRequest{After: 0, Patterns: a, Limit: 2}, "[1 3]", 3, true, false},
		{"continue from Next", hub.ReadRequest{After: 3, Patterns: a, Limit: 2}, "[5 7]", 7, true, false},
		{"last page", hub.ReadRequest{After: 7, Patterns: a, Limit: 2}, "[9]", 10, false, false},
		// The page is full before the last entry was examined: More, even though
		// nothing after it matches.
		{"limit reached before the end", hub.ReadRequest{After: 6, Patterns: a, Limit: 2}, "[7 9]", 9, true, false},
		{"max scan bounds the examined range", hub.ReadRequest{After: 0, Patterns: bb, Limit: 10, MaxScan: 3}, "[2]", 3, true, false},
		{"max scan with no match makes progress", hub.ReadRequest{After: 0, Patterns: []hub.Pattern{hub.MustPattern("none")}, Limit: 10, MaxScan: 4}, "[]", 4, true, false},
		{"several patterns, each event once", hub.ReadRequest{After: 0, Patterns: []hub.Pattern{hub.MustPattern("pg.*"), hub.MustPattern("pg.a"), hub.MustPattern(">")}, Limit: 3}, "[1 2 3]", 3, true, false},
		{"no patterns matches nothing", hub.ReadRequest{After: 0, Limit: 3}, "[]", 10, false, false},
		{"past the end", hub.ReadRequest{After: 12, Patterns: a, Limit: 3}, "[]", 12, false, false},
		{"zero limit", hub.ReadRequest{After: 0, Patterns: a}, "", 0, false, true},
	}
	for _, c := range cases {
		res, err := b.Read(ctx, c.req)
		if c.wantErr {
			if err == nil {
				t.Errorf("%s: no error", c.name)
			}
			continue
		}
		if err != nil || fmt.Sprint(seqs(res.Messages)) != c.want || res.Next != c.next || res.More != c.more {
			t.Errorf("%s: got %v next %d more %v err %v; want %s next %d more %v",
				c.name, seqs(res.Messages), res.Next, res.More, err, c.want, c.next, c.more)
		}
	}
	dead, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Read(dead, hub.ReadRequest{Patterns: a, Limit: 1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context = %v", err)
	}
}

func TestMemoryBrokerLatestAndBatch(t *testing.T) {
	ctx := context.Background()
	b, d := newMem(t, hub.MemoryOptions{Size: 6})
	msgs := mpub(t, b, mdraft("lt.a", "1"), mdraft("lt.b", "2"), mdraft("lt.a", "3"))
	if fmt.Sprint(seqs(msgs)) != "[1 2 3]" {
		t.Fatalf("batch seqs = %v", seqs(msgs))
	}
	mpub(t, b, mdraft("lt.a", "4"), mdraft("lt.a", "5"))
	d.mu.Lock()
	nb := len(d.batches)
	first := seqs(d.batches[0])
	d.mu.Unlock()
	if nb != 2 || fmt.Sprint(first) != "[1 2 3]" {
		t.Fatalf("deliveries = %d batches, first %v; want one call per batch", nb, first)
	}
	got, _ := b.Latest(ctx, "lt.a", 2)
	if fmt.Sprint(seqs(got)) != "[4 5]" {
		t.Fatalf("Latest(lt.a, 2) = %v, want [4 5]", seqs(got))
	}
	got, _ = b.Latest(ctx, "lt.a", 10)
	if fmt.Sprint(seqs(got)) != "[1 3 4 5]" {
		t.Fatalf("Latest(lt.a, 10) = %v, want [1 3 4 5]", seqs(got))
	}
	mpub(t, b, mdraft("lt.c", "6"), mdraft("lt.c", "7"), mdraft("lt.c", "8")) // evicts 1 and 2
	got, _ = b.Latest(ctx, "lt.a", 10)
	if fmt.Sprint(seqs(got)) != "[3 4 5]" {
		t.Fatalf("Latest(lt.a) after eviction = %v, want [3 4 5]", seqs(got))
	}
	if got, _ := b.Latest(ctx, "lt.b", 10); len(got) != 0 {
		t.Fatalf("Latest(lt.b) = %v, want evicted", seqs(got))
	}
	if err := b.Start(func([]*hub.Message) {}); err == nil {
		t.Fatal("second Start succeeded")
	}
	dead, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.Publish(dead, []hub.Draft{mdraft("lt.a", "9")}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish with a cancelled context = %v", err)
	}
	if bd, _ := b.Bounds(ctx); bd.Last != 8 {
		t.Fatalf("a failed publish moved Last to %d", bd.Last)
	}
}

func TestMemoryBrokerClose(t *testing.T) {
	ctx := context.Background()
	b, d := newMem(t, hub.MemoryOptions{})
	mpub(t, b, mdraft("cl.a", "1"))
	if err := b.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if _, err := b.Publish(ctx, []hub.Draft{mdraft("cl.a", "2")}); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Publish after Close = %v", err)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if _, err := b.Bounds(ctx); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Bounds after Close = %v", err)
	}
	if _, err := b.Latest(ctx, "cl.a", 1); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Latest after Close = %v", err)
	}
	if err := b.Ping(ctx); !errors.Is(err, hub.ErrClosed) {
		t.Errorf("Ping after Close = %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.batches) != 1 {
		t.Errorf("delivered %d batches, want 1", len(d.batches))
	}
}

var all = []hub.Pattern{hub.MustPattern(">")}
