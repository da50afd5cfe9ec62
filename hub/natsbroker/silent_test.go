package natsbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestStreamOpenSilent: the connection to NATS stays up but JetStream's
// answers are lost, and the state or presence stream is not open (not
// created yet, which a look-up does not keep, or found gone). Calls that
// need it at once (snapshots, subscribes with state, presence reads and
// changes, the applier, sweeps) each fail within their own deadline, even
// while a call with a longer one waits for the same look-up; they do not
// queue behind each other. Once the answers come through again, the next
// call opens it.
func TestStreamOpenSilent(t *testing.T) {
	defer natsbroker.SetStreamOpenWait(time.Second)()
	for _, tc := range []struct {
		name   string
		create bool
		drop   bool // opened, then found gone
		open   func(b *natsbroker.Broker, ctx context.Context, create bool) (bool, error)
	}{
		{name: "StateLookUp", open: (*natsbroker.Broker).OpenStateStream},
		{name: "StateCreate", create: true, drop: true, open: (*natsbroker.Broker).OpenStateStream},
		{name: "PresenceLookUp", open: (*natsbroker.Broker).OpenPresenceStream},
		{name: "PresenceCreate", create: true, open: (*natsbroker.Broker).OpenPresenceStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, name := conn(t)
			via, rl := natstest.Relayed(t)
			ctx := context.Background()
			b, err := natsbroker.New(ctx, natsbroker.Options{Conn: via, Stream: name, Subjects: natstest.Subjects(name)})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if tc.drop {
				if _, err := tc.open(b, ctx, true); err != nil {
					t.Fatal(err)
				}
				b.DropStreams()
			}
			call := func(ctx context.Context) error {
				_, err := tc.open(b, ctx, tc.create)
				return err
			}
			rl.Mute()
			natstest.Silent(t, via, 2*time.Second, call, func(err error) bool { return errors.Is(err, hub.ErrUnavailable) })

			rl.Unmute()
			wait.For(t, 15*time.Second, "the stream to be opened again", func() bool {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				found, err := tc.open(b, cctx, tc.create)
				return err == nil && found == tc.create
			})
		})
	}
}

// startedOn starts a broker on via, on stream name, and closes it when the
// test ends.
func startedOn(t *testing.T, via *nats.Conn, name string) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: via, Stream: name, Subjects: natstest.Subjects(name), Idle: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// raceOnce has b's next presence change raced once: before its first
// attempt, b publishes to the topic, so that the attempt is refused and
// the change holds b's publishes back while it tries again. f, if not
// nil, is called at the change's other steps.
func raceOnce(t *testing.T, b *natsbroker.Broker, topic string, f func(step string)) {
	var raced bool
	b.OnChange(func(step string) {
		if step == "append" && !raced {
			raced = true
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := b.Publish(ctx, []hub.Draft{{Topic: topic, Type: hub.DefaultType, Data: json.RawMessage(`1`)}}); err != nil {
				t.Errorf("the racing publish: %v", err)
			}
			return
		}
		if f != nil {
			f(step)
		}
	})
}

func member(client string) json.RawMessage {
	return json.RawMessage(`{"client":"` + client + `"}`)
}

// TestPublishWhilePresenceStuck: a presence change whose append was raced
// holds the node's publishes back while it tries again, and JetStream's
// answers are then lost. A publish waits for it no longer than its own
// context allows, and fails as unavailable: it was not sent.
func TestPublishWhilePresenceStuck(t *testing.T) {
	_, name := conn(t)
	via, rl := natstest.Relayed(t)
	b := startedOn(t, via, name)
	held := make(chan struct{})
	raceOnce(t, b, "room", func(step string) {
		if step == "held" {
			rl.Mute() // the change's next round trip goes unanswered
			close(held)
		}
	})
	changed := make(chan error, 1)
	go func() {
		_, err := b.ChangePresence(context.Background(), []hub.PresenceChange{{Topic: "room", Client: "a", Join: true, Member: member("a")}})
		changed <- err
	}()
	select {
	case <-held:
	case err := <-changed:
		t.Fatalf("the change returned (%v) without holding the publishes back", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the change did not hold the publishes back")
	}

	const (
		timeout = time.Second
		slack   = 700 * time.Millisecond
	)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	_, err := b.Publish(ctx, []hub.Draft{{Topic: "other", Type: hub.DefaultType, Data: json.RawMessage(`2`)}})
	took := time.Since(start)
	if err == nil {
		t.Errorf("a publish succeeded while JetStream's answers were lost")
	} else if !errors.Is(err, hub.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the publish = %v, want hub.ErrUnavailable on its deadline", err)
	}
	if took > timeout+slack {
		t.Errorf("a publish with a %v deadline returned after %v, want within %v", timeout, took.Round(time.Millisecond), timeout+slack)
	}

	select {
	case err := <-changed:
		if err == nil {
			t.Errorf("the change succeeded while JetStream's answers were lost")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the change did not end with its time")
	}
	rl.Unmute()
	wait.For(t, 15*time.Second, "a publish once JetStream answers again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := b.Publish(ctx, []hub.Draft{{Topic: "other", Type: hub.DefaultType, Data: json.RawMessage(`3`)}})
		return err == nil
	})
}

// TestPresenceHoldEndsWithAppend: a presence change whose append was
// raced holds the node's publishes back until its next attempt is
// answered, no longer: while what follows (a leave's marker purge) waits
// on a slow JetStream, the node's publishes go through.
func TestPresenceHoldEndsWithAppend(t *testing.T) {
	b, _, _, _ := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := b.ChangePresence(ctx, []hub.PresenceChange{{Topic: "room", Client: "a", Join: true, Member: member("a")}}); err != nil {
		t.Fatal(err)
	}
	appended, release := make(chan struct{}), make(chan struct{})
	var held bool
	raceOnce(t, b, "room", func(step string) {
		switch step {
		case "held":
			held = true
		case "appended":
			close(appended)
			select { // a purge stalled on JetStream
			case <-release:
			case <-time.After(10 * time.Second):
			}
		}
	})
	changed := make(chan error, 1)
	go func() {
		got, err := b.ChangePresence(ctx, []hub.PresenceChange{{Topic: "room", Client: "a"}})
		if err == nil && len(got) != 1 {
			err = errors.New("the leave was not appended")
		}
		changed <- err
	}()
	select {
	case <-appended:
	case err := <-changed:
		t.Fatalf("the leave returned (%v) before its append was answered", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the leave was not appended")
	}
	if !held {
		t.Fatal("the leave's append was not raced")
	}

	const (
		timeout = time.Second
		slack   = 700 * time.Millisecond
	)
	pctx, pcancel := context.WithTimeout(context.Background(), timeout)
	defer pcancel()
	start := time.Now()
	_, err := b.Publish(pctx, []hub.Draft{{Topic: "room", Type: hub.DefaultType, Data: json.RawMessage(`2`)}})
	took := time.Since(start)
	close(release)
	if err != nil || took > timeout+slack {
		t.Errorf("a publish while the leave's purge waits = %v after %v, want it stored within %v", err, took.Round(time.Millisecond), timeout+slack)
	}
	if err := <-changed; err != nil {
		t.Fatal(err)
	}
}
