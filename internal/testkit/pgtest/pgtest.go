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
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
