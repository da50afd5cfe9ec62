// Package storetest is the conformance suite for action.Store
// implementations, run through action.Service as a cluster of nodes uses
// them: every accepted action reaches one final status that every node
// reads, idempotency keys hold across nodes, an action whose node stops
// working on it moves to another node, and the queue is bounded. Shutdown
// is checked by the store's kind (Store.Local): a shared store's actions
// are handed over to another node, a local store's are failed.
//
// Waits poll with a deadline; nothing asserts that something has not
// happened yet by a given moment.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/hubwatch"
)

const waitTimeout = 20 * time.Second

// Run runs the suite. newStores must return n stores on one new, empty
// set of actions (one per node), and may register cleanup with t.Cleanup.
func Run(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	t.Run("EveryActionOnceAcrossNodes", func(t *testing.T) { testEveryAction(t, newStores) })
	t.Run("IdempotencyAcrossNodes", func(t *testing.T) { testIdempotency(t, newStores) })
	t.Run("LeaseRunsOut", func(t *testing.T) { testLeaseRunsOut(t, newStores) })
	t.Run("OutcomeOnce", func(t *testing.T) { testOutcomeOnce(t, newStores) })
	t.Run("Shutdown", func(t *testing.T) { testShutdown(t, newStores) })
	t.Run("QueueFull", func(t *testing.T) { testQueueFull(t, newStores) })
}

// node is one Herald node's action service with a hub of its own.
type node struct {
	svc *action.Service
	hub *hub.Hub
}

func start(t *testing.T, st action.Store, workers int, lease time.Duration, handlers map[string]action.Handler) *node {
	t.Helper()
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := action.New(action.Options{
		Hub: h, Store: st, Workers: workers, Lease: lease, Echo: true,
		BackoffBase: time.Millisecond, QueueSize: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	for typ, hd := range handlers {
		svc.Handle(typ, hd)
	}
	n := &node{svc: svc, hub: h}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
		_ = h.Close(ctx)
	})
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, n *node, id string) (action.Action, bool) {
	t.Helper()
	a, ok, err := n.svc.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("failed to get %s: %v", id, err)
	}
	return a, ok
}

// testEveryAction: actions submitted on both nodes all end succeeded, each
// run once, and either node reports each one's outcome.
func testEveryAction(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 2)
	var runs sync.Map // action ID -> *atomic.Int32
	count := action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		v, _ := runs.LoadOrStore(c.ID, new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
		return c.Payload, nil
	})
	nodes := []*node{
		start(t, st[0], 4, 10*time.Second, map[string]action.Handler{"count": count}),
		start(t, st[1], 4, 10*time.Second, map[string]action.Handler{"count": count}),
	}
	const total = 60
	ids := make([]string, total)
	for i := range total {
		a, created, err := nodes[i%2].svc.Submit(context.Background(), action.Request{
			Type: "count", Topic: "results", Payload: json.RawMessage(fmt.Sprint(i)),
		})
		if err != nil || !created || a.Status != action.Pending {
			t.Fatalf("submit %d: %+v created=%v err=%v", i, a, created, err)
		}
		ids[i] = a.ID
	}
	for i, id := range ids {
		other := nodes[(i+1)%2]
		waitFor(t, "action "+id+" to succeed", func() bool {
			a, ok := get(t, other, id)
			return ok && a.Status == action.Succeeded
		})
		a, _ := get(t, other, id)
		if string(a.Result) != fmt.Sprint(i) || a.FinishedAt == nil || a.Attempts != 1 {
			t.Fatalf("action %d: %+v, want result %d after one attempt", i, a, i)
		}
	}
	runs.Range(func(k, v any) bool {
		if n := v.(*atomic.Int32).Load(); n != 1 {
			t.Errorf("action %s ran %d times", k, n)
		}
		return true
	})
	if _, ok := get(t, nodes[0], "act_nosuchaction"); ok {
		t.Fatal("an unknown ID was found")
	}
}

