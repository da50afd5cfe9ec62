package groupcommit_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/groupcommit"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// item is a test's queued item: id names it, w is its weight, and answer
// is where its taker answers it.
type item struct {
	groupcommit.Ticket
	id     int
	w      groupcommit.Weight
	answer chan error
}

func newItem(id, events, bytes int) *item {
	return &item{id: id, w: groupcommit.Weight{Events: events, Bytes: bytes}, answer: make(chan error, 1)}
}

func ids(items []*item) []int {
	out := make([]int, len(items))
	for i, it := range items {
		out[i] = it.id
	}
	return out
}

// put puts each item, failing t on an error.
func put(t *testing.T, q *groupcommit.Queue[*item], items ...*item) {
	t.Helper()
	for _, it := range items {
		if err := q.Put(context.Background(), it, it.w); err != nil {
			t.Fatalf("put %d: %v", it.id, err)
		}
	}
}

// take takes a group, failing t if the queue was empty.
func take(t *testing.T, q *groupcommit.Queue[*item], group groupcommit.Limit) []int {
	t.Helper()
	g, ok := q.Take(group, nil)
	if !ok {
		t.Fatal("Take found the queue empty")
	}
	return ids(g)
}

// TestTakeGroups: groups come in the order of the items, each up to the
// group's bounds in events and in bytes; an item heavier than the bound
// goes alone; abandoned items are passed over and count for nothing.
func TestTakeGroups(t *testing.T) {
	q := groupcommit.NewQueue[*item](groupcommit.Limit{})
	items := []*item{
		newItem(0, 2, 10), newItem(1, 2, 10), newItem(2, 2, 10), // events: 2 fit in 5
		newItem(3, 1, 100), newItem(4, 1, 1), // bytes: 100 fills 100
		newItem(5, 9, 0),                                                       // heavier than the bound: alone
		newItem(6, 1, 0), newItem(7, 9, 0), newItem(8, 1, 0), newItem(9, 1, 0), // 7 is abandoned
	}
	put(t, q, items...)
	if !items[7].Abandon() {
		t.Fatal("Abandon of a queued item reported false")
	}
	group := groupcommit.Limit{Events: 5, Bytes: 100}
	for i, want := range [][]int{{0, 1}, {2}, {3}, {4}, {5}, {6, 8, 9}} {
		if got := take(t, q, group); !slices.Equal(got, want) {
			t.Errorf("group %d: %v, want %v", i, got, want)
		}
	}
	if g, ok := q.Take(group, nil); ok || len(g) != 0 {
		t.Errorf("Take of an empty queue: %v, %v", g, ok)
	}
	if items[7].Abandon() || items[6].Abandon() {
		t.Error("Abandon of an item no longer queued reported true")
	}
	if n := q.Len(); n != 0 {
		t.Errorf("Len %d after taking all", n)
	}
}

// TestTakeAbandonedOnly: a Take that passes only abandoned items returns
// an empty group, not an empty queue.
func TestTakeAbandonedOnly(t *testing.T) {
	q := groupcommit.NewQueue[*item](groupcommit.Limit{})
	a, b := newItem(0, 1, 0), newItem(1, 1, 0)
	put(t, q, a, b)
	a.Abandon()
	b.Abandon()
	if g, ok := q.Take(groupcommit.Limit{Events: 1}, nil); !ok || len(g) != 0 {
		t.Errorf("Take of abandoned items: %v, %v; want an empty group", ids(g), ok)
	}
	if q.Len() != 0 {
		t.Errorf("Len %d: Take must pass over every abandoned item", q.Len())
	}
}

