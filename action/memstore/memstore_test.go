package memstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/action/storetest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance: the nodes of the suite are runners on one Store, as the
// runners of one process are.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, n int) []action.Store {
		s := newStore(t, memstore.Options{})
		out := make([]action.Store, n)
		for i := range out {
			out[i] = s
		}
		return out
	})
}

func newStore(t *testing.T, o memstore.Options) *memstore.Store {
	t.Helper()
	s := memstore.New(o)
	t.Cleanup(s.Close)
	return s
}

func stored(id, key string) *action.Stored {
	return &action.Stored{
		Action:  action.Action{ID: id, Type: "echo", Topic: "t", Status: action.Pending, CreatedAt: time.Now().UTC()},
		Payload: json.RawMessage(`"` + id + `"`), Key: key, Caller: "alice",
	}
}

// finish creates the action, claims it and records result as its outcome.
func finish(t *testing.T, s *memstore.Store, a *action.Stored, result string, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	if old, err := s.Create(ctx, a, 100); err != nil || old != nil {
		t.Fatalf("create %s: %v %v", a.ID, old, err)
	}
	c, err := s.Claim(ctx, time.Minute, time.Second)
	if err != nil || c == nil || c.ID != a.ID {
		t.Fatalf("claim %s: %+v %v", a.ID, c, err)
	}
	now := time.Now().UTC()
	c.Status, c.Result, c.FinishedAt, c.Payload = action.Succeeded, json.RawMessage(result), &now, nil
	if made, err := s.Finish(ctx, &c.Stored, ttl); err != nil || !made {
		t.Fatalf("finish %s: %v %v", a.ID, made, err)
	}
	if err := s.Done(ctx, c); err != nil {
		t.Fatalf("done %s: %v", a.ID, err)
	}
}

func found(t *testing.T, s *memstore.Store, id string) bool {
	t.Helper()
	_, ok, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return ok
}

// TestMaxFinished: past the bound of finished records, the oldest is
// forgotten, and its idempotency key with it.
func TestMaxFinished(t *testing.T) {
	s := newStore(t, memstore.Options{MaxFinished: 2})
	for i := range 3 {
		finish(t, s, stored(fmt.Sprint("act_", i), fmt.Sprint("k", i)), `1`, time.Hour)
	}
	if found(t, s, "act_0") || !found(t, s, "act_1") || !found(t, s, "act_2") {
		t.Fatal("want the oldest finished record forgotten and the two newest kept")
	}
	if old, err := s.Create(context.Background(), stored("act_again", "k0"), 100); err != nil || old != nil {
		t.Fatalf("the forgotten record's key still names it: %+v %v", old, err)
	}
	if old, err := s.Create(context.Background(), stored("act_again1", "k1"), 100); err != nil || old == nil || old.ID != "act_1" {
		t.Fatalf("a kept record's key: %+v %v, want act_1", old, err)
	}
}

// TestMaxFinishedBytes: finished records are bounded in bytes by the size
// rule of Size; a large result pushes the oldest out.
func TestMaxFinishedBytes(t *testing.T) {
	small := stored("act_small", "")
	small.Result = json.RawMessage(`1`)
	limit := 3 * memstore.Size(small)
	s := newStore(t, memstore.Options{MaxFinishedBytes: limit})
	finish(t, s, stored("act_a", ""), `1`, time.Hour)
	finish(t, s, stored("act_b", ""), `1`, time.Hour)
	if !found(t, s, "act_a") || !found(t, s, "act_b") {
		t.Fatal("records within the byte bound were forgotten")
	}
	big := `"` + strings.Repeat("x", limit-2*memstore.Size(small)) + `"`
	finish(t, s, stored("act_big", ""), big, time.Hour)
	if found(t, s, "act_a") || !found(t, s, "act_b") || !found(t, s, "act_big") {
		t.Fatal("want only the oldest record forgotten for the large one")
	}
	if s.Kept() != 2 {
		t.Fatalf("%d records kept, want 2", s.Kept())
	}
}

