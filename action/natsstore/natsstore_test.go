package natsstore_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/natsstore"
	"github.com/heraldpush/herald/action/storetest"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, n int) []action.Store {
		_, name := natstest.Conn(t)
		var out []action.Store
		for range n {
			nc, err := nats.Connect(natstest.URL(), nats.Timeout(5*time.Second)) // a connection per node
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			s, err := natsstore.New(context.Background(), natsstore.Options{Conn: nc, Stream: name})
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	})
}

func stored(id, key string, created time.Time) *action.Stored {
	return &action.Stored{
		Action:  action.Action{ID: id, Type: "echo", Topic: "t", Status: action.Pending, CreatedAt: created},
		Payload: json.RawMessage(`"` + id + `"`), Key: key, Caller: "alice",
	}
}

// TestHalfWrittenCreate: a node that died in the middle of Create left an
// idempotency key without a record, or a pending record that was never
// queued. A repeat of the request with that key repairs either once it is
// old enough, and the action runs.
func TestHalfWrittenCreate(t *testing.T) {
	nc, name := natstest.Conn(t)
	ctx := context.Background()
	st, err := natsstore.New(ctx, natsstore.Options{Conn: nc, Stream: name})
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, name+"_ACTIONS")
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(ctx)
	svc, err := action.New(action.Options{Hub: h, Store: st, Workers: 2, Echo: true, Lease: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Shutdown(ctx)
	succeeds := func(id string) {
		t.Helper()
		wait.For(t, 10*time.Second, id+" to succeed", func() bool {
			a, ok, err := svc.Get(ctx, id)
			return err == nil && ok && a.Status == action.Succeeded && string(a.Result) == `"`+id+`"`
		})
	}

	t.Run("KeyWithoutRecord", func(t *testing.T) {
		if _, err := kv.Put(ctx, natsstore.IdemKey("alice", "k1"), []byte("act_ghost")); err != nil {
			t.Fatal(err)
		}
		// A young key belongs to a request still in progress: wait, then
		// give up without touching it.
		restore := natsstore.SetRepair(time.Hour, 100*time.Millisecond)
		old, err := st.Create(ctx, stored("act_early", "k1", time.Now()), 100)
		restore()
		if err == nil {
			t.Fatalf("a repeat while the key has no record: %+v, want an error", old)
		}
		defer natsstore.SetRepair(0, 100*time.Millisecond)()
		if old, err := st.Create(ctx, stored("act_taken", "k1", time.Now()), 100); err != nil || old != nil {
			t.Fatalf("a repeat after the repair delay: %+v %v, want a new action", old, err)
		}
		succeeds("act_taken")
		if old, err := st.Create(ctx, stored("act_again", "k1", time.Now()), 100); err != nil || old == nil || old.ID != "act_taken" {
			t.Fatalf("the repaired key names %+v (err %v), want act_taken", old, err)
		}
	})

	t.Run("RecordNeverQueued", func(t *testing.T) {
		lost := stored("act_lost", "k2", time.Now().Add(-time.Hour).UTC())
		rec, _ := json.Marshal(map[string]any{"a": lost})
		if _, err := kv.Put(ctx, "r.act_lost", rec); err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(ctx, natsstore.IdemKey("alice", "k2"), []byte("act_lost")); err != nil {
			t.Fatal(err)
		}
		old, err := st.Create(ctx, stored("act_repeat", "k2", time.Now()), 100)
		if err != nil || old == nil || old.ID != "act_lost" {
			t.Fatalf("a repeat: %+v %v, want act_lost", old, err)
		}
		succeeds("act_lost")
	})
}

// TestJetStreamSilent: the connection to NATS stays up but JetStream's
// answers are lost. A call that has to create the queue stream, the bucket
// or the workers' consumer fails within its own deadline, even while a
// call with a longer one (a worker's, or a request JetStream bounds at
// 5 s) waits for the same create; it does not wait for that one. Once the
// answers come through again, the next call creates what was missing.
func TestJetStreamSilent(t *testing.T) {
	defer natsstore.SetCreateTimeout(time.Second)()
	for _, tc := range []struct {
		name    string
		prepare func(st *natsstore.Store)
		call    func(ctx context.Context, st *natsstore.Store) error
	}{
		{
			// A NATS server restarted without its data: the store
			// forgot its stream and bucket, and a status query makes it
			// create them again.
			name:    "Forgotten",
			prepare: (*natsstore.Store).Forget,
			call: func(ctx context.Context, st *natsstore.Store) error {
				_, _, err := st.Get(ctx, "act_none")
				return err
			},
		},
		{
			// The first Create brings the queue bound to maxQueued.
			name: "QueueBound",
			call: func(ctx context.Context, st *natsstore.Store) error {
				_, err := st.Create(ctx, stored("act_1", "", time.Now()), 50)
				return err
			},
		},
		{
			name: "Consumer",
			call: func(ctx context.Context, st *natsstore.Store) error {
				return st.Consumer(ctx, 2*time.Second)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, name := natstest.Conn(t)
			via, rl := natstest.Relayed(t)
			ctx := context.Background()
			st, err := natsstore.New(ctx, natsstore.Options{Conn: via, Stream: name})
			if err != nil {
				t.Fatal(err)
			}
			if tc.prepare != nil {
				tc.prepare(st)
			}
			rl.Mute()
			natstest.Silent(t, via, 5*time.Second, func(ctx context.Context) error { return tc.call(ctx, st) }, nil)

			rl.Unmute()
			wait.For(t, 15*time.Second, "the store to create what it needs again", func() bool {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				return tc.call(cctx, st) == nil
			})
		})
	}
}