// TestPutWaitsForRoom: past the queue's bound in events or bytes a Put
// waits until a Take makes room, or fails with its context's error, not
// queued; abandoned items hold their room until the taker passes them;
// with the queue empty, an item heavier than the bound goes in.
func TestPutWaitsForRoom(t *testing.T) {
	for _, c := range []struct {
		name string
		w    groupcommit.Weight
	}{{"events", groupcommit.Weight{Events: 2}}, {"bytes", groupcommit.Weight{Events: 1, Bytes: 60}}} {
		t.Run(c.name, func(t *testing.T) {
			q := groupcommit.NewQueue[*item](groupcommit.Limit{Events: 3, Bytes: 100})
			heavy := newItem(0, 10, 1000)
			put(t, q, heavy) // alone: it goes in
			full, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			if err := q.Put(full, newItem(1, c.w.Events, c.w.Bytes), c.w); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Put past the bound: %v, want %v", err, context.DeadlineExceeded)
			}
			if got := take(t, q, groupcommit.Limit{}); !slices.Equal(got, []int{0}) {
				t.Fatalf("took %v, want [0] (a Put that failed must not be queued)", got)
			}

			a := newItem(2, c.w.Events, c.w.Bytes)
			put(t, q, a)
			a.Abandon() // still holds its room
			b := newItem(3, c.w.Events, c.w.Bytes)
			done := make(chan error, 1)
			go func() { done <- q.Put(context.Background(), b, b.w) }()
			short, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel2()
			if err := q.Put(short, newItem(4, c.w.Events, c.w.Bytes), c.w); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Put behind an abandoned item: %v, want %v", err, context.DeadlineExceeded)
			}
			if g, ok := q.Take(groupcommit.Limit{}, nil); !ok || len(g) != 0 {
				t.Fatalf("Take: %v, %v; want only the abandoned item passed", ids(g), ok)
			}
			if err := <-done; err != nil {
				t.Fatalf("Put once there was room: %v", err)
			}
			if got := take(t, q, groupcommit.Limit{}); !slices.Equal(got, []int{3}) {
				t.Errorf("took %v, want [3]", got)
			}
		})
	}
}

// TestClose: Close returns what is queued, in order and without the
// abandoned items, for its caller to fail; Put fails with Close's error
// from then on, the Puts waiting for room included; a second Close
// returns nothing.
func TestClose(t *testing.T) {
	errShut := errors.New("shut")
	q := groupcommit.NewQueue[*item](groupcommit.Limit{Events: 3})
	items := []*item{newItem(0, 1, 0), newItem(1, 1, 0), newItem(2, 1, 0)}
	put(t, q, items...)
	items[1].Abandon()
	done := make(chan error, 1)
	go func() { done <- q.Put(context.Background(), newItem(3, 1, 0), groupcommit.Weight{Events: 1}) }()
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := q.Put(short, newItem(4, 1, 0), groupcommit.Weight{Events: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Put to a full queue: %v", err)
	}
	left := q.Close(errShut)
	if got := ids(left); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("Close returned %v, want [0 2]", got)
	}
	if items[0].Abandon() || items[2].Abandon() {
		t.Error("Abandon of an item Close returned reported true: its caller would not wait for the answer")
	}
	if err := <-done; !errors.Is(err, errShut) {
		t.Errorf("Put waiting for room at Close: %v, want %v", err, errShut)
	}
	if err := q.Put(context.Background(), newItem(5, 1, 0), groupcommit.Weight{Events: 1}); !errors.Is(err, errShut) {
		t.Errorf("Put after Close: %v, want %v", err, errShut)
	}
	if left := q.Close(errShut); len(left) != 0 {
		t.Errorf("second Close returned %v", ids(left))
	}
	if g, ok := q.Take(groupcommit.Limit{}, nil); ok || len(g) != 0 {
		t.Errorf("Take after Close: %v, %v", ids(g), ok)
	}
}

// TestBound: Admit waits while what is held does not leave room (unless
// nothing is held), until a Release or its context's end, and fails with
// Close's error once closed.
func TestBound(t *testing.T) {
	errShut := errors.New("shut")
	b := groupcommit.NewBound(groupcommit.Limit{Events: 10, Bytes: 100})
	ctx := context.Background()
	heavy := groupcommit.Weight{Events: 50, Bytes: 5000}
	if err := b.Admit(ctx, heavy); err != nil {
		t.Fatalf("Admit of a heavy weight alone: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	one := groupcommit.Weight{Events: 1, Bytes: 1}
	if err := b.Admit(short, one); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Admit past the bound: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Admit(ctx, groupcommit.Weight{Events: 6, Bytes: 50}) }()
	b.Release(heavy)
	if err := <-done; err != nil {
		t.Fatalf("Admit after Release: %v", err)
	}
	if err := b.Admit(ctx, groupcommit.Weight{Events: 4, Bytes: 50}); err != nil {
		t.Fatalf("Admit up to the bound: %v", err)
	}
	go func() { done <- b.Admit(ctx, one) }()
	short2, cancel2 := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel2()
	if err := b.Admit(short2, one); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Admit past the bound: %v", err)
	}
	b.Close(errShut)
	if err := <-done; !errors.Is(err, errShut) {
		t.Errorf("Admit waiting at Close: %v, want %v", err, errShut)
	}
	if err := b.Admit(ctx, one); !errors.Is(err, errShut) {
		t.Errorf("Admit after Close: %v, want %v", err, errShut)
	}
	b.Release(one) // after Close: nothing to do, and no panic
}

