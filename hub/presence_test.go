package hub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// presenceOf reads a topic's members, failing the test on an error.
func presenceOf(t testing.TB, h *hub.Hub, topic string) hub.Presence {
	t.Helper()
	p, err := h.Presence(context.Background(), topic)
	if err != nil {
		t.Fatalf("failed to read the presence of %s: %v", topic, err)
	}
	return p
}

// clientsOf returns the connection IDs of a presence's members.
func clientsOf(t testing.TB, p hub.Presence) []string {
	t.Helper()
	out := make([]string, len(p.Members))
	for i, m := range p.Members {
		var v struct{ Client string }
		if err := json.Unmarshal(m, &v); err != nil {
			t.Fatalf("member %s is not JSON: %v", m, err)
		}
		out[i] = v.Client
	}
	return out
}

func presenceEvents(items []hub.Item) []*hub.Message {
	var out []*hub.Message
	for _, it := range items {
		if it.Msg != nil && it.Msg.IsPresence() {
			out = append(out, it.Msg)
		}
	}
	return out
}

// A member joins when it subscribes with presence and leaves when it
// unsubscribes or closes; a watcher with presence events sees both, with
// the member as data, and one without sees neither.
func TestPresenceJoinLeave(t *testing.T) {
	h := newHub(t, hub.Options{})
	watcher := newClient(t, h, "test")
	subscribe(t, watcher, hub.SubscribeRequest{Patterns: pats("room.1"), PresenceEvents: true})
	wcol := collect(t, watcher)
	plain := newClient(t, h, "test")
	subscribe(t, plain, hub.SubscribeRequest{Patterns: pats("room.1")})
	pcol := collect(t, plain)

	a := newClient(t, h, "test")
	subscribe(t, a, hub.SubscribeRequest{Patterns: pats("room.1", "room.2"), Presence: true, User: "ann", Info: json.RawMessage(`{"name": "Ann"}`)})
	b := newClient(t, h, "test")
	subscribe(t, b, hub.SubscribeRequest{Patterns: pats("room.1"), Presence: true})

	items := wcol.waitFor(t, "two joins", func(items []hub.Item, _ error) bool { return len(presenceEvents(items)) == 2 })
	ev := presenceEvents(items)
	wantA := fmt.Sprintf(`{"client":"%s","user":"ann","info":{"name":"Ann"}}`, a.ConnID())
	wantB := fmt.Sprintf(`{"client":"%s","user":null,"info":null}`, b.ConnID())
	for i, want := range []struct{ key, data string }{{a.ConnID(), wantA}, {b.ConnID(), wantB}} {
		if ev[i].Type != hub.TypeJoin || ev[i].Key != want.key || string(ev[i].Data) != want.data {
			t.Errorf("event %d = %s %s %s, want herald.join %s %s", i, ev[i].Type, ev[i].Key, ev[i].Data, want.key, want.data)
		}
	}
	p := presenceOf(t, h, "room.1")
	if p.Clients != 2 || p.Users != 1 || strings.Join(clientsOf(t, p), ",") != a.ConnID()+","+b.ConnID() {
		t.Errorf("presence = %+v %s, want a and b, 1 user", p, p.Members)
	}
	if p.Last.Seq != ev[1].ID.Seq {
		t.Errorf("presence at %d, want %d (the last join)", p.Last.Seq, ev[1].ID.Seq)
	}

	a.Unsubscribe(pats("room.1"))
	b.Close()
	items = wcol.waitFor(t, "two leaves", func(items []hub.Item, _ error) bool { return len(presenceEvents(items)) == 4 })
	ev = presenceEvents(items)
	if ev[2].Type != hub.TypeLeave || string(ev[2].Data) != wantA || ev[3].Type != hub.TypeLeave || string(ev[3].Data) != wantB {
		t.Errorf("leaves = %s %s / %s %s, want the members as they joined", ev[2].Type, ev[2].Data, ev[3].Type, ev[3].Data)
	}
	if p := presenceOf(t, h, "room.1"); p.Clients != 0 || len(p.Members) != 0 {
		t.Errorf("presence after the leaves = %+v", p)
	}
	if p := presenceOf(t, h, "room.2"); p.Clients != 1 {
		t.Errorf("room.2 presence = %+v, want a still", p)
	}
	// The plain subscriber gets an ordinary event after all that, and no
	// presence event ever.
	m := pub(t, h, "room.1", `"hi"`)
	got := pcol.waitSeq(t, m.ID.Seq)
	if len(got) != 1 {
		t.Errorf("plain subscriber got %s, want only the event", describe(got))
	}
	// Nor in history.
	hist, err := h.History(context.Background(), "room.1", "", 100)
	if err != nil || len(hist) != 1 {
		t.Errorf("history = %v %v, want the one event", hist, err)
	}
}

