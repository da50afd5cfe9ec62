package redisstore_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/redisstore"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// running returns how many times fn (a substring of a function's full
// name) is on the goroutines' stacks.
func running(fn string) int {
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), fn)
}

func pending(id string) *action.Stored {
	return &action.Stored{Action: action.Action{
		ID: id, Type: "t", Topic: "t", Status: action.Pending, CreatedAt: time.Now().UTC(),
	}}
}

// TestCommitterEnds: a group of writes that Redis does not answer holds
// the committer, the only goroutine a Store starts. A write queued behind
// it gives up when its context ends (which is how the action service's
// Shutdown cancels the calls of its workers); the group itself fails as
// soon as the client is closed, long before its deadline, and the
// committer then ends (goleak checks the rest at the end of the package).
func TestCommitterEnds(t *testing.T) {
	_, prefix := redistest.Client(t)
	rdb, r := redistest.Relayed(t)
	s, err := redisstore.New(context.Background(), rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}

	r.Mute()
	t.Cleanup(r.Unmute)
	sent := make(chan error, 1)
	go func() {
		_, err := s.Create(context.Background(), pending("act_sent"), 10)
		sent <- err
	}()
	wait.For(t, 5*time.Second, "the committer to send the write", func() bool {
		return running("redisstore.(*Store).runWrites(") > 0
	})

	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		_, err := s.Create(ctx, pending("act_queued"), 10)
		queued <- err
	}()
	wait.For(t, 5*time.Second, "the second write to be called", func() bool {
		return running("redisstore.(*Store).Create(") == 2
	})
	cancel()
	select {
	case err := <-queued:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the queued write: %v, want %v", err, context.Canceled)
		}
	case <-time.After(time.Second):
		t.Fatal("the queued write did not give up when its context ended")
	}

	rdb.Close()
	select {
	case err := <-sent:
		if err == nil {
			t.Error("the write Redis did not answer succeeded")
		}
	case <-time.After(time.Second):
		t.Fatal("the write in flight did not end when the client closed")
	}
	wait.For(t, time.Second, "the committer to end", func() bool {
		return running("internal/groupcommit.(*Committer[") == 0
	})
}
