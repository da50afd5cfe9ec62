package outbox_test

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/outbox"
)

// TestCommittedRowsOnly checks the basic promise: the rows of a committed
// transaction are published, in id order, as events with the row's topic,
// type, key and data, and deleted; those of a rolled-back one never are.
func TestCommittedRowsOnly(t *testing.T) {
	db := newDB(t)
	conn := pgtest.Conn(t, db)
	n := startNode(t, db, nil, nil)
	ctx := context.Background()

	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO herald_outbox (topic, type, data) VALUES ('todo.items', 'item.added', '{\"rolled\":\"back\"}')"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	insert(t, conn, row("todo.items", `{"id": 1, "title": "milk"}`), row("todo.other", `2`))
	if _, err := conn.Exec(ctx, "INSERT INTO herald_outbox (topic, type, key, data) VALUES ('todo.items', 'item.removed', 'item:1', NULL)"); err != nil {
		t.Fatal(err)
	}
	got := waitLogged(t, n.broker, 3)
	want := []struct{ topic, typ, key, data string }{
		{"todo.items", "item.added", "", `{"id":1,"title":"milk"}`},
		{"todo.other", "item.added", "", `2`},
		{"todo.items", "item.removed", "item:1", `null`},
	}
	if len(got) != len(want) {
		t.Fatalf("logged %d events, want %d", len(got), len(want))
	}
	for i, m := range got {
		w := want[i]
		if m.Topic != w.topic || m.Type != w.typ || m.Key != w.key || string(m.Data) != w.data {
			t.Errorf("event %d is %s, want topic %s type %s key %q data %s", i, m.Envelope(), w.topic, w.typ, w.key, w.data)
		}
		if strings.Contains(string(m.Envelope()), "rolled") {
			t.Errorf("a rolled-back row was published: %s", m.Envelope())
		}
	}
	waitFor(t, "the table to be empty", func() bool { return count(t, conn, "herald_outbox") == 0 })
	if p := n.src.Published(); p != 3 {
		t.Errorf("Published() = %d, want 3", p)
	}
	if s := n.src.Status(); s.State != outbox.StateConsuming {
		t.Errorf("status %+v, want consuming", s)
	}
}

// TestLateCommitNotSkipped: a transaction that took its id before another
// but commits after it is still published, after the other: the consumer
// deletes what it publishes, so it never moves past a row it has not seen.
func TestLateCommitNotSkipped(t *testing.T) {
	db := newDB(t)
	early, late := pgtest.Conn(t, db), pgtest.Conn(t, db)
	n := startNode(t, db+"&poll=20ms", nil, nil)
	ctx := context.Background()
	slow, err := late.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Exec(ctx, "INSERT INTO herald_outbox (topic, data) VALUES ('order.t', '\"first id, committed last\"')"); err != nil {
		t.Fatal(err)
	}
	insert(t, early, row("order.t", `"second id, committed first"`))
	waitLogged(t, n.broker, 1)
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	got := waitLogged(t, n.broker, 2)
	if string(got[0].Data) != `"second id, committed first"` || string(got[1].Data) != `"first id, committed last"` {
		t.Fatalf("logged %s then %s, want the early commit first and the late one after it", got[0].Data, got[1].Data)
	}
}

// TestConcurrentWriters: 8 writers commit and roll back transactions of
// several rows at once, committing out of id order; every committed row is
// in the log exactly once, and no rolled-back row is.
func TestConcurrentWriters(t *testing.T) {
	rows := 8000
	if testing.Short() {
		rows = 2000
	}
	db := newDB(t)
	n := startNode(t, db+"&batch=200", nil, nil)
	committed := pgtest.WriteOutbox(t, db, "load.w", rows)
	got := waitLogged(t, n.broker, len(committed))
	if len(got) != len(committed) {
		t.Errorf("logged %d events, %d rows committed", len(got), len(committed))
	}
	seen := map[string]int{}
	for _, m := range got {
		seen[string(m.Data)]++
	}
	for d := range committed {
		if seen[d] != 1 {
			t.Errorf("committed row %s logged %d times, want once", d, seen[d])
		}
		delete(seen, d)
	}
	for d := range seen {
		t.Errorf("logged %s, which no committed transaction wrote", d)
	}
}

// TestDeadLetters: rows that cannot be events go to the dead-letter table
// with the reason, counted, and the rows around them are published.
func TestDeadLetters(t *testing.T) {
	db := newDB(t)
	conn := pgtest.Conn(t, db)
	n := startNode(t, db, nil, nil)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO herald_outbox (topic, data) VALUES ('ok.before', '1')`,
		`INSERT INTO herald_outbox (topic, data) VALUES ('bad topic!', '2')`,
		`INSERT INTO herald_outbox (topic, key, data) VALUES ('ok.t', '', '3')`,
		`INSERT INTO herald_outbox (topic, type, data) VALUES ('ok.t', '` + strings.Repeat("x", 65) + `', '4')`,
		`INSERT INTO herald_outbox (topic, key, data) VALUES ('ok.t', 'no spaces allowed', '5')`,
		`INSERT INTO herald_outbox (topic, data) VALUES ('ok.after', '6')`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	got := waitLogged(t, n.broker, 2)
	if len(got) != 2 || got[0].Topic != "ok.before" || got[1].Topic != "ok.after" {
		t.Fatalf("logged %d events (%v), want ok.before and ok.after", len(got), got)
	}
	waitFor(t, "the dead letters to be counted", func() bool { return n.src.Dead() == 4 })
	rs, err := conn.Query(ctx, "SELECT data::text, reason FROM herald_outbox_dead ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	reasons, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (string, error) {
		var data, reason string
		err := r.Scan(&data, &reason)
		return data + " " + reason, err
	})
	if err != nil {
		t.Fatal(err)
	}
	wantWords := []string{"2 invalid topic", "3 invalid key", "4 invalid type", "5 invalid key"}
	if len(reasons) != len(wantWords) {
		t.Fatalf("dead letters %q, want %d", reasons, len(wantWords))
	}
	for i, w := range wantWords {
		if !strings.HasPrefix(reasons[i], w) {
			t.Errorf("dead letter %d: %q, want it to start with %q", i, reasons[i], w)
		}
	}
	if c := count(t, conn, "herald_outbox"); c != 0 {
		t.Errorf("%d rows left in the outbox", c)
	}
}

// TestNotifyWakes: with a poll interval far longer than the test, rows
// still arrive: the trigger's NOTIFY wakes the consumer.
func TestNotifyWakes(t *testing.T) {
	db := newDB(t)
	conn := pgtest.Conn(t, db)
	n := startNode(t, db+"&poll=1m", nil, nil)
	waitFor(t, "the source to consume", func() bool { return n.src.Status().State == outbox.StateConsuming })
	for i := range 5 {
		insert(t, conn, row("wake.t", datum(i)))
		waitLogged(t, n.broker, i+1)
	}
}

var _ = hub.DefaultDedupeWindow