// Presence events are replayed on resume to a subscription that asks for
// them, and skipped in replay and rewind for one that does not.
func TestPresenceReplay(t *testing.T) {
	h := newHub(t, hub.Options{})
	before := head(t, h)
	m1 := pub(t, h, "room.r", `1`)
	a := newClient(t, h, "test")
	subscribe(t, a, hub.SubscribeRequest{Patterns: pats("room.r"), Presence: true})
	eventually(t, "the join", func() bool { return presenceOf(t, h, "room.r").Clients == 1 })
	m2 := pub(t, h, "room.r", `2`)
	since := hub.Cursor{Epoch: before.Epoch, Seq: before.Last}.String()

	with := newClient(t, h, "test")
	subscribe(t, with, hub.SubscribeRequest{Patterns: pats("room.r"), Since: since, PresenceEvents: true})
	items := collect(t, with).waitSeq(t, m2.ID.Seq)
	if got := msgSeqs(items); len(got) != 3 || got[0] != m1.ID.Seq || got[2] != m2.ID.Seq || !items[1].Msg.IsPresence() {
		t.Errorf("resume with presence events = %s", describe(items))
	}
	without := newClient(t, h, "test")
	subscribe(t, without, hub.SubscribeRequest{Patterns: pats("room.r"), Since: since})
	items = collect(t, without).waitSeq(t, m2.ID.Seq)
	if got := msgSeqs(items); len(got) != 2 || got[0] != m1.ID.Seq || got[1] != m2.ID.Seq {
		t.Errorf("resume without presence events = %s", describe(items))
	}
	rw := newClient(t, h, "test")
	subscribe(t, rw, hub.SubscribeRequest{Patterns: pats("room.r"), Rewind: 2})
	items = collect(t, rw).waitSeq(t, m2.ID.Seq)
	if got := msgSeqs(items); len(got) != 2 || got[0] != m1.ID.Seq || got[1] != m2.ID.Seq {
		t.Errorf("rewind 2 without presence events = %s, want the two events", describe(items))
	}
}

func TestPresenceBadRequest(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	defer c.Close()
	for _, req := range []hub.SubscribeRequest{
		{Patterns: pats("room.*"), Presence: true},
		{Patterns: pats("room.1", "room.>"), Presence: true},
		{Patterns: pats("room.1"), Presence: true, Info: json.RawMessage(`[1]`)},
		{Patterns: pats("room.1"), Presence: true, Info: json.RawMessage(`"x"`)},
		{Patterns: pats("room.1"), Presence: true, Info: json.RawMessage(`{"a":"` + strings.Repeat("x", hub.MaxInfoBytes) + `"}`)},
	} {
		if err := c.Subscribe(req); !errors.Is(err, hub.ErrInvalidPresence) {
			t.Errorf("Subscribe(%v, info %.20s) = %v, want ErrInvalidPresence", req.Patterns, req.Info, err)
		}
	}
	if got := c.Patterns(); len(got) != 0 {
		t.Errorf("a refused subscribe left patterns %v", got)
	}
	// The client is still usable.
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("room.1"), Presence: true, Info: json.RawMessage(`{"ok":true}`)})
	eventually(t, "the join", func() bool { return presenceOf(t, h, "room.1").Clients == 1 })
}

// Past the bound of members a join is refused: the connection is not a
// member, no join or leave of it is published, and it still gets events.
func TestPresenceMaxMembers(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{PresenceMaxMembers: 2})})
	watcher := newClient(t, h, "test")
	subscribe(t, watcher, hub.SubscribeRequest{Patterns: pats("full"), PresenceEvents: true})
	wcol := collect(t, watcher)
	var cs []*hub.Client
	for range 3 {
		c := newClient(t, h, "test")
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("full"), Presence: true})
		cs = append(cs, c)
	}
	eventually(t, "the refusal", func() bool { return h.Stats().PresenceRefused == 1 })
	p := presenceOf(t, h, "full")
	if got := clientsOf(t, p); len(got) != 2 || got[0] != cs[0].ConnID() || got[1] != cs[1].ConnID() {
		t.Fatalf("members = %v, want the first two", got)
	}
	cs[2].Close()
	cs[0].Close()
	items := wcol.waitFor(t, "a leave", func(items []hub.Item, _ error) bool { return len(presenceEvents(items)) == 3 })
	m := pub(t, h, "full", `1`)
	items = wcol.waitSeq(t, m.ID.Seq)
	ev := presenceEvents(items)
	if len(ev) != 3 || ev[2].Type != hub.TypeLeave || ev[2].Key != cs[0].ConnID() {
		t.Errorf("watcher saw %s, want two joins and the first member's leave", describe(items))
	}
}

