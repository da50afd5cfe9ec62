package client

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// TestMain fails the package if a client leaves a goroutine behind after
// its Close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// transports are the two ways to subscribe; most tests run on both.
var transports = []string{"ws", "sse"}

// start runs a server with c until the test ends.
func start(t *testing.T, c server.Config) *heraldtest.Node {
	t.Helper()
	return heraldtest.Start(t, c)
}

// dial returns a client of url closed when the test ends, reconnecting
// quickly: the tests cut connections on purpose.
func dial(t *testing.T, url string, o Options) *Client {
	t.Helper()
	if o.BackoffMin == 0 {
		o.BackoffMin, o.BackoffMax = 2*time.Millisecond, 50*time.Millisecond
	}
	c, err := Dial(context.Background(), url, &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testCtx is a context bounding a test's waits.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// next returns the subscription's next message, failing t after 15 s or
// when the subscription ends.
func next(t *testing.T, s *Subscription) Message {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if !ok {
			t.Fatalf("the subscription ended: %v", s.Err())
		}
		return m
	case <-time.After(15 * time.Second):
		t.Fatal("no message within 15s")
	}
	return Message{}
}

// nextEvent is next for an event, failing t on a reset or synced.
func nextEvent(t *testing.T, s *Subscription) Event {
	t.Helper()
	m := next(t, s)
	if m.Kind != KindEvent {
		t.Fatalf("got a %v (%+v), want an event", m.Kind, m)
	}
	return m.Event
}
