package sharedcall

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Callers at the same time share one call, and each leaves when its own
// context ends while the call goes on for the others, bounded by its own
// timeout.
func TestDo(t *testing.T) {
	var g Group[int]
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (int, error) {
		calls.Add(1)
		select {
		case <-release:
			return 7, nil
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	var wg sync.WaitGroup
	results := make([]int, 4)
	for i := range results {
		wg.Go(func() {
			v, err := g.Do(context.Background(), context.Background(), "k", time.Minute, fn)
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
			}
			results[i] = v
		})
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := g.Do(short, context.Background(), "k", time.Minute, fn); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a caller whose context ends: %v, want its deadline", err)
	}
	// The call cannot end before release, so every caller that has asked
	// by then has joined it.
	wait.For(t, 10*time.Second, "the callers", func() bool { return g.joined.Load() == 5 })
	close(release)
	wg.Wait()
	for i, v := range results {
		if v != 7 {
			t.Errorf("caller %d got %d, want 7", i, v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d calls for 5 callers at once, want 1", n)
	}
	// The call's own bound ends it when nobody waits.
	_, err := g.Do(context.Background(), context.Background(), "slow", 20*time.Millisecond, func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("a call past its timeout: %v, want its deadline", err)
	}
	done, stop := context.WithCancel(context.Background())
	stop()
	if _, err := g.Do(done, context.Background(), "k", time.Minute, fn); !errors.Is(err, context.Canceled) {
		t.Errorf("a caller whose context has ended: %v, want context.Canceled", err)
	}
}
