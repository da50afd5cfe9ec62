package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/outbox"
	"github.com/heraldpush/herald/server"
)

// TestOutboxToSubscribers is the outbox end to end: 8 writers commit and
// roll back transactions of rows in the application's database, some
// committing after transactions that took later ids; a node with
// --source publishes them, and an SSE and a WebSocket subscriber each
// receive every committed row exactly once, and never a rolled-back one.
// /readyz and /metrics report the source. Full size (HERALD_SOAK=1):
// 100,000 rows.
func TestOutboxToSubscribers(t *testing.T) {
	rows := 10000
	if os.Getenv("HERALD_SOAK") != "" {
		rows = 100000
	}
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		t.Fatal(err)
	}
	n := heraldtest.Start(t, server.Config{Sources: []string{db + "&batch=1000"}, QueueBytes: 64 << 20})

	subs := map[string]*client.Subscription{}
	for _, tr := range []string{"sse", "ws"} {
		c, err := client.Dial(ctx, n.URL, &client.Options{Transport: tr})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		sub, err := c.Subscribe(ctx, []string{"load.>"}, &client.SubscribeOptions{Buffer: 1024})
		if err != nil {
			t.Fatal(err)
		}
		subs[tr] = sub
	}

	committed := pgtest.WriteOutbox(t, db, "load.w", rows)
	for tr, sub := range subs {
		seen := make(map[string]int, len(committed))
		for got := 0; got < len(committed); {
			select {
			case m := <-sub.C():
				if m.Kind != client.KindEvent {
					t.Fatalf("%s: a %s, want only events", tr, m.Kind)
				}
				seen[string(m.Event.Data)]++
				got++
			case <-ctx.Done():
				t.Fatalf("%s: received %d of %d committed rows", tr, got, len(committed))
			}
		}
		for d := range committed {
			if seen[d] != 1 {
				t.Errorf("%s: committed row %s received %d times, want once", tr, d, seen[d])
			}
			delete(seen, d)
		}
		for d := range seen {
			t.Errorf("%s: received %s, which no committed transaction wrote", tr, d)
		}
	}

	status, body := n.Get(t, "/readyz")
	var ready struct {
		Status  string
		Sources []struct{ Source, State string }
	}
	if err := json.Unmarshal(body, &ready); status != 200 || err != nil || ready.Status != "ok" || len(ready.Sources) != 1 ||
		ready.Sources[0].Source != "postgres:herald_outbox" || ready.Sources[0].State != outbox.StateConsuming {
		t.Errorf("GET /readyz: %d %s, want 200 with the source consuming", status, body)
	}
	// A batch is counted once its rows are deleted, which is after its
	// events were published: the count may trail what subscribers have.
	want := fmt.Sprintf(`herald_source_rows_published_total{source="postgres:herald_outbox"} %d`, len(committed))
	wait.For(t, 10*time.Second, "/metrics to count every committed row", func() bool {
		_, text := heraldtest.Scrape(t, n.URL+"/metrics")
		return strings.Contains(text, want)
	})
}
