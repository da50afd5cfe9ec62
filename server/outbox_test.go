package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/client"
	"github.com/heraldpush/herald/internal/testkit/clienttest"
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
// /readyz and /metrics report the source. 100,000 rows (10,000 with
// -short).
func TestOutboxToSubscribers(t *testing.T) {
	rows := 100000
	if testing.Short() {
		rows = 10000
	}
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		t.Fatal(err)
	}
	// A history as long as the run lets a subscriber that the race
	// detector slowed into a disconnection resume without a reset.
	n := heraldtest.Start(t, server.Config{Sources: []string{db + "&batch=1000"}, QueueBytes: 64 << 20, HistorySize: rows})

	// Each subscriber is read while the rows are written: one left unread
	// would fall behind the log's history and be reset.
	type tally struct {
		mu     sync.Mutex
		seen   map[string]int
		events int
		other  []string // anything but an event
	}
	tallies := map[string]*tally{}
	for _, tr := range []string{"sse", "ws"} {
		sub := clienttest.Subscribe(ctx, t, n.URL, tr, []string{"load.>"}, &client.SubscribeOptions{Buffer: 1024})
		tl := &tally{seen: make(map[string]int, rows)}
		tallies[tr] = tl
		go func() {
			for m := range sub.C() {
				tl.mu.Lock()
				if m.Kind == client.KindEvent {
					tl.seen[string(m.Event.Data)]++
					tl.events++
				} else {
					tl.other = append(tl.other, fmt.Sprintf("%s %s", m.Kind, m.Reason))
				}
				tl.mu.Unlock()
			}
		}()
	}

	committed := pgtest.WriteOutbox(t, db, "load.w", rows)
	for tr, tl := range tallies {
		wait.For(t, 4*time.Minute, tr+" to receive every committed row", func() bool {
			tl.mu.Lock()
			defer tl.mu.Unlock()
			return tl.events >= len(committed) || len(tl.other) > 0
		})
		tl.mu.Lock()
		if len(tl.other) > 0 {
			t.Fatalf("%s: received %v after %d events, want only events", tr, tl.other, tl.events)
		}
		if tl.events != len(committed) {
			t.Errorf("%s: received %d events for %d committed rows", tr, tl.events, len(committed))
		}
		for d := range committed {
			if tl.seen[d] != 1 {
				t.Errorf("%s: committed row %s received %d times, want once", tr, d, tl.seen[d])
			}
		}
		for d := range tl.seen {
			if !committed[d] {
				t.Errorf("%s: received %s, which no committed transaction wrote", tr, d)
			}
		}
		tl.mu.Unlock()
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
	// A batch is counted when its deletion commits, after its events
	// went out: the last one may not be yet.
	want := fmt.Sprintf(`herald_source_rows_published_total{source="postgres:herald_outbox"} %d`, len(committed))
	wait.For(t, time.Minute, "/metrics to count every committed row", func() bool {
		_, text := heraldtest.Scrape(t, n.URL+"/metrics")
		return strings.Contains(text, want)
	})
}

