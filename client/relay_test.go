package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// While a relay cuts the subscriber's connection every couple of
// kilobytes, 400 events are published: the subscriber gets every one, in
// order, exactly once, over both transports, and resumed many times to do
// it.
func TestReconnectNothingLostNothingDuplicated(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{CutAfter: 3000})
			ctx := testCtx(t)
			sub := dial(t, r.URL(), Options{Transport: tr})
			pub := dial(t, node.URL, Options{})
			s, err := sub.Subscribe(ctx, []string{"cut.*"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			const n = 400
			errc := make(chan error, 1)
			go func() {
				for i := range n {
					// Two topics, one order: the subscription's order is
					// the hub's.
					if _, err := pub.Publish(ctx, "cut."+strconv.Itoa(i%2), "", i); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			var last string
			for i := range n {
				e := nextEvent(t, s)
				var got int
				if err := json.Unmarshal(e.Data, &got); err != nil || got != i {
					t.Fatalf("event %d: data %s (id %s, after %s), want %d", i, e.Data, e.ID, last, i)
				}
				if want := fmt.Sprintf("cut.%d", i%2); e.Topic != want {
					t.Fatalf("event %d: topic %q, want %q", i, e.Topic, want)
				}
				last = e.ID
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			// A duplicate would be the next message.
			if _, err := pub.Publish(ctx, "cut.end", "", "end"); err != nil {
				t.Fatal(err)
			}
			if e := nextEvent(t, s); e.Topic != "cut.end" {
				t.Fatalf("after the %d events: %s %s, want cut.end", n, e.Topic, e.Data)
			}
			if cuts := r.Cuts(); cuts < 10 {
				t.Fatalf("the relay cut %d connections, want at least 10", cuts)
			}
			t.Logf("%s: %d events across %d cut connections", tr, n, r.Cuts())
		})
	}
}

// While the server cannot be reached at all (the relay refuses
// connections), the subscription keeps trying; once it can, it resumes and
// delivers what was published meanwhile, in order.
func TestReconnectAfterOutage(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{})
			ctx := testCtx(t)
			// The TokenFunc counts connection attempts (the server needs no
			// token).
			var attempts atomic.Int64
			sub := dial(t, r.URL(), Options{Transport: tr, TokenFunc: func(context.Context) (string, error) {
				attempts.Add(1)
				return "", nil
			}})
			pub := dial(t, node.URL, Options{})
			s, err := sub.Subscribe(ctx, []string{"out"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pub.Publish(ctx, "out", "", 0); err != nil {
				t.Fatal(err)
			}
			nextEvent(t, s)
			id := s.ClientID()
			r.Down()
			before := attempts.Load()
			for i := 1; i <= 20; i++ {
				if _, err := pub.Publish(ctx, "out", "", i); err != nil {
					t.Fatal(err)
				}
			}
			// Several refused attempts, then the way is open again.
			wait.For(t, 10*time.Second, "refused reconnects", func() bool { return attempts.Load() >= before+3 })
			r.Up()
			for i := 1; i <= 20; i++ {
				if e := nextEvent(t, s); string(e.Data) != strconv.Itoa(i) {
					t.Fatalf("got %s, want %d", e.Data, i)
				}
			}
			if s.ClientID() == id {
				t.Fatal("still the first connection's ID after the outage")
			}
		})
	}
}
