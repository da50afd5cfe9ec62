package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/outbox"
)

// waitTimeout bounds every wait of these tests: generous, for -race on a
// busy machine.
const waitTimeout = 60 * time.Second

var everything = []hub.Pattern{hub.MustPattern(">")}

// newDB returns the URL of a fresh database with the default outbox in it.
func newDB(t *testing.T) string { return newDBB(t) }

func newDBB(t testing.TB) string {
	t.Helper()
	db := pgtest.Database(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := outbox.Init(ctx, db, outbox.Table{Name: outbox.DefaultTable}); err != nil {
		t.Fatal(err)
	}
	return db
}

// node is a hub on a broker with a source on it, as a Herald node runs them.
type node struct {
	hub    *hub.Hub
	broker hub.Broker
	src    *outbox.Source
	stop   func()
}

// startNode starts a hub on broker (a memory broker if nil) and a source
// of url on it; both stop when the test ends, or on stop.
func startNode(t testing.TB, url string, broker hub.Broker, publish func(outbox.Publisher) outbox.Publisher) *node {
	t.Helper()
	if broker == nil {
		broker = hub.NewMemoryBroker(hub.MemoryOptions{Size: 1 << 20})
	}
	h, err := hub.New(hub.Options{Broker: broker})
	if err != nil {
		t.Fatal(err)
	}
	pub := outbox.Publisher(h.Publish)
	if publish != nil {
		pub = publish(pub)
	}
	src, err := outbox.New(outbox.Options{URL: url, Publish: pub})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = src.Run(ctx)
	}()
	var once sync.Once
	n := &node{hub: h, broker: broker, src: src}
	n.stop = func() {
		once.Do(func() {
			cancel()
			<-done
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = h.Close(ctx)
		})
	}
	t.Cleanup(n.stop)
	return n
}

// logged returns every event in the broker's log.
func logged(t *testing.T, b hub.Broker) []*hub.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	var out []*hub.Message
	after := uint64(0)
	for {
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: everything, Limit: 10000})
		if err != nil {
			t.Fatalf("failed to read the log: %v", err)
		}
		out = append(out, res.Messages...)
		if !res.More {
			return out
		}
		after = res.Next
	}
}

// waitLogged polls the log until it holds n events, and returns them.
func waitLogged(t *testing.T, b hub.Broker, n int) []*hub.Message {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := logged(t, b)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %d events in the log, have %d", n, len(got))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	wait.For(t, waitTimeout, what, cond)
}

// insert writes rows into the outbox in one transaction and commits it.
func insert(t *testing.T, conn *pgx.Conn, rows ...[3]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	for _, r := range rows {
		if _, err := tx.Exec(ctx, "INSERT INTO herald_outbox (topic, type, data) VALUES ($1, $2, $3)", r[0], r[1], r[2]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// count returns the rows of a table.
func count(t *testing.T, conn *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func row(topic, data string) [3]string { return [3]string{topic, "item.added", data} }

func datum(i int) string { return fmt.Sprintf(`{"n":%d}`, i) }