// TestServe: many callers put items, some giving up on them, while Serve
// commits groups; every item is answered once or abandoned, never both,
// each caller's items are committed in its order, groups keep their
// bounds, and Serve ends with its context, leaving what is queued to
// Close.
func TestServe(t *testing.T) {
	const callers, per = 8, 200
	group := groupcommit.Limit{Events: 7, Bytes: 300}
	q := groupcommit.NewQueue[*item](groupcommit.Limit{Events: 20, Bytes: 1000})
	ctx, cancel := context.WithCancel(context.Background())
	var (
		mu        sync.Mutex
		committed = map[int]int{} // id → times
		last      = map[int]int{} // caller → last index committed
		bad       []string
	)
	served := make(chan struct{})
	go func() {
		defer close(served)
		q.Serve(ctx, group, func(g []*item) {
			var sum groupcommit.Weight
			for _, it := range g {
				sum.Events += it.w.Events
				sum.Bytes += it.w.Bytes
			}
			mu.Lock()
			if len(g) > 1 && (sum.Events > group.Events || sum.Bytes > group.Bytes) {
				bad = append(bad, "a group past its bound")
			}
			for _, it := range g {
				committed[it.id]++
				c, i := it.id/per, it.id%per
				if prev, ok := last[c]; ok && i <= prev {
					bad = append(bad, "a caller's items out of order")
				}
				last[c] = i
			}
			mu.Unlock()
			for _, it := range g {
				it.answer <- nil
			}
		})
	}()
	var wg sync.WaitGroup
	abandoned := make([][]int, callers)
	for c := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 1))
			for i := range per {
				it := newItem(c*per+i, 1+r.IntN(3), r.IntN(150))
				if err := q.Put(context.Background(), it, it.w); err != nil {
					t.Error(err)
					return
				}
				if r.IntN(4) == 0 && it.Abandon() {
					abandoned[c] = append(abandoned[c], it.id)
					continue
				}
				if err := <-it.answer; err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	<-served
	if left := q.Close(errors.New("closed")); len(left) != 0 {
		t.Errorf("Close after every item was answered returned %v", ids(left))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, b := range bad {
		t.Error(b)
	}
	n := 0
	for _, ids := range abandoned {
		for _, id := range ids {
			if committed[id] != 0 {
				t.Errorf("abandoned item %d was committed", id)
			}
			n++
		}
	}
	for id, times := range committed {
		if times != 1 {
			t.Errorf("item %d committed %d times", id, times)
		}
	}
	if len(committed)+n != callers*per {
		t.Errorf("%d committed and %d abandoned of %d", len(committed), n, callers*per)
	}
}

// TestServeIdle: a Serve that waits on an empty queue is woken by the
// next Put, however long it waited, and one started after items were put
// takes them.
func TestServeIdle(t *testing.T) {
	q := groupcommit.NewQueue[*item](groupcommit.Limit{})
	early := newItem(0, 1, 0)
	put(t, q, early)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		q.Serve(ctx, groupcommit.Limit{}, func(g []*item) {
			for _, it := range g {
				it.answer <- nil
			}
		})
	}()
	<-early.answer
	for i := 1; i <= 3; i++ {
		wait.For(t, 5*time.Second, "the queue to be empty", func() bool { return q.Len() == 0 })
		it := newItem(i, 1, 0)
		put(t, q, it)
		<-it.answer
	}
	cancel()
	<-served
}