// TestTTL: a finished record and its key are gone once their TTL has
// passed, and the sweep frees them without any other call.
func TestTTL(t *testing.T) {
	const ttl = 20 * time.Millisecond
	s := newStore(t, memstore.Options{TTL: ttl})
	finish(t, s, stored("act_old", "k"), `1`, ttl)
	wait.For(t, 10*time.Second, "the expired record to be freed", func() bool { return s.Kept() == 0 })
	if found(t, s, "act_old") {
		t.Fatal("an expired record was found")
	}
	if old, err := s.Create(context.Background(), stored("act_new", "k"), 100); err != nil || old != nil {
		t.Fatalf("the expired record's key: %+v %v, want it free", old, err)
	}
}

// TestUnfinishedKept: an action that is not finished keeps its record
// however short the TTL and however small the bound of finished records.
func TestUnfinishedKept(t *testing.T) {
	s := newStore(t, memstore.Options{TTL: time.Millisecond, MaxFinished: 1})
	ctx := context.Background()
	if _, err := s.Create(ctx, stored("act_running", ""), 100); err != nil {
		t.Fatal(err)
	}
	c, err := s.Claim(ctx, time.Minute, time.Second)
	if err != nil || c == nil {
		t.Fatalf("claim: %+v %v", c, err)
	}
	c.Status, c.Attempts = action.Running, 1
	if err := s.Save(ctx, &c.Stored); err != nil {
		t.Fatal(err)
	}
	finish(t, s, stored("act_x", ""), `1`, time.Millisecond)
	finish(t, s, stored("act_y", ""), `1`, time.Millisecond)
	wait.For(t, 10*time.Second, "the finished records to be freed", func() bool { return s.Kept() == 1 })
	a, ok, err := s.Get(ctx, "act_running")
	if err != nil || !ok || a.Status != action.Running || a.Attempts != 1 {
		t.Fatalf("the running action: %+v found=%v err=%v", a, ok, err)
	}
}

// TestLeaseLost: once a lease ran out and another worker claimed the
// action, the first worker's claim renews and gives back nothing.
func TestLeaseLost(t *testing.T) {
	s := newStore(t, memstore.Options{})
	ctx := context.Background()
	if _, err := s.Create(ctx, stored("act_l", ""), 100); err != nil {
		t.Fatal(err)
	}
	first, err := s.Claim(ctx, 10*time.Millisecond, time.Second)
	if err != nil || first == nil {
		t.Fatalf("claim: %+v %v", first, err)
	}
	second, err := s.Claim(ctx, time.Minute, 10*time.Second)
	if err != nil || second == nil || second.ID != "act_l" || !second.Redelivered {
		t.Fatalf("claim after the lease ran out: %+v %v", second, err)
	}
	if err := s.Touch(ctx, first); err == nil {
		t.Fatal("the lost lease was renewed")
	}
	if err := s.Release(ctx, first); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Claim(ctx, time.Minute, 20*time.Millisecond); err != nil || c != nil {
		t.Fatalf("the lost claim's Release gave the action out again: %+v %v", c, err)
	}
	if err := s.Touch(ctx, second); err != nil {
		t.Fatalf("the current lease: %v", err)
	}
}

// TestClaimWakes: a waiting Claim returns as soon as an action is
// created, and a cancelled one returns its context's error.
func TestClaimWakes(t *testing.T) {
	s := newStore(t, memstore.Options{})
	got := make(chan *action.Claim, 1)
	go func() {
		c, _ := s.Claim(context.Background(), time.Minute, time.Minute)
		got <- c
	}()
	if _, err := s.Create(context.Background(), stored("act_w", ""), 100); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-got:
		if c == nil || c.ID != "act_w" {
			t.Fatalf("claimed %+v", c)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting Claim did not return")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Claim(ctx, time.Minute, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled claim: %v", err)
	}
}

// TestCopies: what Get returns, and a claim (but its payload, which the
// runner only reads), are not the store's record.
func TestCopies(t *testing.T) {
	s := newStore(t, memstore.Options{})
	ctx := context.Background()
	if _, err := s.Create(ctx, stored("act_c", ""), 100); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(ctx, "act_c")
	if err != nil || !ok {
		t.Fatalf("get: %v %v", ok, err)
	}
	got.Payload[1] = 'X'
	got.Status = action.Failed
	c, err := s.Claim(ctx, time.Minute, time.Second)
	if err != nil || c == nil {
		t.Fatalf("claim: %+v %v", c, err)
	}
	c.Status, c.Attempts = action.Failed, 7
	again, ok, err := s.Get(ctx, "act_c")
	if err != nil || !ok || again.Status != action.Pending || again.Attempts != 0 || string(again.Payload) != `"act_c"` {
		t.Fatalf("after the callers changed their copies: %+v %v %v", again, ok, err)
	}
}