// testIdempotency: a key used on one node names the same action on the
// other; another body under it is refused; keys are per caller.
func testIdempotency(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 2)
	a := start(t, st[0], 2, 10*time.Second, nil)
	b := start(t, st[1], 2, 10*time.Second, nil)
	ctx := context.Background()
	req := action.Request{Type: "echo", Topic: "t", Payload: json.RawMessage(`{"x":1,"y":2}`), IdempotencyKey: "k1", Caller: "alice"}
	first, created, err := a.svc.Submit(ctx, req)
	if err != nil || !created {
		t.Fatalf("first submit: %v %v", created, err)
	}
	same := req
	same.Payload = json.RawMessage(`{ "y":2, "x":1 }`) // the same body, written differently
	again, created, err := b.svc.Submit(ctx, same)
	if err != nil || created || again.ID != first.ID {
		t.Fatalf("repeat on the other node: %+v created=%v err=%v, want %s", again, created, err, first.ID)
	}
	other := req
	other.Payload = json.RawMessage(`{"x":2}`)
	if _, _, err := b.svc.Submit(ctx, other); !errors.Is(err, action.ErrIdempotencyMismatch) {
		t.Fatalf("another body under the key: %v, want ErrIdempotencyMismatch", err)
	}
	bob := req
	bob.Caller = "bob"
	if x, created, err := b.svc.Submit(ctx, bob); err != nil || !created || x.ID == first.ID {
		t.Fatalf("the same key for another caller: %+v created=%v err=%v", x, created, err)
	}
	waitFor(t, "the action to succeed", func() bool {
		x, ok := get(t, b, first.ID)
		return ok && x.Status == action.Succeeded
	})
	// Still the same action once it is done.
	if x, created, err := a.svc.Submit(ctx, req); err != nil || created || x.ID != first.ID || x.Status != action.Succeeded {
		t.Fatalf("repeat after the end: %+v created=%v err=%v", x, created, err)
	}
}

// testLeaseRunsOut: a worker claims an action and then does nothing (its
// node died); once the lease runs out another node runs it.
func testLeaseRunsOut(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 2)
	const lease = 500 * time.Millisecond
	ctx := context.Background()
	a := &action.Stored{Action: action.Action{ID: "act_deadnode" + fmt.Sprint(time.Now().UnixNano()), Type: "echo", Topic: "t",
		Status: action.Pending, CreatedAt: time.Now().UTC()}, Payload: json.RawMessage(`"hi"`)}
	if old, err := st[0].Create(ctx, a, 100); err != nil || old != nil {
		t.Fatalf("create: %v %v", old, err)
	}
	dead, err := st[0].Claim(ctx, lease, time.Second)
	if err != nil || dead == nil || dead.ID != a.ID || dead.Redelivered {
		t.Fatalf("claim: %+v %v", dead, err)
	}
	b := start(t, st[1], 1, lease, nil)
	waitFor(t, "another node to run the action", func() bool {
		x, ok := get(t, b, a.ID)
		return ok && x.Status == action.Succeeded
	})
	if x, _ := get(t, b, a.ID); string(x.Result) != `"hi"` {
		t.Fatalf("result %s", x.Result)
	}
}

// testOutcomeOnce: a worker whose lease ran out while it ran comes back
// after another node finished the action: its outcome and its status
// changes are dropped.
func testOutcomeOnce(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 2)
	const lease = 300 * time.Millisecond
	ctx := context.Background()
	a := &action.Stored{Action: action.Action{ID: "act_late" + fmt.Sprint(time.Now().UnixNano()), Type: "echo", Topic: "t",
		Status: action.Pending, CreatedAt: time.Now().UTC()}, Payload: json.RawMessage(`"first"`)}
	if old, err := st[0].Create(ctx, a, 100); err != nil || old != nil {
		t.Fatalf("create: %v %v", old, err)
	}
	late, err := st[0].Claim(ctx, lease, time.Second)
	if err != nil || late == nil || late.ID != a.ID {
		t.Fatalf("claim: %+v %v", late, err)
	}
	b := start(t, st[1], 1, lease, nil)
	waitFor(t, "another node to run the action", func() bool {
		x, ok := get(t, b, a.ID)
		return ok && x.Status == action.Succeeded
	})
	late.Status, late.Attempts = action.Running, 1
	if err := st[0].Save(ctx, &late.Stored); err != nil {
		t.Fatalf("save: %v", err)
	}
	now := time.Now().UTC()
	late.Status, late.Error, late.FinishedAt, late.Payload = action.Failed, &action.Failure{Code: "late"}, &now, nil
	if made, err := st[0].Finish(ctx, &late.Stored, time.Hour); err != nil || made {
		t.Fatalf("the late Finish: made=%v err=%v, want false", made, err)
	}
	if x, _ := get(t, b, a.ID); x.Status != action.Succeeded || string(x.Result) != `"first"` || x.Error != nil {
		t.Fatalf("after the late worker: %+v, want the first outcome", x)
	}
}

// testShutdown checks the store's kind of shutdown.
func testShutdown(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 2)
	if st[0].Local() {
		testShutdownFails(t, st)
	} else {
		testShutdownHandsOver(t, st)
	}
}

