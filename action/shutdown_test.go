package action_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// shutdownAsync runs Shutdown(ctx with timeout d) in a goroutine the test
// owns; the returned channel yields its error.
func shutdownAsync(s *action.Service, d time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		done <- s.Shutdown(ctx)
	}()
	return done
}

func awaitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitLong):
		t.Fatal("Shutdown did not return")
		return nil
	}
}

func TestShutdownLetsRunningFinish(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Workers: 1, QueueSize: 10})
	sub := subscribe(t, h)
	g := newGate()
	s.Handle("work", g)

	running := submit(t, s, action.Request{Type: "work", Topic: "t.sd"})
	g.awaitStart(t)
	queued := []action.Action{
		submit(t, s, action.Request{Type: "work", Topic: "t.sd"}),
		submit(t, s, action.Request{Type: "work", Topic: "t.sd", IdempotencyKey: "k"}),
	}

	done := shutdownAsync(s, waitLong)
	for _, a := range queued {
		o := sub.await(t, a.ID)
		if o.EventType != action.TypeFailed || o.Error == nil || o.Error.Code != action.CodeShutdown {
			t.Errorf("queued %s: %s %+v, want failed with shutdown", a.ID, o.EventType, o.Error)
		}
		if g := mustGet(t, s, a.ID); g.Status != action.Failed || g.Error.Code != action.CodeShutdown || g.Attempts != 0 {
			t.Errorf("queued %s: Get = %+v", a.ID, g)
		}
	}
	if _, _, err := s.Submit(context.Background(), action.Request{Type: "work", Topic: "t.sd"}); !errors.Is(err, action.ErrShuttingDown) {
		t.Errorf("Submit during shutdown: %v, want ErrShuttingDown", err)
	}
	if _, _, err := s.Submit(context.Background(), action.Request{Type: "work", Topic: "t.sd", IdempotencyKey: "k"}); !errors.Is(err, action.ErrShuttingDown) {
		t.Errorf("idempotent Submit during shutdown: %v, want ErrShuttingDown", err)
	}
	if a := mustGet(t, s, running.ID); a.Status != action.Running {
		t.Errorf("the running action is %s during the grace period", a.Status)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while an action runs", err)
	default:
	}

	close(g.release)
	if o := sub.await(t, running.ID); o.Status != action.Succeeded {
		t.Errorf("running action: %+v", o)
	}
	if err := awaitErr(t, done); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if st := s.Stats(); st.Succeeded != 1 || st.Failed != 2 || st.Queued != 0 || st.Running != 0 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestShutdownCutsAtDeadline(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Workers: 3, BackoffBase: time.Hour, BackoffMax: time.Hour})
	sub := subscribe(t, h)

	started := make(chan string, 3)
	release := make(chan struct{})
	returned := make(chan struct{})
	s.Handle("stubborn", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		started <- "stubborn"
		<-release // ignores its context
		close(returned)
		return json.RawMessage(`"too late"`), nil
	}))
	s.Handle("polite", action.HandlerFunc(func(ctx context.Context, _ *action.Call) (json.RawMessage, error) {
		started <- "polite"
		<-ctx.Done()
		return nil, ctx.Err()
	}))
	s.Handle("retrying", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		started <- "retrying"
		return nil, action.Retryable(errors.New("later")) // then waits an hour
	}))

	ids := []string{
		submit(t, s, action.Request{Type: "stubborn", Topic: "t.cut"}).ID,
		submit(t, s, action.Request{Type: "polite", Topic: "t.cut"}).ID,
		submit(t, s, action.Request{Type: "retrying", Topic: "t.cut"}).ID,
	}
	for range ids {
		select {
		case <-started:
		case <-time.After(waitLong):
			t.Fatal("handlers not started")
		}
	}

	begun := time.Now()
	done := shutdownAsync(s, 100*time.Millisecond)
	for _, id := range ids {
		o := sub.await(t, id)
		if o.EventType != action.TypeFailed || o.Error == nil || o.Error.Code != action.CodeShutdown {
			t.Errorf("%s: %s %+v, want failed with shutdown", id, o.EventType, o.Error)
		}
		if a := mustGet(t, s, id); a.Status != action.Failed || a.Error.Code != action.CodeShutdown {
			t.Errorf("%s: Get = %+v", id, a)
		}
	}
	if d := time.Since(begun); d < 100*time.Millisecond {
		t.Errorf("actions cut after %v, before the deadline", d)
	}
	close(release)
	err := awaitErr(t, done)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	<-returned
	// The stubborn handler's late result changes nothing and is not published.
	sub.quiet(t, 20*time.Millisecond)
	for _, id := range ids {
		if n := len(sub.seen[id]); n != 1 {
			t.Errorf("%s: %d result events", id, n)
		}
	}
	if a := mustGet(t, s, ids[0]); a.Status != action.Failed || a.Result != nil {
		t.Errorf("late result recorded: %+v", a)
	}
	wait.For(t, waitLong, "no action running", func() bool { return s.Stats().Running == 0 })
	if st := s.Stats(); st.Failed != 3 || st.Succeeded != 0 || st.Retried != 0 {
		t.Errorf("Stats = %+v", st)
	}
	if _, _, err := s.Submit(context.Background(), action.Request{Type: "polite", Topic: "t.cut"}); !errors.Is(err, action.ErrShuttingDown) {
		t.Errorf("Submit after Shutdown: %v", err)
	}
}

func TestShutdownIdle(t *testing.T) {
	h := newHub(t, 0)
	s := newService(t, h, action.Options{Echo: true})
	sub := subscribe(t, h)
	a := submit(t, s, action.Request{Type: "echo", Topic: "t.idle"})
	sub.await(t, a.ID)

	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		err := s.Shutdown(ctx)
		cancel()
		if err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}
	if _, _, err := s.Submit(context.Background(), action.Request{Type: "echo", Topic: "t.idle"}); !errors.Is(err, action.ErrShuttingDown) {
		t.Errorf("Submit after Shutdown: %v, want ErrShuttingDown", err)
	}
	if g := mustGet(t, s, a.ID); g.Status != action.Succeeded {
		t.Errorf("records stay readable after Shutdown: %+v", g)
	}
}

func TestNewRequiresHubAndStore(t *testing.T) {
	if _, err := action.New(action.Options{Store: newStore(t, memstore.Options{})}); err == nil {
		t.Fatal("New without a hub succeeded")
	}
	if _, err := action.New(action.Options{Hub: newHub(t, 0)}); err == nil {
		t.Fatal("New without a store succeeded")
	}
}
