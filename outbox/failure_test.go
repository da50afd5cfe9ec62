package outbox_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/hub/redisbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/pgtest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/outbox"
)

// terminate ends the session of the source that holds the table's lock,
// as a crash of its node or of its connection would, and returns how many
// sessions it ended.
func terminate(t *testing.T, conn *pgx.Conn) int {
	var n int
	err := conn.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(a.pid))
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database() AND a.application_name = $1`,
		outbox.ApplicationName).Scan(&n)
	if err != nil {
		t.Errorf("failed to end the source's session: %v", err)
	}
	return n
}

// TestConnectionLostAfterPublish: the source's session ends after a batch
// was published and before its deletion committed. The rows are still in
// the table, and the source, reconnected, deletes them rather than
// publishing them again: each is in the log once. The broker's dedupe
// window is too short to help, as after an outage longer than it.
func TestConnectionLostAfterPublish(t *testing.T) {
	db := newDB(t)
	conn, admin := pgtest.Conn(t, db), pgtest.Conn(t, db)
	var cut atomic.Bool
	broker := hub.NewMemoryBroker(hub.MemoryOptions{DedupeWindow: time.Nanosecond})
	n := startNode(t, db, broker, func(pub outbox.Publisher) outbox.Publisher {
		return func(ctx context.Context, ds ...hub.Draft) ([]*hub.Message, error) {
			msgs, err := pub(ctx, ds...)
			if err == nil && cut.CompareAndSwap(false, true) {
				if terminate(t, admin) != 1 {
					t.Error("the source's session was not found")
				}
			}
			return msgs, err
		}
	})
	insert(t, conn, row("lost.t", datum(1)), row("lost.t", datum(2)))
	waitFor(t, "the table to be empty", func() bool { return count(t, conn, "herald_outbox") == 0 })
	insert(t, conn, row("lost.t", datum(3)))
	got := waitLogged(t, n.broker, 3)
	if len(got) != 3 {
		t.Fatalf("logged %d events, want 3 (each row once)", len(got))
	}
	for i, m := range got {
		if string(m.Data) != datum(i+1) {
			t.Errorf("event %d carries %s, want %s", i, m.Data, datum(i+1))
		}
	}
}

// TestTakeover runs two nodes on one table and a shared broker: one
// consumes, the other waits. The consumer dies after publishing a batch
// and before deleting it; the other takes over, finds the batch's rows
// still in the table and publishes them again, and the broker's dedupe
// keeps each row once in the log.
func TestTakeover(t *testing.T) {
	for _, c := range []struct {
		name string
		// log returns a func that starts a broker on one log of the test's own.
		log func(t *testing.T) func() hub.Broker
	}{
		{"redis", func(t *testing.T) func() hub.Broker {
			rdb, prefix := redistest.Client(t)
			return func() hub.Broker {
				b, err := redisbroker.New(context.Background(), redisbroker.Options{Client: rdb, Prefix: prefix})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}},
		{"nats", func(t *testing.T) func() hub.Broker {
			nc, name := natstest.Conn(t)
			return func() hub.Broker {
				b, err := natsbroker.New(context.Background(), natsbroker.Options{
					Conn: nc, Stream: name, Subjects: natstest.Subjects(name), DedupeWindow: hub.DefaultDedupeWindow,
				})
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := newDB(t)
			conn := pgtest.Conn(t, db)
			newBroker := c.log(t)
			published := make(chan struct{})
			var once atomic.Bool
			a := startNode(t, db, newBroker(), func(pub outbox.Publisher) outbox.Publisher {
				return func(ctx context.Context, ds ...hub.Draft) ([]*hub.Message, error) {
					msgs, err := pub(ctx, ds...)
					if err == nil && once.CompareAndSwap(false, true) {
						close(published)
						<-ctx.Done() // the node hangs here until it is stopped: it never deletes
						return nil, ctx.Err()
					}
					return msgs, err
				}
			})
			waitFor(t, "node a to consume", func() bool { return a.src.Status().State == outbox.StateConsuming })
			b := startNode(t, db, newBroker(), nil)
			waitFor(t, "node b to stand by", func() bool { return b.src.Status().State == outbox.StateStandby })
			insert(t, conn, row("takeover.t", datum(1)), row("takeover.t", datum(2)), row("takeover.t", datum(3)))
			<-published
			if terminate(t, conn) < 1 {
				t.Fatal("node a's session was not found")
			}
			waitFor(t, "node b to consume", func() bool { return b.src.Status().State == outbox.StateConsuming })
			waitFor(t, "the table to be empty", func() bool { return count(t, conn, "herald_outbox") == 0 })
			a.stop()
			insert(t, conn, row("takeover.t", datum(4)))
			got := waitLogged(t, b.broker, 4)
			if len(got) != 4 {
				t.Fatalf("logged %d events, want 4 (each row once)", len(got))
			}
			for i, m := range got {
				if string(m.Data) != datum(i+1) {
					t.Errorf("event %d carries %s, want %s", i, m.Data, datum(i+1))
				}
			}
		})
	}
}

// TestDatabaseUnreachable cuts the source's connection to PostgreSQL and
// refuses new ones: the source reports itself unavailable, rows committed
// meanwhile wait in the table, and once PostgreSQL can be reached again
// they are published, by themselves.
func TestDatabaseUnreachable(t *testing.T) {
	db := newDB(t)
	conn := pgtest.Conn(t, db)
	via, r := pgtest.Relayed(t, db)
	n := startNode(t, via+"&poll=50ms", nil, nil)
	insert(t, conn, row("cut.t", datum(1)))
	waitLogged(t, n.broker, 1)
	r.Down()
	waitFor(t, "the source to report the outage", func() bool { return n.src.Status().State == outbox.StateUnavailable })
	if e := n.src.Status().Err; e == "" {
		t.Error("an unavailable source says no reason")
	}
	insert(t, conn, row("cut.t", datum(2)), row("cut.t", datum(3)))
	r.Up()
	got := waitLogged(t, n.broker, 3)
	for i, m := range got {
		if string(m.Data) != datum(i+1) {
			t.Errorf("event %d carries %s, want %s", i, m.Data, datum(i+1))
		}
	}
	waitFor(t, "the source to consume again", func() bool { return n.src.Status().State == outbox.StateConsuming })
}

// TestShutdownWhileDatabaseMute: the broker refuses a batch and the
// database stops answering before its rollback (a network that drops
// packets, not one that closes connections). Stopping the source still
// ends it in a few seconds, rather than when TCP gives up.
func TestShutdownWhileDatabaseMute(t *testing.T) {
	db := newDB(t)
	conn := pgtest.Conn(t, db)
	via, r := pgtest.Relayed(t, db)
	var failed atomic.Bool
	n := startNode(t, via+"&poll=50ms", nil, func(outbox.Publisher) outbox.Publisher {
		return func(ctx context.Context, ds ...hub.Draft) ([]*hub.Message, error) {
			r.Mute()
			failed.Store(true)
			return nil, hub.ErrUnavailable
		}
	})
	t.Cleanup(r.Unmute) // before the node's own cleanup, which stops it
	insert(t, conn, row("mute.t", datum(1)))
	waitFor(t, "the batch to fail", failed.Load)
	stopped := make(chan struct{})
	start := time.Now()
	go func() { n.stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Logf("stopped in %v", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("the source has not stopped 10 s after it was told to, with the database mute")
	}
}
