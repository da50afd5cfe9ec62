package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/outbox"
)

// TestOutboxNodeKilled runs two node processes with --source on one
// outbox table and a shared broker, and kills the consuming one outright
// (SIGKILL) while 8 writers commit rows: the other takes the table over,
// and a subscriber of the survivor receives every committed row exactly
// once (it sees the whole log, so a row appended twice would reach it
// twice).
func TestOutboxNodeKilled(t *testing.T) {
	heraldtest.ForEachBroker(t, testOutboxNodeKilled)
}

func testOutboxNodeKilled(t *testing.T, broker string) {
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		t.Fatal(err)
	}
	src := db + "&batch=50&poll=100ms"
	nodes := []*process{
		startProcess(t, "--broker", broker, "--source", src, "--history-size", "100000"),
		startProcess(t, "--broker", broker, "--source", src, "--history-size", "100000"),
	}
	var consumer, survivor *process
	wait.For(t, 20*time.Second, "a node to consume the table", func() bool {
		for i, n := range nodes {
			if sourceState(t, n) == outbox.StateConsuming {
				consumer, survivor = n, nodes[1-i]
				return true
			}
		}
		return false
	})
	c, err := client.Dial(ctx, survivor.URL, &client.Options{Transport: "sse"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(ctx, []string{"killed.>"}, &client.SubscribeOptions{Buffer: 1024})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen, events := map[string]int{}, 0
	go func() {
		for m := range sub.C() {
			if m.Kind == client.KindEvent {
				mu.Lock()
				seen[string(m.Event.Data)]++
				events++
				mu.Unlock()
			}
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return events
	}
	// Kill the consumer once it has published some of the rows, while
	// the writers go on.
	killed := make(chan int, 1)
	go func() {
		for ctx.Err() == nil && count() < 300 {
			time.Sleep(5 * time.Millisecond)
		}
		consumer.kill()
		killed <- count()
	}()
	committed := pgtest.WriteOutbox(t, db, "killed.rows", 4000)
	if at := <-killed; at >= len(committed) {
		t.Fatalf("the consumer was killed after it had published every row (%d)", at)
	}
	wait.For(t, 60*time.Second, "the survivor to consume the table", func() bool {
		return sourceState(t, survivor) == outbox.StateConsuming
	})
	wait.For(t, 60*time.Second, "every committed row", func() bool { return count() >= len(committed) })
	mu.Lock()
	defer mu.Unlock()
	if events != len(committed) {
		t.Errorf("received %d events for %d committed rows", events, len(committed))
	}
	for d := range committed {
		if seen[d] != 1 {
			t.Errorf("committed row %s received %d times, want once", d, seen[d])
		}
	}
	if len(seen) != len(committed) {
		t.Errorf("received %d distinct rows, %d committed", len(seen), len(committed))
	}
}

// sourceState reads the state of a node's only source from its /readyz.
func sourceState(t *testing.T, p *process) string {
	t.Helper()
	resp, err := http.Get(p.URL + "/readyz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var ready struct{ Sources []struct{ State string } }
	if json.Unmarshal(body, &ready) != nil || len(ready.Sources) != 1 {
		return ""
	}
	return ready.Sources[0].State
}