// TestOutboxFaults is what an operator sees of an outbox's faults: a
// poison row goes to the dead-letter table and is counted in /metrics
// while the rows around it reach a subscriber; with PostgreSQL cut off (a
// TCP relay that drops the connection and refuses new ones) /readyz stays
// 200 but reports the source unavailable, with the reason, and
// herald_source_up is 0; rows committed meanwhile wait in the table and
// arrive, in order, once the relay is back.
func TestOutboxFaults(t *testing.T) {
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		t.Fatal(err)
	}
	conn := pgtest.Conn(t, db)
	via, r := pgtest.Relayed(t, db)
	n := heraldtest.Start(t, server.Config{Sources: []string{via + "&poll=50ms"}})

	sub := clienttest.Subscribe(ctx, t, n.URL, "sse", []string{"fault.>"}, nil)
	receive := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case m := <-sub.C():
				if m.Kind != client.KindEvent || string(m.Event.Data) != w {
					t.Fatalf("received %s %s, want the event %s", m.Kind, m.Event.Data, w)
				}
			case <-ctx.Done():
				t.Fatalf("timed out waiting for the event %s", w)
			}
		}
	}
	insert := func(topics ...string) {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for _, topic := range topics {
			if _, err := tx.Exec(ctx, "INSERT INTO herald_outbox (topic, data) VALUES ($1, to_jsonb($1::text))", topic); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	metric := func(name string) float64 {
		fams, _ := heraldtest.Scrape(t, n.URL+"/metrics")
		v, _ := heraldtest.Value(fams, name, "source=postgres:herald_outbox")
		return v
	}
	readyz := func() (status int, ready struct {
		Status  string
		Sources []struct{ Source, State, Error string }
	}) {
		status, body := n.Get(t, "/readyz")
		if err := json.Unmarshal(body, &ready); err != nil || len(ready.Sources) != 1 {
			t.Fatalf("GET /readyz: %d %s, want the source reported", status, body)
		}
		return status, ready
	}

	insert("fault.before", "not a topic!", "fault.after")
	receive(`"fault.before"`, `"fault.after"`)
	wait.For(t, time.Minute, "the dead letter counted in /metrics", func() bool {
		return metric("herald_source_dead_letters_total") == 1
	})
	var reason string
	if err := conn.QueryRow(ctx, "SELECT reason FROM herald_outbox_dead WHERE topic = 'not a topic!'").Scan(&reason); err != nil {
		t.Fatalf("the poison row is not in the dead-letter table: %v", err)
	}
	if !strings.Contains(reason, "invalid topic") {
		t.Errorf("dead letter reason %q, want it to say the topic is invalid", reason)
	}

	r.Down()
	wait.For(t, time.Minute, "/readyz to report the source unavailable", func() bool {
		_, ready := readyz()
		return ready.Sources[0].State == outbox.StateUnavailable
	})
	if status, ready := readyz(); status != 200 || ready.Status != "degraded" || ready.Sources[0].Source != "postgres:herald_outbox" || ready.Sources[0].Error == "" {
		t.Errorf("GET /readyz with PostgreSQL cut off: %d %+v, want 200, degraded, the source and why", status, ready)
	}
	if v := metric("herald_source_up"); v != 0 {
		t.Errorf("herald_source_up = %v with PostgreSQL cut off, want 0", v)
	}
	insert("fault.during.1", "fault.during.2")
	var waiting int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM herald_outbox").Scan(&waiting); err != nil || waiting != 2 {
		t.Errorf("%d rows wait in the table (%v), want 2", waiting, err)
	}

	r.Up()
	receive(`"fault.during.1"`, `"fault.during.2"`)
	wait.For(t, time.Minute, "/readyz to report the source consuming", func() bool {
		status, ready := readyz()
		return status == 200 && ready.Status == "ok" && ready.Sources[0].State == outbox.StateConsuming
	})
	if v := metric("herald_source_up"); v != 1 {
		t.Errorf("herald_source_up = %v after PostgreSQL came back, want 1", v)
	}
	// A batch is counted when its deletion commits, after its events
	// went out.
	wait.For(t, time.Minute, "herald_source_rows_published_total to count the 4 rows", func() bool {
		return metric("herald_source_rows_published_total") == 4
	})
}

// TestOutboxTwoSources: a node consumes two outbox tables at once, each
// reported as its own source in /readyz.
func TestOutboxTwoSources(t *testing.T) {
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, name := range []string{"orders_outbox", "users_outbox"} {
		if err := outbox.Init(ctx, db, outbox.Table{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	n := heraldtest.Start(t, server.Config{Sources: []string{db + "&table=orders_outbox", db + "&table=users_outbox"}})
	sub := clienttest.Subscribe(ctx, t, n.URL, "sse", []string{"two.>"}, nil)
	conn := pgtest.Conn(t, db)
	if _, err := conn.Exec(ctx, `INSERT INTO orders_outbox (topic, data) VALUES ('two.orders', '1');
		INSERT INTO users_outbox (topic, data) VALUES ('two.users', '2')`); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case m := <-sub.C():
			if m.Kind != client.KindEvent || got[m.Event.Topic] {
				t.Fatalf("received %s %s, want one event of each table", m.Kind, m.Event.Topic)
			}
			got[m.Event.Topic] = true
		case <-ctx.Done():
			t.Fatalf("received %v, want an event of each table", got)
		}
	}
	_, body := n.Get(t, "/readyz")
	for _, want := range []string{`{"source":"postgres:orders_outbox","state":"consuming"}`, `{"source":"postgres:users_outbox","state":"consuming"}`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /readyz: %s, want %s in it", body, want)
		}
	}
}
