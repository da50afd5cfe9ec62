package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/brokertest"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestPresenceRevivedNode: a node that cannot refresh its heartbeat for
// longer than its TTL is taken for dead and its members leave; when it can
// again, it finds its heartbeat expired and its hub joins them again, each
// with the member it had.
func TestPresenceRevivedNode(t *testing.T) {
	bs := newCluster(t, 2, brokertest.Options{NodeTTL: 600 * time.Millisecond})
	hubs := make([]*hub.Hub, 2)
	for i, b := range bs {
		h, err := hub.New(hub.Options{Broker: b})
		if err != nil {
			t.Fatal(err)
		}
		hubs[i] = h
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := h.Close(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	c, err := hubs[0].NewClient("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("room")}, Presence: true,
		User: "ann", Info: json.RawMessage(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	want := `{"client":"` + c.ConnID() + `","user":"ann","info":{"x":1}}`
	members := func() []string {
		p, err := hubs[1].Presence(context.Background(), "room")
		if err != nil {
			t.Fatal(err)
		}
		out := make([]string, len(p.Members))
		for i, m := range p.Members {
			out[i] = string(m)
		}
		return out
	}
	wait.For(t, 10*time.Second, "the join", func() bool { m := members(); return len(m) == 1 && m[0] == want })
	natsbroker.Pause(bs[0].(*natsbroker.Broker), true)
	wait.For(t, 10*time.Second, "the sweep", func() bool { return len(members()) == 0 })
	natsbroker.Pause(bs[0].(*natsbroker.Broker), false)
	wait.For(t, 10*time.Second, "the rejoin", func() bool { m := members(); return len(m) == 1 && m[0] == want })
	if st := hubs[0].Stats(); st.PresenceRefused != 0 {
		t.Errorf("%d joins refused, want none (a rejoin is none)", st.PresenceRefused)
	}
	c.Close()
	wait.For(t, 10*time.Second, "the leave", func() bool { return len(members()) == 0 })
}

// TestPresenceCompaction: the tombstone of a leave that is out of the
// log's retention goes, the members stay, and the snapshot is unchanged.
func TestPresenceCompaction(t *testing.T) {
	nc, name := conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 5, Idle: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	natsbroker.Pause(b, true)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	member := func(c string) hub.PresenceChange {
		return hub.PresenceChange{Topic: "room", Client: c, Join: true, Member: json.RawMessage(`{"client":"` + c + `","user":null,"info":null}`)}
	}
	if got, err := b.ChangePresence(ctx, []hub.PresenceChange{member("a.1"), member("b.2"), {Topic: "room", Client: "a.1"}}); err != nil || len(got) != 3 {
		t.Fatalf("changes = %d, %v", len(got), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, name+"_PRES")
	if err != nil {
		t.Fatal(err)
	}
	members := func() []string {
		info, err := s.Info(ctx, jetstream.WithSubjectFilter(natstest.Subjects(name)+"_pres.m.>"))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for subj := range info.State.Subjects {
			out = append(out, subj[strings.LastIndex(subj, "_pres.m.")+len("_pres.m."):])
		}
		return out
	}
	wait.For(t, 10*time.Second, "a's tombstone and b's join", func() bool { return len(members()) == 2 })
	// The leave is still in the log: compaction keeps its tombstone.
	if err := b.Compact(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := members(); len(got) != 2 {
		t.Fatalf("after compacting with the leave in the log: %v", got)
	}
	for range 6 {
		if _, err := b.Publish(ctx, []hub.Draft{{Topic: "other", Type: hub.DefaultType, Data: json.RawMessage(`1`)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Compact(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if got := members(); len(got) != 2 {
		t.Fatalf("after compacting a young tombstone: %v", got)
	}
	if err := b.Compact(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := members(); len(got) != 1 || got[0] != "b~2.room" {
		t.Fatalf("after compacting: %v, want b's membership alone", got)
	}
	p, err := b.Presence(ctx, "room")
	if err != nil || len(p.Members) != 1 || !strings.Contains(string(p.Members[0]), `"b.2"`) {
		t.Fatalf("presence = %v, %v", p, err)
	}
}

// TestPresenceAfterPendingBatch: a join applies on a topic whose last
// event is in a batch not yet complete (its publisher died half way), and
// a repeated join does not.
func TestPresenceAfterPendingBatch(t *testing.T) {
	nc, name := conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Idle: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	join := hub.PresenceChange{Topic: "room", Client: "a", Join: true, Member: json.RawMessage(`{"client":"a","user":null,"info":null}`)}
	if got, err := b.ChangePresence(ctx, []hub.PresenceChange{join}); err != nil || len(got) != 1 {
		t.Fatalf("join = %d, %v", len(got), err)
	}
	m := nats.NewMsg(natstest.Subjects(name) + ".room")
	m.Header.Set("Herald-Time", "1")
	m.Header.Set("Herald-Batch", "dead 0 2")
	m.Data = []byte(`1`)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	got, err := b.ChangePresence(ctx, []hub.PresenceChange{join, {Topic: "room", Client: "b", Join: true, Member: json.RawMessage(`{"client":"b","user":null,"info":null}`)}})
	if err != nil || len(got) != 1 || got[0].Key != "b" {
		t.Fatalf("joins after a pending batch = %v, %v; want b's alone", got, err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the joins took %v", d)
	}
}

// TestPresenceRetryReturnsAppended: a batch that fails after appending a
// join appends nothing more when it is run again, and the run again
// returns that join (the hub would count it as refused otherwise).
func TestPresenceRetryReturnsAppended(t *testing.T) {
	b, _, _, col := open(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	join := hub.PresenceChange{Topic: "room", Client: "a", Join: true, Member: json.RawMessage(`{"client":"a","user":null,"info":null}`)}
	bad := hub.PresenceChange{Topic: "not a subject", Client: "a", Join: true, Member: join.Member}
	if _, err := b.ChangePresence(ctx, []hub.PresenceChange{join, bad}); err == nil {
		t.Fatal("a change on a topic that is no subject went through")
	}
	got, err := b.ChangePresence(ctx, []hub.PresenceChange{join})
	if err != nil || len(got) != 1 || got[0].Type != hub.TypeJoin || got[0].Key != "a" {
		t.Fatalf("the retry = %v, %v; want the join appended by the failed call", got, err)
	}
	if got, err := b.ChangePresence(ctx, []hub.PresenceChange{join}); err != nil || len(got) != 0 {
		t.Fatalf("a repeated join = %v, %v; want nothing", got, err)
	}
	wait.For(t, 10*time.Second, "the join's delivery", func() bool { return len(col.snapshot()) >= 1 })
	if all := col.snapshot(); len(all) != 1 {
		t.Errorf("delivered %d events, want the one join", len(all))
	}
}

// TestPresenceBusyTopic: joins and leaves go through while the topic is
// published to without pause, from the joining node and from another
// (whose events race every conditional append), each applied once.
func TestPresenceBusyTopic(t *testing.T) {
	for _, from := range []int{0, 1} {
		t.Run(map[int]string{0: "same node", 1: "other node"}[from], func(t *testing.T) {
			bs := newCluster(t, 2, brokertest.Options{})
			for _, b := range bs {
				if err := b.Start(func([]*hub.Message) {}); err != nil {
					t.Fatal(err)
				}
				defer b.Close()
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var pubs atomic.Int64
			for range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d := hub.Draft{Topic: "room", Type: hub.DefaultType, Data: json.RawMessage(`1`)}
					for ctx.Err() == nil {
						if _, err := bs[from].Publish(ctx, []hub.Draft{d}); err == nil {
							pubs.Add(1)
						}
					}
				}()
			}
			defer func() { cancel(); wg.Wait() }()
			wait.For(t, 10*time.Second, "the publishers", func() bool { return pubs.Load() > 100 })
			start, before := time.Now(), pubs.Load()
			var changes []hub.PresenceChange
			for i := range 20 {
				c := fmt.Sprintf("c%d", i)
				changes = append(changes, hub.PresenceChange{Topic: "room", Client: c, Join: true, Member: json.RawMessage(`{"client":"` + c + `"}`)})
				if i%4 == 3 {
					changes = append(changes, hub.PresenceChange{Topic: "room", Client: fmt.Sprintf("c%d", i-1)})
				}
			}
			for _, ch := range changes {
				got, err := bs[0].ChangePresence(context.Background(), []hub.PresenceChange{ch})
				if err != nil || len(got) != 1 {
					t.Fatalf("%+v = %v, %v", ch, got, err)
				}
			}
			el := time.Since(start)
			rate := float64(pubs.Load()-before) / el.Seconds()
			p, err := bs[1].Presence(context.Background(), "room")
			if err != nil || len(p.Members) != 15 {
				t.Fatalf("%d members, %v; want 15", len(p.Members), err)
			}
			t.Logf("%d joins and leaves in %v while %.0f events/s were published to the topic", len(changes), el.Round(time.Millisecond), rate)
		})
	}
}
