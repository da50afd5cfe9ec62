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

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
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

// A state subscription with deltas, cut every few kilobytes while keyed
// events are published: what its consumer builds from the messages (the
// state, then each event replacing its key's value) is the server's state
// at the end, every delta applied to the right base, and its events after
// the synced marker come in strictly increasing order.
func TestReconnectStateWithDeltas(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			node := start(t, server.Config{})
			r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{CutAfter: 8000})
			ctx := testCtx(t)
			sub := dial(t, r.URL(), Options{Transport: tr})
			pub := dial(t, node.URL, Options{})
			body := strings.Repeat("the quick brown fox jumps over the lazy dog ", 10)
			data := func(i int) json.RawMessage {
				return json.RawMessage(fmt.Sprintf(`{"v":%d,"body":%q}`, i, body))
			}
			const keys, n = 8, 240
			for i := range keys {
				if _, err := pub.Publish(ctx, "kv", "", data(i), WithKey(fmt.Sprintf("k%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			s, err := sub.Subscribe(ctx, []string{"kv"}, &SubscribeOptions{State: true, Delta: true})
			if err != nil {
				t.Fatal(err)
			}
			var last string
			errc := make(chan error, 1)
			go func() {
				for i := keys; i < keys+n; i++ {
					id, err := pub.Publish(ctx, "kv", "", data(i), WithKey(fmt.Sprintf("k%d", i%keys)))
					if err != nil {
						errc <- err
						return
					}
					last = id
				}
				errc <- nil
			}()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			synced := false
			var prev Event
			for {
				m := next(t, s)
				switch m.Kind {
				case KindSynced:
					synced = true
					continue
				case KindReset:
					t.Fatalf("reset %+v: nothing was lost", m)
				}
				e := m.Event
				if !json.Valid(e.Data) {
					t.Fatalf("event %s: data %.100q is not JSON", e.ID, e.Data)
				}
				if synced && prev.ID != "" && seq(t, e.ID) <= seq(t, prev.ID) {
					t.Fatalf("event %s after %s", e.ID, prev.ID)
				}
				if synced {
					prev = e
				}
				got[e.Key] = string(e.Data)
				if e.ID == last {
					break
				}
			}
			_, b := node.Get(t, "/v1/topics/kv/state")
			var st struct {
				Events []struct {
					Key  string          `json:"key"`
					Data json.RawMessage `json:"data"`
				} `json:"events"`
			}
			if err := json.Unmarshal(b, &st); err != nil || len(st.Events) != keys {
				t.Fatalf("state %s: %v", b, err)
			}
			for _, e := range st.Events {
				if got[e.Key] != string(e.Data) {
					t.Fatalf("key %s: built %.60s…, the server has %.60s…", e.Key, got[e.Key], e.Data)
				}
			}
			if s.deltas.Load() < n/4 {
				t.Fatalf("only %d of %d events came as deltas", s.deltas.Load(), n)
			}
			if r.Cuts() < 3 {
				t.Fatalf("the relay cut %d connections, want at least 3", r.Cuts())
			}
			t.Logf("%s: %d deltas, %d cuts", tr, s.deltas.Load(), r.Cuts())
		})
	}
}

// seq is the position of a cursor within its epoch.
func seq(t *testing.T, id string) uint64 {
	t.Helper()
	c, err := hub.ParseCursor(id)
	if err != nil {
		t.Fatal(err)
	}
	return c.Seq
}

// A subscription cut off before its first event, while events are
// published, resumes from the cursor it started at (the WebSocket ok's id,
// the SSE start block): every one of those events arrives, once, in order,
// over both transports and on every broker. Without that cursor it would
// come back live and miss them.
func TestReconnectBeforeFirstEvent(t *testing.T) {
	brokers := append([]struct {
		Name string
		URL  func(testing.TB) string
	}{{"memory", func(testing.TB) string { return "memory" }}}, heraldtest.Brokers...)
	for _, b := range brokers {
		for _, tr := range transports {
			t.Run(b.Name+"/"+tr, func(t *testing.T) {
				node := start(t, server.Config{Broker: b.URL(t)})
				r := relay.Start(t, strings.TrimPrefix(node.URL, "http://"), relay.Options{})
				ctx := testCtx(t)
				pub := dial(t, node.URL, Options{})
				// Earlier events: the start is not the log's beginning.
				for i := range 3 {
					if _, err := pub.Publish(ctx, "gap", "", -1-i); err != nil {
						t.Fatal(err)
					}
				}
				sub := dial(t, r.URL(), Options{Transport: tr})
				s, err := sub.Subscribe(ctx, []string{"gap"}, nil)
				if err != nil {
					t.Fatal(err)
				}
				r.Down()
				const n = 5
				for i := range n {
					if _, err := pub.Publish(ctx, "gap", "", i); err != nil {
						t.Fatal(err)
					}
				}
				// An earlier event the hub had not yet dispatched when the
				// subscription started comes too (it is after the start),
				// but once, and it may have come before the cut: on NATS a
				// publish returns at the stream's ack, before this node has
				// read the event back.
				seen := map[string]bool{}
			drain:
				for {
					select {
					case m := <-s.C():
						if m.Kind != KindEvent || !strings.HasPrefix(string(m.Event.Data), "-") {
							t.Fatalf("got %+v while cut off", m)
						}
						seen[m.Event.ID] = true
					default:
						break drain
					}
				}
				r.Up()
				for i := 0; i < n; {
					e := nextEvent(t, s)
					if seen[e.ID] {
						t.Fatalf("event %s %s twice", e.ID, e.Data)
					}
					seen[e.ID] = true
					if i == 0 && strings.HasPrefix(string(e.Data), "-") {
						continue
					}
					if string(e.Data) != strconv.Itoa(i) {
						t.Fatalf("event %d: %s %s, want data %d", i, e.ID, e.Data, i)
					}
					i++
				}
				// A duplicate would be the next message.
				if _, err := pub.Publish(ctx, "gap", "", "end"); err != nil {
					t.Fatal(err)
				}
				if e := nextEvent(t, s); string(e.Data) != `"end"` {
					t.Fatalf("after the %d events: %s %s, want \"end\"", n, e.ID, e.Data)
				}
			})
		}
	}
}
