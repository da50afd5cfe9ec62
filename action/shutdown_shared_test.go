package action_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/redisstore"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// shutdownBound is what these tests allow Shutdown beyond its context: its
// grace for the handlers and then for the Store calls, with room to spare.
const shutdownBound = 3 * time.Second

// logBuffer keeps what a service logs, for tests that check what Shutdown
// says, and passes it on to the test's output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{t}, b), nil))
}

// relayedRedis returns a Redis client that reaches Redis through a relay
// the test can mute, configured as the server configures its own (a
// request's deadline bounds its reads), a direct client, and a key prefix
// of the test's own.
func relayedRedis(t *testing.T) (via, direct *redis.Client, r *relay.Relay, prefix string) {
	t.Helper()
	direct, prefix = redistest.Client(t)
	via, r = redistest.Relayed(t)
	return via, direct, r, prefix
}

func newRedisStore(t *testing.T, rdb *redis.Client, prefix string) action.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := redisstore.New(ctx, rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// shutdownWithin calls Shutdown with a context of d and fails the test if
// it takes longer than d + shutdownBound.
func shutdownWithin(t *testing.T, s *action.Service, d time.Duration) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	begun := time.Now()
	err := s.Shutdown(ctx)
	if took := time.Since(begun); took > d+shutdownBound {
		t.Errorf("Shutdown took %v with a context of %v", took, d)
	}
	return err
}

// TestShutdownMuteStoreGiveBack: a node whose Redis stops answering while
// a handler runs. Shutdown cuts the handler, which returns at once; the
// worker's give-back of the action cannot be answered, and is bounded, so
// Shutdown returns within its bound with the worker gone, and blames no
// handler.
func TestShutdownMuteStoreGiveBack(t *testing.T) {
	via, _, r, prefix := relayedRedis(t)
	logs := &logBuffer{}
	s := newService(t, newHub(t, 0), action.Options{
		Store: newRedisStore(t, via, prefix), Workers: 1, Logger: logs.logger(t),
	})
	g := newGate() // returns when its context ends
	s.Handle("work", g)
	submit(t, s, action.Request{Type: "work", Topic: "t.mute"})
	g.awaitStart(t)

	r.Mute()
	t.Cleanup(r.Unmute)
	err := shutdownWithin(t, s, 200*time.Millisecond)
	if n := s.LiveWorkers(); n != 0 {
		t.Errorf("Shutdown returned with %d workers still running", n)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Shutdown: %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if err != nil && strings.Contains(err.Error(), "handler") {
		t.Errorf("Shutdown blames a handler, which returned when cancelled: %v", err)
	}
	log := logs.String()
	if strings.Contains(log, "ignored cancellation") {
		t.Errorf("the log blames handlers, which returned when cancelled:\n%s", log)
	}
	if !strings.Contains(log, "failed to give an action back") {
		t.Errorf("the log does not say the give-back failed:\n%s", log)
	}
}

// TestShutdownMuteStoreCall: a node whose Redis stops answering as a
// handler returns, so that its worker waits for the record of the outcome.
// Shutdown returns within its bound and says that a Store call holds the
// worker, not a handler; closing the store's client, as the server does
// next, ends the worker; the outcome reached Redis, and another node,
// given the action, only publishes it.
func TestShutdownMuteStoreCall(t *testing.T) {
	via, direct, r, prefix := relayedRedis(t)
	logs := &logBuffer{}
	s := newService(t, newHub(t, 0), action.Options{
		Store: newRedisStore(t, via, prefix), Workers: 1, Logger: logs.logger(t),
	})
	started, proceed := make(chan struct{}), make(chan struct{})
	s.Handle("work", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		close(started)
		<-proceed
		return json.RawMessage(`"done"`), nil
	}))
	a := submit(t, s, action.Request{Type: "work", Topic: "t.mute"})
	select {
	case <-started:
	case <-time.After(waitLong):
		t.Fatal("the handler did not start")
	}

	r.Mute()
	t.Cleanup(r.Unmute)
	close(proceed)
	// The handler has returned: the worker is recording the outcome.
	wait.For(t, waitLong, "the handler to return", func() bool { return s.Stats().Running == 0 })
	err := shutdownWithin(t, s, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "1 in action store calls") {
		t.Errorf("Shutdown: %v, want it to say that one worker waits on the store", err)
	}
	if err != nil && strings.Contains(err.Error(), "handler") {
		t.Errorf("Shutdown blames a handler, which has returned: %v", err)
	}
	log := logs.String()
	if strings.Contains(log, "ignored cancellation") {
		t.Errorf("the log blames handlers, which have returned:\n%s", log)
	}
	if !strings.Contains(log, "action store calls did not end") {
		t.Errorf("the log does not say that a store call holds the worker:\n%s", log)
	}

	// Closing the client ends the call at once, well before its deadline.
	via.Close()
	wait.For(t, time.Second, "the worker to end once the store's client is closed", func() bool { return s.LiveWorkers() == 0 })

	st := newRedisStore(t, direct, prefix)
	other := newService(t, newHub(t, 0), action.Options{Store: st, Workers: 1, Lease: 200 * time.Millisecond})
	other.Handle("work", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) {
		t.Error("the other node ran an action whose outcome was recorded")
		return nil, nil
	}))
	wait.For(t, waitLong, "the other node to publish the outcome", func() bool {
		x, ok, err := st.Get(context.Background(), a.ID)
		return err == nil && ok && x.Published
	})
	if x := mustGet(t, other, a.ID); x.Status != action.Succeeded || string(x.Result) != `"done"` {
		t.Errorf("after the hand-over: %+v, want succeeded with \"done\"", x)
	}
}

// TestSubmitMuteStore: a Submit to a shared store that stopped answering
// is refused as unavailable within about 5 s (the store's own bound on a
// write it sent, and Submit's on one it could not), however long the
// request would wait.
func TestSubmitMuteStore(t *testing.T) {
	via, _, r, prefix := relayedRedis(t)
	s := newService(t, newHub(t, 0), action.Options{Store: newRedisStore(t, via, prefix), Workers: 1})
	s.Handle("work", action.HandlerFunc(func(context.Context, *action.Call) (json.RawMessage, error) { return nil, nil }))
	r.Mute()
	t.Cleanup(r.Unmute)
	begun := time.Now()
	_, _, err := s.Submit(context.Background(), action.Request{Type: "work", Topic: "t.mute"})
	if !errors.Is(err, action.ErrUnavailable) {
		t.Errorf("Submit to a mute store: %v, want ErrUnavailable", err)
	}
	if took := time.Since(begun); took > 7*time.Second {
		t.Errorf("Submit to a mute store took %v", took)
	}
}
