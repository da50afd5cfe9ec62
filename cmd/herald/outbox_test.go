package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
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
)

// TestOutboxNodeKilled runs two node processes with --source on one
// outbox table and a shared broker, and kills the consuming one outright
// (SIGKILL) in the middle of a batch, while 8 writers commit rows: a
// trigger of the test's holds the consumer's DELETE until the test lets it
// go, so the consumer is killed with a batch appended to the log and not
// deleted from the table. The other node takes the table over and
// publishes that batch again: the broker skips the duplicates (the
// survivor's /metrics counts rows it published that were not appended),
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
	// holdKey is an advisory lock that every DELETE from the outbox takes
	// shared, through the trigger: while the test holds it, the consumer
	// stops between publishing a batch and deleting it.
	const holdKey = 20200420
	conn := pgtest.Conn(t, db)
	if _, err := conn.Exec(ctx, fmt.Sprintf(`CREATE FUNCTION hold_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock_shared(%d);
  RETURN NULL;
END
$$;
CREATE TRIGGER hold_delete BEFORE DELETE ON herald_outbox FOR EACH STATEMENT EXECUTE FUNCTION hold_delete();`, holdKey)); err != nil {
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
	sub := clienttest.Subscribe(ctx, t, survivor.URL, "sse", []string{"killed.>"}, &client.SubscribeOptions{Buffer: 1024})
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
	// Once the consumer has published some of the rows, while the writers
	// go on, hold its next DELETE and kill it there; then let the DELETE
	// go, which PostgreSQL rolls back, its client gone.
	killed := make(chan int, 1)
	go func() {
		defer func() { killed <- count() }()
		for ctx.Err() == nil && count() < 300 {
			time.Sleep(5 * time.Millisecond)
		}
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", holdKey); err != nil {
			t.Errorf("failed to hold the deletes: %v", err)
			return
		}
		defer func() {
			if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", holdKey); err != nil {
				t.Errorf("failed to let the deletes go: %v", err)
			}
		}()
		held := false
		for ctx.Err() == nil && !held {
			err := conn.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = $1 AND wait_event = 'advisory' AND query LIKE 'DELETE%'`,
				outbox.ApplicationName).Scan(&held)
			if err != nil {
				t.Errorf("failed to look for the consumer's DELETE: %v", err)
				return
			}
			time.Sleep(time.Millisecond)
		}
		consumer.kill()
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
	mu.Unlock()
	// A batch is counted in rows_published once its deletion commits and
	// in events_published once appended, so the difference only grows to
	// the number of rows the broker skipped as already appended.
	skipped := 0.0
	wait.For(t, 60*time.Second, "the survivor to publish rows that the killed node had appended", func() bool {
		fams, _ := heraldtest.Scrape(t, survivor.URL+"/metrics")
		rows, _ := heraldtest.Value(fams, "herald_source_rows_published_total")
		appended, _ := heraldtest.Value(fams, "herald_events_published_total")
		skipped = rows - appended
		return skipped >= 1
	})
	t.Logf("the survivor published %v rows that the killed node had appended", skipped)
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

// TestOutboxCommand: "herald outbox sql" prints the statements for the
// table it names; "herald outbox init" creates the outbox, its dead-letter
// table and its trigger in the database of a source URL, and running it
// again changes nothing; a URL that is not PostgreSQL's is a usage error.
func TestOutboxCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"outbox", "sql", "--table", "app.events"}, &stdout, &stderr); code != 0 {
		t.Fatalf("outbox sql: exit %d, %s", code, stderr.String())
	}
	for _, want := range []string{`CREATE TABLE IF NOT EXISTS "app"."events"`, `"app"."events_dead"`, `pg_notify('app_events'`, `CREATE TRIGGER herald_notify`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("outbox sql lacks %q:\n%s", want, stdout.String())
		}
	}

	db := pgtest.Database(t)
	src := db + "&table=events"
	for range 2 {
		stdout.Reset()
		stderr.Reset()
		if code := run([]string{"outbox", "init", src}, &stdout, &stderr); code != 0 {
			t.Fatalf("outbox init: exit %d, %s", code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "outbox events ready") {
			t.Errorf("outbox init says %q, want it to say the outbox is ready", stderr.String())
		}
	}
	conn := pgtest.Conn(t, db)
	var tables, triggers int
	err := conn.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM pg_tables WHERE tablename IN ('events', 'events_dead')),
		(SELECT count(*) FROM pg_trigger WHERE tgname = 'herald_notify' AND tgrelid = 'events'::regclass)`).Scan(&tables, &triggers)
	if err != nil || tables != 2 || triggers != 1 {
		t.Errorf("after outbox init: %d tables, %d triggers (%v), want 2 and 1", tables, triggers, err)
	}

	stderr.Reset()
	if code := run([]string{"outbox", "init", "mysql://127.0.0.1/app"}, &stdout, &stderr); code != 2 {
		t.Errorf("outbox init of a MySQL URL: exit %d (%s), want 2", code, stderr.String())
	}
}

// TestSourceRepeatable: --source adds a source each time it is given, and
// HERALD_SOURCE gives several separated by spaces.
func TestSourceRepeatable(t *testing.T) {
	a := "postgres://postgres@127.0.0.1:5432/app?table=a"
	b := "postgres://postgres@127.0.0.1:5432/app?table=b"
	c, err := parseServeFlags([]string{"--source", a, "--source", b}, envOf(nil), io.Discard)
	if err != nil || !slices.Equal(c.sources, []string{a, b}) {
		t.Errorf("--source twice: %q, %v; want both", c.sources, err)
	}
	c, err = parseServeFlags(nil, envOf(map[string]string{"HERALD_SOURCE": a + " " + b}), io.Discard)
	if err != nil || !slices.Equal(c.sources, []string{a, b}) {
		t.Errorf("HERALD_SOURCE with two URLs: %q, %v; want both", c.sources, err)
	}
}
