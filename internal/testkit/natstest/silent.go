package natstest

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// Relayed returns a connection to the tests' NATS through a relay the test
// can mute (relay.Mute): the connection stays up while JetStream's answers
// are lost.
func Relayed(t *testing.T) (*nats.Conn, *relay.Relay) {
	t.Helper()
	rl := relay.Start(t, strings.TrimPrefix(URL(), "nats://"), relay.Options{})
	via, err := nats.Connect("nats://"+rl.Addr(), nats.ReconnectBufSize(-1),
		nats.ReconnectWait(20*time.Millisecond), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(via.Close)
	return via, rl
}

// The calls of Silent: how many short ones, their deadline, and what they
// may take beyond a deadline.
const (
	silentCalls = 8
	silentShort = 300 * time.Millisecond
	silentSlack = 700 * time.Millisecond
)

// Silent checks that calls waiting on a JetStream that does not answer
// (rl muted, via relayed through it) each end with their own deadline: it
// starts one call with a deadline of long, waits for its request to leave,
// then makes concurrent calls with short deadlines, which must each fail
// within theirs (and check, if not nil, must accept their error), not
// queue behind the long one; the long one must fail within its own.
func Silent(t *testing.T, via *nats.Conn, long time.Duration, call func(context.Context) error, check func(error) bool) {
	t.Helper()
	sent := via.Stats().OutMsgs
	lctx, cancel := context.WithTimeout(context.Background(), long)
	defer cancel()
	lstart := time.Now()
	lerr := make(chan error, 1)
	go func() { lerr <- call(lctx) }()
	wait.For(t, 5*time.Second, "the long call's request to JetStream", func() bool {
		return via.Stats().OutMsgs > sent
	})

	var wg sync.WaitGroup
	took := make([]time.Duration, silentCalls)
	errs := make([]error, silentCalls)
	for i := range silentCalls {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(context.Background(), silentShort)
			defer cancel()
			start := time.Now()
			errs[i] = call(cctx)
			took[i] = time.Since(start)
		})
	}
	wg.Wait()
	for i := range silentCalls {
		switch {
		case errs[i] == nil:
			t.Errorf("call %d succeeded while JetStream's answers were lost", i)
		case check != nil && !check(errs[i]):
			t.Errorf("call %d = %v, not the error expected", i, errs[i])
		case took[i] > silentShort+silentSlack:
			t.Errorf("call %d with a %v deadline returned after %v (%v), want within %v",
				i, silentShort, took[i].Round(time.Millisecond), errs[i], silentShort+silentSlack)
		}
	}
	select {
	case err := <-lerr:
		if err == nil {
			t.Errorf("the long call succeeded while JetStream's answers were lost")
		}
	case <-time.After(time.Until(lstart.Add(long + silentSlack))):
		t.Fatalf("the long call did not return within its %v deadline", long)
	}
}
