// Package pgtest gives tests the machine's PostgreSQL (127.0.0.1:5432, user
// postgres, trust authentication; or HERALD_POSTGRES_URL) with a database of
// their own, dropped when the test ends. Without PostgreSQL a test is
// skipped, except under CI (the CI variable set), where that fails:
// .ci/run starts PostgreSQL.
package pgtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/internal/testkit/relay"
)

var databases atomic.Int64

// ServerURL is the PostgreSQL the tests use, as a URL of its postgres
// database.
func ServerURL() string {
	if u := os.Getenv("HERALD_POSTGRES_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Database creates a database of the test's own and returns its URL. When
// the test ends the database is dropped, with any connection still open to
// it.
func Database(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no PostgreSQL at %s under CI: %v", ServerURL(), err)
		}
		t.Skipf("no PostgreSQL at %s: %v", ServerURL(), err)
	}
	defer admin.Close(context.Background())
	name := fmt.Sprintf("herald_test_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e9, databases.Add(1))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("failed to create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		admin, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Errorf("failed to drop database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("failed to drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("invalid HERALD_POSTGRES_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// Conn returns a connection to url, closed when the test ends.
func Conn(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("failed to connect to %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// WriteOutbox has 8 writers insert rows of topic into the default outbox
// table (herald_outbox) at once, in transactions of 1 to 20 rows, a fifth
// of them rolled back, so that transactions commit out of the order of
// their ids, and returns the data of the committed rows: {"i":N,"w":W},
// as jsonb orders its keys, so that what Herald publishes reads the same.
func WriteOutbox(t testing.TB, db, topic string, rows int) map[string]bool {
	t.Helper()
	const writers = 8
	var mu sync.Mutex
	committed := make(map[string]bool, rows)
	var wg sync.WaitGroup
	for w := range writers {
		conn := Conn(t, db)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			for i, txn := 0, 0; i < rows/writers; txn++ {
				k := 1 + (txn*7+w)%20
				tx, err := conn.Begin(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				var batch []string
				for j := range k {
					d := fmt.Sprintf(`{"i":%d,"w":%d}`, i+j, w)
					batch = append(batch, d)
					if _, err := tx.Exec(ctx, "INSERT INTO herald_outbox (topic, type, data) VALUES ($1, 'row', $2)", topic, d); err != nil {
						t.Error(err)
						return
					}
				}
				if (txn+w)%5 == 0 {
					_ = tx.Rollback(ctx)
					continue
				}
				if err := tx.Commit(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for _, d := range batch {
					committed[d] = true
				}
				mu.Unlock()
				i += k
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return committed
}

// Relayed returns db's URL reached through a relay of the test's own, and
// the relay, for cutting the database off (relay.Relay.Down) and back.
func Relayed(t testing.TB, db string) (string, *relay.Relay) {
	t.Helper()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatalf("failed to parse the database URL: %v", err)
	}
	r := relay.Start(t, u.Host, relay.Options{})
	u.Host = r.Addr()
	return u.String(), r
}
