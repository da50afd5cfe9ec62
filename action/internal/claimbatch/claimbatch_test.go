package claimbatch_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/internal/claimbatch"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// queue is a store's queue in memory: fetch hands out numbered claims, and
// each fetch may wait for gate.
type queue struct {
	gate     chan struct{} // nil: no wait
	mu       sync.Mutex
	next     int
	fetches  []int // n of each fetch
	released []string
}

func (q *queue) fetch(_ context.Context, _ time.Duration, n int, _ time.Duration) ([]*action.Claim, error) {
	if q.gate != nil {
		<-q.gate
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.fetches = append(q.fetches, n)
	var out []*action.Claim
	for range n {
		q.next++
		out = append(out, &action.Claim{Stored: action.Stored{Action: action.Action{ID: fmt.Sprint(q.next)}}})
	}
	return out, nil
}

func (q *queue) release(_ context.Context, c *action.Claim) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.released = append(q.released, c.ID)
	return nil
}

func (q *queue) state() (fetches []int, released []string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return slices.Clone(q.fetches), slices.Clone(q.released)
}

// TestShared: callers waiting at once share one fetch of one claim each.
func TestShared(t *testing.T) {
	q := &queue{}
	b := claimbatch.New(q.fetch, q.release)
	unhold := b.Hold()
	got := make(chan string, 4)
	for range 4 {
		go func() {
			c, err := b.Claim(context.Background(), time.Minute, 10*time.Second)
			if err != nil || c == nil {
				got <- fmt.Sprint("no claim: ", err)
				return
			}
			got <- c.ID
		}()
	}
	wait.For(t, 5*time.Second, "4 callers in Claim", func() bool { return b.Waiting() == 4 })
	unhold()
	var ids []string
	for range 4 {
		ids = append(ids, <-got)
	}
	slices.Sort(ids)
	if want := []string{"1", "2", "3", "4"}; !slices.Equal(ids, want) {
		t.Errorf("claims %v, want %v", ids, want)
	}
	if f, r := q.state(); !slices.Equal(f, []int{4}) || len(r) != 0 {
		t.Errorf("fetches %v (want one of 4), released %v (want none)", f, r)
	}
}

// TestGivesBack: what a fetch took for callers that are gone when it ends
// (the node stops claiming) is given back at once, not left to its lease.
func TestGivesBack(t *testing.T) {
	q := &queue{gate: make(chan struct{})}
	b := claimbatch.New(q.fetch, q.release)
	ctx, cancel := context.WithCancel(context.Background())
	unhold := b.Hold()
	got := make(chan *action.Claim, 3)
	for range 3 {
		go func() {
			c, _ := b.Claim(ctx, time.Minute, 10*time.Second)
			got <- c
		}()
	}
	wait.For(t, 5*time.Second, "3 callers in Claim", func() bool { return b.Waiting() == 3 })
	unhold()
	cancel()
	close(q.gate)
	n := 0
	for range 3 {
		if c := <-got; c != nil {
			n++
		}
	}
	f, r := q.state()
	if len(f) != 1 || n+len(r) != f[0] {
		t.Errorf("fetches %v, claims returned %d, released %v: every fetched claim must be returned or given back", f, n, r)
	}
	if n != 1 {
		t.Errorf("%d callers got a claim after the stop, want 1 (the one that fetched)", n)
	}
}
