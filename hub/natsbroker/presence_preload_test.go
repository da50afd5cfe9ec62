package natsbroker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/hub/natsbroker"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

func presenceNode(t *testing.T, name string, maxMembers int) *natsbroker.Broker {
	t.Helper()
	nc, _ := natstest.Conn(t)
	b, err := natsbroker.New(context.Background(), natsbroker.Options{
		Conn: nc, Stream: name, Subjects: natstest.Subjects(name), Size: 10000, Idle: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if maxMembers > 0 {
		b.SetPresenceCacheMembers(maxMembers)
	}
	t.Cleanup(func() { b.Close() })
	if err := b.Start(func([]*hub.Message) {}); err != nil {
		t.Fatal(err)
	}
	return b
}

func join(topic, client string) hub.PresenceChange {
	return hub.PresenceChange{Topic: topic, Client: client, Join: true,
		Member: json.RawMessage(`{"client":"` + client + `","user":null,"info":null}`)}
}

func membersOf(t *testing.T, b *natsbroker.Broker, topic string) []string {
	t.Helper()
	p, err := b.Presence(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(p.Members))
	for i, m := range p.Members {
		out[i] = string(m)
	}
	return out
}

// TestPresencePreload: a node started after joins and leaves holds every
// topic's members, exact, including what other nodes change while it
// loads and after.
func TestPresencePreload(t *testing.T) {
	_, name := conn(t)
	a := presenceNode(t, name, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changes := []hub.PresenceChange{join("room.a", "x.1"), join("room.a", "y"), join("room.a", "z"),
		join("solo", "w"), {Topic: "room.a", Client: "y"}, {Topic: "solo", Client: "w"}}
	if _, err := a.ChangePresence(ctx, changes); err != nil {
		t.Fatal(err)
	}
	topics := []string{"room.a", "solo", "t0", "t1", "t2"}
	// Changes made while the second node starts and loads.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ch := join(fmt.Sprintf("t%d", i%3), fmt.Sprintf("c%d", i%7))
			if i%2 == 1 {
				ch = hub.PresenceChange{Topic: ch.Topic, Client: fmt.Sprintf("c%d", (i-1)%7)}
			}
			if _, err := a.ChangePresence(ctx, []hub.PresenceChange{ch}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	b := presenceNode(t, name, 0)
	natsbroker.WaitPresenceLoad(b)
	close(stop)
	wg.Wait()
	if !b.PresenceComplete() {
		t.Fatal("the second node did not load every topic's members")
	}
	same := func() bool {
		for _, topic := range topics {
			if !slices.Equal(membersOf(t, a, topic), membersOf(t, b, topic)) {
				return false
			}
		}
		return true
	}
	wait.For(t, 10*time.Second, "the same members on both nodes", same)
	if got := membersOf(t, b, "room.a"); len(got) != 2 {
		t.Errorf("room.a: %v, want x.1 and z", got)
	}
	if got := membersOf(t, b, "solo"); len(got) != 0 {
		t.Errorf("solo: %v, want none", got)
	}
	// After the load: a topic it had none of, and a leave.
	if _, err := a.ChangePresence(ctx, []hub.PresenceChange{join("new.one", "v"), {Topic: "room.a", Client: "z"}}); err != nil {
		t.Fatal(err)
	}
	topics = append(topics, "new.one")
	wait.For(t, 10*time.Second, "the later changes on the second node", func() bool {
		return len(membersOf(t, b, "new.one")) == 1 && len(membersOf(t, b, "room.a")) == 1 && same()
	})
	if !b.PresenceComplete() {
		t.Error("the second node no longer holds every topic")
	}
}

// TestPresencePreloadBound: past its bound a node loads nothing and reads
// topics as they are asked about; one that outgrows it stops taking a
// topic it does not hold for one without members. Both stay exact.
func TestPresencePreloadBound(t *testing.T) {
	_, name := conn(t)
	a := presenceNode(t, name, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := a.ChangePresence(ctx, []hub.PresenceChange{join("r1", "a"), join("r1", "b"), join("r2", "c")}); err != nil {
		t.Fatal(err)
	}
	small := presenceNode(t, name, 2)
	natsbroker.WaitPresenceLoad(small)
	if small.PresenceComplete() {
		t.Fatal("3 members loaded into a bound of 2")
	}
	if got := membersOf(t, small, "r1"); len(got) != 2 {
		t.Errorf("r1: %v", got)
	}
	fits := presenceNode(t, name, 4)
	natsbroker.WaitPresenceLoad(fits)
	if !fits.PresenceComplete() {
		t.Fatal("3 members not loaded into a bound of 4")
	}
	if _, err := a.ChangePresence(ctx, []hub.PresenceChange{join("r3", "d"), join("r3", "e")}); err != nil {
		t.Fatal(err)
	}
	wait.For(t, 10*time.Second, "the bound passed", func() bool { return !fits.PresenceComplete() })
	for topic, n := range map[string]int{"r1": 2, "r2": 1, "r3": 2} {
		if got := membersOf(t, fits, topic); len(got) != n {
			t.Errorf("%s: %v, want %d members", topic, got, n)
		}
		if got := membersOf(t, small, topic); len(got) != n {
			t.Errorf("%s on the smaller node: %v, want %d members", topic, got, n)
		}
	}
}