// startStuck starts a node with one worker, whose "slow" handler runs
// until its context ends, and returns it once a slow action has started.
func startStuck(t *testing.T, st action.Store, lease time.Duration) (*node, action.Action) {
	t.Helper()
	started := make(chan struct{}, 1)
	stuck := action.HandlerFunc(func(ctx context.Context, _ *action.Call) (json.RawMessage, error) {
		started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	})
	n := start(t, st, 1, lease, map[string]action.Handler{"slow": stuck})
	x, _, err := n.svc.Submit(context.Background(), action.Request{Type: "slow", Topic: "t", Payload: json.RawMessage(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(waitTimeout):
		t.Fatal("the action did not start")
	}
	return n, x
}

// testShutdownHandsOver: a node that shuts down while its handler runs
// gives the action back, and another node runs it.
func testShutdownHandsOver(t *testing.T, st []action.Store) {
	const lease = 400 * time.Millisecond
	a, x := startStuck(t, st[0], lease)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.svc.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown with a stuck handler reported no error")
	}
	quick := action.HandlerFunc(func(_ context.Context, c *action.Call) (json.RawMessage, error) {
		return json.RawMessage(`"done"`), nil
	})
	b := start(t, st[1], 1, lease, map[string]action.Handler{"slow": quick})
	waitFor(t, "the other node to finish the action", func() bool {
		y, ok := get(t, b, x.ID)
		return ok && y.Status == action.Succeeded
	})
	if y, _ := get(t, b, x.ID); string(y.Result) != `"done"` || y.Attempts != 2 {
		t.Fatalf("after the hand-over: %+v, want done at attempt 2", y)
	}
}

// testShutdownFails: on a local store nothing else could run what a node
// leaves, so Shutdown fails it with the code shutdown and publishes its
// action.failed event: the queued action at once, without an attempt, and
// the running one when the deadline cuts its handler.
func testShutdownFails(t *testing.T, st []action.Store) {
	a, running := startStuck(t, st[0], 10*time.Second)
	results := watch(t, a.hub, "t")
	queued, _, err := a.svc.Submit(context.Background(), action.Request{Type: "slow", Topic: "t", Payload: json.RawMessage(`2`)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := a.svc.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a running handler: %v, want an error wrapping the deadline", err)
	}
	for id, attempts := range map[string]int{running.ID: 1, queued.ID: 0} {
		x, ok, err := st[0].Get(context.Background(), id)
		if err != nil || !ok || x.Status != action.Failed || x.Error == nil || x.Error.Code != action.CodeShutdown ||
			x.Attempts != attempts || !x.Published {
			t.Errorf("after Shutdown: %+v (found=%v, err=%v), want failed with shutdown after %d attempts, published", x, ok, err, attempts)
		}
		if typ := results.await(t, id); typ != action.TypeFailed {
			t.Errorf("%s: event %s, want %s", id, typ, action.TypeFailed)
		}
	}
}

// events watches a topic of a hub as a transport does (hubwatch).
type events struct {
	w    *hubwatch.Watcher
	seen map[string]string // action ID -> the type of its result event
}

func watch(t *testing.T, h *hub.Hub, topic string) *events {
	t.Helper()
	return &events{w: hubwatch.Watch(t, h, topic), seen: make(map[string]string)}
}

// await returns the type of the result event of action id.
func (e *events) await(t *testing.T, id string) string {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for e.seen[id] == "" {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no result event for %s", id)
		}
		for _, m := range e.w.Next(t, left) {
			var d struct {
				ActionID string `json:"action_id"`
			}
			if err := json.Unmarshal(m.Data, &d); err != nil {
				t.Fatalf("event data %s: %v", m.Data, err)
			}
			e.seen[d.ActionID] = m.Type
		}
	}
	return e.seen[id]
}

// testQueueFull: past the bound of queued actions, Create is refused;
// once the queued actions are done, there is room again.
func testQueueFull(t *testing.T, newStores func(t *testing.T, n int) []action.Store) {
	st := newStores(t, 1)
	ctx := context.Background()
	create := func(i int) (string, error) {
		a := &action.Stored{Action: action.Action{ID: fmt.Sprintf("act_full%d_%d", time.Now().UnixNano(), i), Type: "echo", Topic: "t",
			Status: action.Pending, CreatedAt: time.Now().UTC()}, Payload: json.RawMessage(`1`)}
		_, err := st[0].Create(ctx, a, 2)
		return a.ID, err
	}
	var ids []string
	for i := range 2 {
		id, err := create(i)
		if err != nil {
			t.Fatalf("create %d: %v", i, err)
		}
		ids = append(ids, id)
	}
	refused, err := create(2)
	if !errors.Is(err, action.ErrQueueFull) {
		t.Fatalf("create past the bound: %v, want ErrQueueFull", err)
	}
	if _, ok, err := st[0].Get(ctx, refused); err != nil || ok {
		t.Fatalf("the refused action is kept: found=%v err=%v", ok, err)
	}
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	svc, err := action.New(action.Options{Hub: h, Store: st[0], Workers: 2, Echo: true})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(ctx)
	for _, id := range ids {
		waitFor(t, "queued action "+id+" to succeed", func() bool {
			a, ok, err := st[0].Get(ctx, id)
			return err == nil && ok && a.Status == action.Succeeded && a.Published
		})
	}
	// Done may come just after Published: poll for the room.
	waitFor(t, "room in the queue once its actions are done", func() bool {
		_, err := create(3)
		return err == nil
	})
}
