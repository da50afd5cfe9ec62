package groupcommit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/internal/groupcommit"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder runs groups of ints: it records each group and answers every
// operation with its double. The first group waits for gate.
type recorder struct {
	gate   chan struct{}
	mu     sync.Mutex
	groups [][]int
}

type op struct {
	in, out int
}

func (r *recorder) run(group []*op) {
	r.mu.Lock()
	first := len(r.groups) == 0
	var g []int
	for _, o := range group {
		g = append(g, o.in)
		o.out = 2 * o.in
	}
	r.groups = append(r.groups, g)
	r.mu.Unlock()
	if first {
		<-r.gate
	}
}

func (r *recorder) ran() [][]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.groups)
}

// start has Do(op in) called on a goroutine of its own, and returns its
// outcome and the op.
func start(c *groupcommit.Committer[*op], ctx context.Context, in int) (<-chan error, *op) {
	o := &op{in: in}
	done := make(chan error, 1)
	go func() { done <- c.Do(ctx, o) }()
	return done, o
}

// TestGroups: the calls that queue while a group runs go together in the
// next one, in their order, up to the group's bound, and each gets its
// own answer.
func TestGroups(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	c := groupcommit.New(3, 10, r.run)
	first, _ := start(c, context.Background(), 0)
	wait.For(t, 5*time.Second, "the first group to run", func() bool { return len(r.ran()) == 1 })
	var outs []<-chan error
	var ops []*op
	for i := 1; i <= 5; i++ {
		done, o := start(c, context.Background(), i)
		wait.For(t, 5*time.Second, "the call to queue", func() bool { return c.Queued() == i })
		outs, ops = append(outs, done), append(ops, o)
	}
	close(r.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for i, done := range outs {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if ops[i].out != 2*ops[i].in {
			t.Errorf("op %d answered %d, want %d", ops[i].in, ops[i].out, 2*ops[i].in)
		}
	}
	want := [][]int{{0}, {1, 2, 3}, {4, 5}}
	if got := r.ran(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("groups %v, want %v", got, want)
	}
}

// TestAbandoned: a call whose context ends before its group is taken is
// never run, and says so; one whose queue is full waits for room until its
// context ends.
func TestAbandoned(t *testing.T) {
	r := &recorder{gate: make(chan struct{})}
	c := groupcommit.New(10, 1, r.run)
	first, _ := start(c, context.Background(), 0)
	wait.For(t, 5*time.Second, "the first group to run", func() bool { return len(r.ran()) == 1 })
	ctx, cancel := context.WithCancel(context.Background())
	gone, _ := start(c, ctx, 1)
	wait.For(t, 5*time.Second, "the call to queue", func() bool { return c.Queued() == 1 })

	full, fullCancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer fullCancel()
	if err := c.Do(full, &op{in: 2}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Do on a full queue: %v, want %v", err, context.DeadlineExceeded)
	}

	cancel()
	if err := <-gone; !errors.Is(err, groupcommit.ErrAbandoned) || !errors.Is(err, context.Canceled) {
		t.Errorf("abandoned Do: %v, want %v and %v", err, groupcommit.ErrAbandoned, context.Canceled)
	}
	close(r.gate)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	last, o := start(c, context.Background(), 3)
	if err := <-last; err != nil || o.out != 6 {
		t.Fatalf("Do after: %v, answer %d", err, o.out)
	}
	want := [][]int{{0}, {3}}
	if got := r.ran(); !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("groups %v, want %v (the abandoned call must not run)", got, want)
	}
}