// Joins from many goroutines: the snapshot is exact at its position, so
// the snapshot plus the joins and leaves after it is the membership.
func TestPresenceExactUnderConcurrentJoins(t *testing.T) {
	h := newHub(t, hub.Options{})
	watcher := newClient(t, h, "test")
	subscribe(t, watcher, hub.SubscribeRequest{Patterns: pats("busy"), PresenceEvents: true})
	wcol := collect(t, watcher)
	const n = 200
	var wg sync.WaitGroup
	cs := make([]*hub.Client, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := h.NewClient("test")
			if err != nil {
				t.Error(err)
				return
			}
			cs[i] = c
			if err := c.Subscribe(hub.SubscribeRequest{Patterns: pats("busy"), Presence: true}); err != nil {
				t.Error(err)
			}
			if i%3 == 0 {
				c.Close()
			}
		}()
	}
	var snaps []hub.Presence
	for range 5 {
		snaps = append(snaps, presenceOf(t, h, "busy"))
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, c := range cs {
			if c != nil {
				c.Close()
			}
		}
	})
	want := n - (n+2)/3
	items := wcol.waitFor(t, "every join and leave", func(items []hub.Item, _ error) bool {
		return len(presenceEvents(items)) == n+(n+2)/3
	})
	ev := presenceEvents(items)
	for _, s := range append(snaps, presenceOf(t, h, "busy")) {
		members := map[string]bool{}
		for _, c := range clientsOf(t, s) {
			members[c] = true
		}
		for _, m := range ev {
			if m.ID.Seq <= s.Last.Seq {
				continue
			}
			if m.Type == hub.TypeJoin {
				members[m.Key] = true
			} else {
				delete(members, m.Key)
			}
		}
		if len(members) != want {
			t.Errorf("snapshot at %d + later events = %d members, want %d", s.Last.Seq, len(members), want)
		}
	}
}

// presenceAtClose is a memory broker that reads a topic's members when
// it is closed.
type presenceAtClose struct {
	*hub.MemoryBroker
	topic   string
	members int
}

func (b *presenceAtClose) Close() error {
	p, err := b.MemoryBroker.Presence(context.Background(), b.topic)
	if err == nil {
		b.members = len(p.Members)
	}
	return b.MemoryBroker.Close()
}

// Closing the hub makes the open members leave before the broker closes.
func TestPresenceLeaveAtClose(t *testing.T) {
	b := &presenceAtClose{MemoryBroker: hub.NewMemoryBroker(hub.MemoryOptions{}), topic: "bye", members: -1}
	h, err := hub.New(hub.Options{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := h.NewClient("test")
	defer c.Close()
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: pats("bye"), Presence: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the join", func() bool { return presenceOf(t, h, "bye").Clients == 1 })
	if err := h.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b.members != 0 {
		t.Errorf("members when the broker closed = %d, want 0", b.members)
	}
}

// presenceStuck is a memory broker whose ChangePresence, once stuck is
// set, answers only when its context ends: a broker that stopped
// answering. inFlight counts the calls under way.
type presenceStuck struct {
	*hub.MemoryBroker
	stuck    atomic.Bool
	inFlight atomic.Int32
}

func (b *presenceStuck) ChangePresence(ctx context.Context, changes []hub.PresenceChange) ([]*hub.Message, error) {
	b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	if b.stuck.Load() {
		<-ctx.Done()
		return nil, hub.Unavailable(ctx.Err())
	}
	return b.MemoryBroker.ChangePresence(ctx, changes)
}

// Closing the hub while its joins and leaves wait for a broker that does
// not answer ends within the close's time, and no call to the broker is
// left under way when the broker is closed.
func TestPresenceCloseWithBrokerStuck(t *testing.T) {
	b := &presenceStuck{MemoryBroker: hub.NewMemoryBroker(hub.MemoryOptions{})}
	h, err := hub.New(hub.Options{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	c, _ := h.NewClient("test")
	defer c.Close()
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: pats("stuck"), Presence: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the join", func() bool { return presenceOf(t, h, "stuck").Clients == 1 })
	b.stuck.Store(true)
	d, _ := h.NewClient("test")
	defer d.Close()
	if err := d.Subscribe(hub.SubscribeRequest{Patterns: pats("stuck"), Presence: true}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a join waiting on the broker", func() bool { return b.inFlight.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_ = h.Close(ctx)
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Close took %v with a deadline of 300ms", took)
	}
	if n := b.inFlight.Load(); n != 0 {
		t.Errorf("%d calls to the broker still under way after Close", n)
	}
}