// TestQueueCountsRunning: as in the shared stores, an action counts against
// the queue bound from Create until Done, claimed or not.
func TestQueueCountsRunning(t *testing.T) {
	s := newStore(t, memstore.Options{})
	ctx := context.Background()
	for _, id := range []string{"act_q1", "act_q2"} {
		if _, err := s.Create(ctx, stored(id, ""), 2); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	c, err := s.Claim(ctx, time.Minute, time.Second)
	if err != nil || c == nil {
		t.Fatalf("claim: %+v %v", c, err)
	}
	if _, err := s.Create(ctx, stored("act_q3", ""), 2); !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("create with one running and one waiting: %v, want ErrQueueFull", err)
	}
	now := time.Now().UTC()
	c.Status, c.FinishedAt, c.Payload = action.Succeeded, &now, nil
	if made, err := s.Finish(ctx, &c.Stored, time.Hour); err != nil || !made {
		t.Fatalf("finish: %v %v", made, err)
	}
	if _, err := s.Create(ctx, stored("act_q3", ""), 2); !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("create before Done: %v, want ErrQueueFull", err)
	}
	if err := s.Done(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, stored("act_q3", ""), 2); err != nil {
		t.Fatalf("create after Done: %v", err)
	}
	if a, ok, err := s.Get(ctx, c.ID); err != nil || !ok || !a.Published {
		t.Fatalf("the done action: %+v found=%v err=%v, want it published", a, ok, err)
	}
}

// TestMaxQueuedBytes: the actions queued or running are bounded in bytes
// too, payloads included: past the bound Create is refused however few
// they are, and the room comes back when one is done.
func TestMaxQueuedBytes(t *testing.T) {
	s := newStore(t, memstore.Options{MaxQueuedBytes: 3 << 20})
	ctx := context.Background()
	big := func(id string) *action.Stored {
		a := stored(id, "")
		a.Payload = json.RawMessage(`"` + strings.Repeat("x", 1<<20) + `"`)
		return a
	}
	for _, id := range []string{"act_b1", "act_b2"} {
		if _, err := s.Create(ctx, big(id), 100); err != nil {
			t.Fatalf("create %s: %v", id, err)
		}
	}
	if _, err := s.Create(ctx, big("act_b3"), 100); !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("a third 1 MiB payload under a 3 MiB bound: %v, want ErrQueueFull", err)
	}
	if _, err := s.Create(ctx, stored("act_small", ""), 100); err != nil {
		t.Fatalf("a small action beside them: %v", err)
	}
	c, err := s.Claim(ctx, time.Minute, time.Second)
	if err != nil || c == nil {
		t.Fatalf("claim: %+v %v", c, err)
	}
	now := time.Now().UTC()
	c.Status, c.FinishedAt, c.Payload = action.Succeeded, &now, nil
	if made, err := s.Finish(ctx, &c.Stored, time.Hour); err != nil || !made {
		t.Fatalf("finish: %v %v", made, err)
	}
	if _, err := s.Create(ctx, big("act_b3"), 100); !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("before Done: %v, want ErrQueueFull", err)
	}
	if err := s.Done(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(ctx, big("act_b3"), 100); err != nil {
		t.Fatalf("after Done: %v", err)
	}
}

// TestLargestActionFits: an action larger than the bytes bound on its own
// (the largest body the server takes counts a little more than
// --max-body, which the bound must be at least) is taken into an empty
// queue, and only then.
func TestLargestActionFits(t *testing.T) {
	s := newStore(t, memstore.Options{MaxQueuedBytes: 1 << 20})
	ctx := context.Background()
	big := func(id string) *action.Stored {
		a := stored(id, "")
		a.Payload = json.RawMessage(`"` + strings.Repeat("x", 1<<20-2) + `"`)
		return a
	}
	if _, err := s.Create(ctx, big("act_l1"), 100); err != nil {
		t.Fatalf("a payload of the whole bound into an empty queue: %v", err)
	}
	if _, err := s.Create(ctx, stored("act_l2", ""), 100); !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("beside it: %v, want ErrQueueFull", err)
	}
}
