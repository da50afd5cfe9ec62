package hub_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

func keyed(t testing.TB, h *hub.Hub, topic, key, data string) *hub.Message {
	t.Helper()
	msgs, err := h.Publish(context.Background(), hub.Draft{Topic: topic, Key: key, Data: []byte(data)})
	if err != nil {
		t.Fatalf("failed to publish to %s: %v", topic, err)
	}
	return msgs[0]
}

// stateOf folds a state subscription's items: the events before its first
// Synced (the state), the Synced, and the events after it. It fails t if
// the events after the Synced are not strictly ascending after its cursor.
func stateOf(t *testing.T, items []hub.Item) (state []*hub.Message, sy *testSynced, after []*hub.Message) {
	t.Helper()
	i := slices.IndexFunc(items, isSynced)
	if i < 0 {
		t.Fatalf("no synced in %s", describe(items))
	}
	sy = syncedOf(items[i])
	for _, it := range items[:i] {
		if it.Msg != nil {
			state = append(state, it.Msg)
		}
	}
	last := sy.Seq
	for _, it := range items[i+1:] {
		if it.Msg == nil {
			continue
		}
		if it.Msg.ID.Seq <= last {
			t.Fatalf("after synced at %d: event %d repeats or goes back (%s)", sy.Seq, it.Msg.ID.Seq, describe(items))
		}
		last = it.Msg.ID.Seq
		after = append(after, it.Msg)
	}
	return state, sy, after
}

// fold applies keyed events to a state by topic and key.
func fold(st map[string]*hub.Message, msgs []*hub.Message) map[string]*hub.Message {
	if st == nil {
		st = map[string]*hub.Message{}
	}
	for _, m := range msgs {
		if m.Key == "" {
			continue
		}
		if string(m.Data) == "null" {
			delete(st, m.Topic+"\n"+m.Key)
		} else {
			st[m.Topic+"\n"+m.Key] = m
		}
	}
	return st
}

// TestStateSubscribeSeam subscribes with state to a wildcard (some clients
// after a plain subscription of their own) while two goroutines publish
// keyed events, removals and unkeyed events to several topics: each client
// gets the state in cursor order, one Synced, then every matching event
// after the Synced's cursor exactly once, and the state and those events
// fold into the final state of every topic.
func TestStateSubscribeSeam(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{}), Shards: 2})
	topics := []string{"s.a", "s.b", "s.c", "o.x"}
	for i := range 30 {
		keyed(t, h, topics[i%3], fmt.Sprintf("k%d", i%7), fmt.Sprint(i))
	}
	const n = 6
	cols := make([]*collector, n)
	var wg sync.WaitGroup
	for p := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				d := hub.Draft{Topic: topics[(i+p)%4], Key: fmt.Sprintf("k%d", (i*p+i/3)%11), Data: []byte(fmt.Sprint(i))}
				switch {
				case i%13 == 5:
					d.Data = []byte("null")
				case i%17 == 3:
					d.Key = ""
				}
				if _, err := h.Publish(context.Background(), d); err != nil {
					panic(err)
				}
			}
		}()
	}
	for i := range n {
		c := newClient(t, h, "ws")
		cols[i] = collect(t, c)
		if i%2 == 1 {
			subscribe(t, c, hub.SubscribeRequest{Patterns: pats("o.x")})
		}
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("s.*"), State: true, Synced: syncedFrame(fmt.Sprint(i))})
	}
	wg.Wait()
	final := map[string]*hub.Message{}
	for _, topic := range topics[:3] {
		st, err := h.State(context.Background(), topic)
		if err != nil {
			t.Fatal(err)
		}
		fold(final, st.Events)
	}
	hist := history(t, h)
	for i, col := range cols {
		var last uint64 // the last event the client wants
		for _, m := range hist {
			if m.Topic[0] == 's' || i%2 == 1 {
				last = m.ID.Seq
			}
		}
		items := col.waitFor(t, "every event", func(items []hub.Item, _ error) bool {
			j := slices.IndexFunc(items, isSynced)
			return j >= 0 && (syncedOf(items[j]).Seq >= last ||
				slices.ContainsFunc(items[j:], func(it hub.Item) bool { return it.Msg != nil && it.Msg.ID.Seq == last }))
		})
		// The plain subscription's events: all of them, in order.
		var own []*hub.Message
		for _, it := range items {
			if it.Msg != nil && it.Msg.Topic == "o.x" {
				own = append(own, it.Msg)
			}
		}
		sy := syncedOf(items[slices.IndexFunc(items, isSynced)])
		if sy.Ref != fmt.Sprint(i) || !slices.Equal(sy.Topics, []string{"s.*"}) {
			t.Fatalf("client %d: synced %+v", i, sy)
		}
		var stateItems []hub.Item
		for _, it := range items {
			if it.Msg == nil || it.Msg.Topic != "o.x" {
				stateItems = append(stateItems, it)
			}
		}
		state, sy, after := stateOf(t, stateItems)
		for j, m := range state {
			if m.ID.Seq > sy.Seq || (j > 0 && m.ID.Seq <= state[j-1].ID.Seq) || m.Topic[0] != 's' {
				t.Fatalf("client %d: state event %d out of order or after the synced at %d", i, m.ID.Seq, sy.Seq)
			}
		}
		var wantAfter []uint64
		for _, m := range hist {
			if m.ID.Seq > sy.Seq && m.Topic[0] == 's' {
				wantAfter = append(wantAfter, m.ID.Seq)
			}
		}
		var gotAfter []uint64
		for _, m := range after {
			gotAfter = append(gotAfter, m.ID.Seq)
		}
		if !slices.Equal(gotAfter, wantAfter) {
			t.Fatalf("client %d: after the synced at %d got %v, want %v", i, sy.Seq, gotAfter, wantAfter)
		}
		got := fold(fold(nil, state), after)
		if len(got) != len(final) {
			t.Fatalf("client %d: folded %d keys, the state has %d", i, len(got), len(final))
		}
		for k, m := range final {
			if got[k] == nil || got[k].ID != m.ID {
				t.Fatalf("client %d: %q folded to %v, the state has %s", i, k, got[k], m.ID)
			}
		}
		if i%2 == 1 {
			var ownSeqs []uint64
			for _, m := range own {
				ownSeqs = append(ownSeqs, m.ID.Seq)
			}
			// In order and once each (none at all when the publishers were
			// done before this client subscribed).
			if !slices.IsSorted(ownSeqs) || len(slices.Compact(slices.Clone(ownSeqs))) != len(ownSeqs) {
				t.Fatalf("client %d: o.x events %v", i, ownSeqs)
			}
			// What comes after the synced is after its cursor, whatever
			// the subscription.
			j := slices.IndexFunc(items, isSynced)
			for _, it := range items[j+1:] {
				if it.Msg != nil && it.Msg.ID.Seq <= sy.Seq {
					t.Fatalf("client %d: event %d after the synced at %d", i, it.Msg.ID.Seq, sy.Seq)
				}
			}
		}
	}
}

// TestStateSubscribeResume: with a cursor that can be served, a state
// subscription gets no state and no synced; with one that cannot, the
// reset is followed by the state and a synced.
func TestStateSubscribeResume(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 5}), Shards: 1})
	for i := range 10 {
		keyed(t, h, "r.a", fmt.Sprintf("k%d", i%3), fmt.Sprint(i)) // state: k0@10 k1@8 k2@9
	}
	c := newClient(t, h, "ws")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("r.a"), Since: cur(h, 8), State: true, Synced: syncedFrame("")})
	m := keyed(t, h, "r.a", "k1", `"live"`)
	items := col.waitSeq(t, m.ID.Seq)
	wantSeqs(t, items, 9, 10, 11)
	if len(items) != 3 {
		t.Fatalf("a served resume got %s, want only events", describe(items))
	}

	c = newClient(t, h, "ws")
	col = collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("r.a"), Since: cur(h, 2), State: true, Synced: syncedFrame("")}) // gone
	items = col.waitFor(t, "a synced", func(items []hub.Item, _ error) bool {
		return slices.ContainsFunc(items, isSynced)
	})
	if len(items) != 5 || items[0].Reset == nil || items[0].Reset.Reason != hub.ReasonHistoryGone || !isSynced(items[4]) {
		t.Fatalf("after a cursor gone got %s, want reset, 3 state events, synced", describe(items))
	}
	wantSeqs(t, items[1:4], 9, 10, 11)
	if syncedOf(items[4]).Seq != 11 {
		t.Fatalf("synced at %d, want 11", syncedOf(items[4]).Seq)
	}
	m = keyed(t, h, "r.a", "k0", `"after"`)
	items = col.waitSeq(t, m.ID.Seq)
	if len(items) != 6 {
		t.Fatalf("got %s, want the live event after the synced", describe(items))
	}
}

// TestStateResetAll: a state subscription whose replay falls behind
// retention gets the reset, then its state again and a synced.
func TestStateResetAll(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 10}), Shards: 1, QueueBytes: 1, ReplayWait: waitTimeout})
	for i := range 20 {
		keyed(t, h, "f.a", fmt.Sprintf("k%d", i%4), fmt.Sprint(i))
	}
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("f.a"), State: true, Synced: syncedFrame("r")})
	waitClosed(t, col.woke, "the first state event") // 4 state events; 1 queued, the rest wait
	col.open()
	col.waitFor(t, "the synced", func(items []hub.Item, _ error) bool {
		return slices.ContainsFunc(items, isSynced)
	})
	// Hold the queue again and let the replay fall behind.
	c2 := newClient(t, h, "ws")
	col2 := collectGated(t, c2)
	for i := range 10 {
		keyed(t, h, "f.a", fmt.Sprintf("k%d", i%4), fmt.Sprint(i)) // 21..30
	}
	subscribe(t, c2, hub.SubscribeRequest{Patterns: pats("f.a"), Since: cur(h, 20), State: true, Synced: syncedFrame("r2")})
	waitClosed(t, col2.woke, "the replay's first event") // 21 queued, the rest waits
	for i := range 30 {
		keyed(t, h, "f.a", fmt.Sprintf("k%d", i%4), fmt.Sprint(i)) // 31..60: 21..50 fall out of retention
	}
	col2.open()
	items := col2.waitFor(t, "a reset and a synced", func(items []hub.Item, _ error) bool {
		return slices.ContainsFunc(items, isSynced)
	})
	i := slices.IndexFunc(items, func(it hub.Item) bool { return it.Reset != nil })
	if i < 0 || items[i].Reset.Cursor.Seq != 60 {
		t.Fatalf("got %s, want a reset at 60", describe(items))
	}
	wantSeqs(t, items[i+1:len(items)-1], 57, 58, 59, 60)
	if sy := syncedOf(items[len(items)-1]); sy == nil || sy.Seq != 60 || sy.Ref != "r2" {
		t.Fatalf("got %s, want the state then a synced at 60 for r2", describe(items))
	}
	// What a state subscription keeps aside goes with it: on an
	// unsubscribe, and when the client closes.
	if n := hub.StateClients(h); n != 2 {
		t.Fatalf("%d clients with state subscriptions kept, want 2", n)
	}
	c.Unsubscribe(pats("f.a"))
	c2.Close()
	if n := hub.StateClients(h); n != 0 {
		t.Fatalf("%d clients with state subscriptions kept after an unsubscribe and a close, want none", n)
	}
}

// noStateBroker is a memory broker that keeps no state, as a broker
// without keyed state answers.
type noStateBroker struct{ *hub.MemoryBroker }

func (noStateBroker) State(context.Context, []hub.Pattern) (hub.StateSnapshot, error) {
	return hub.StateSnapshot{}, hub.ErrStateUnsupported
}

// TestStateUnsupported: on a broker without state, a state subscription
// fails at once and leaves the client as it was.
func TestStateUnsupported(t *testing.T) {
	h := newHub(t, hub.Options{Broker: noStateBroker{hub.NewMemoryBroker(hub.MemoryOptions{})}, Shards: 1})
	c := newClient(t, h, "ws")
	col := collect(t, c)
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: pats("u.a"), State: true, Synced: syncedFrame("")}); err != hub.ErrStateUnsupported {
		t.Fatalf("subscribe with state: %v, want ErrStateUnsupported", err)
	}
	if ps := c.Patterns(); len(ps) != 0 {
		t.Fatalf("patterns %v after a refused subscribe", ps)
	}
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("u.a")})
	m := pub(t, h, "u.a", "1")
	col.waitSeq(t, m.ID.Seq)
}

// failingStateBroker is a memory broker whose state cannot be read, as a
// cluster broker answers when it cannot reach its server.
type failingStateBroker struct{ *hub.MemoryBroker }

func (failingStateBroker) State(_ context.Context, pats []hub.Pattern) (hub.StateSnapshot, error) {
	if len(pats) == 0 {
		return hub.StateSnapshot{}, nil
	}
	return hub.StateSnapshot{}, hub.Unavailable(context.DeadlineExceeded)
}

// TestStateUnavailable: when the state cannot be read, the client fails as
// a failed replay does (fail closed), rather than go on without its state.
func TestStateUnavailable(t *testing.T) {
	h := newHub(t, hub.Options{Broker: failingStateBroker{hub.NewMemoryBroker(hub.MemoryOptions{})}, Shards: 1})
	c := newClient(t, h, "ws")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("u.a"), State: true, Synced: syncedFrame("")})
	if err := col.waitErr(t); err != hub.ErrUnavailable {
		t.Fatalf("client ended with %v, want ErrUnavailable", err)
	}
	if items, _ := col.snapshot(); slices.ContainsFunc(items, isSynced) {
		t.Fatalf("got %s, want no synced", describe(items))
	}
}

// TestStateAfterResetOfOtherReplay: a state subscribe on a connection whose
// other replay falls behind retention while it is brought up to the
// state's position gets the reset, then the state at the reset's position
// and one synced: not also the older state it had read before.
func TestStateAfterResetOfOtherReplay(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 15}), Shards: 1, QueueBytes: 1, ReplayWait: waitTimeout})
	for i := range 20 {
		pub(t, h, "o.x", fmt.Sprint(i)) // 1..20
	}
	keyed(t, h, "s.a", "k0", "0") // 21
	keyed(t, h, "s.a", "k1", "1") // 22
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("o.x"), Since: cur(h, 10)})
	waitClosed(t, col.woke, "the replay's first event") // 11 queued, 12 waits
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("s.a"), State: true, Synced: syncedFrame("s")})
	eventually(t, "the state to be read", func() bool { return hub.Catching(c) })
	for i := range 30 {
		pub(t, h, "o.x", fmt.Sprint(i)) // 23..52: 12..37 fall out of retention
	}
	col.open()
	col.waitFor(t, "a synced", func(items []hub.Item, _ error) bool { return slices.ContainsFunc(items, isSynced) })
	m := pub(t, h, "s.a", `"live"`) // 53
	items := col.waitSeq(t, m.ID.Seq)
	n := 0
	for _, it := range items {
		if isSynced(it) {
			n++
			if sy := syncedOf(it); sy.Seq < 52 {
				t.Fatalf("synced at %d, want at the reset's position or later (%s)", sy.Seq, describe(items))
			}
		}
	}
	if n != 1 {
		t.Fatalf("%d synced in %s, want one", n, describe(items))
	}
	i := slices.IndexFunc(items, isSynced)
	state, _, after := stateOf(t, items[slices.IndexFunc(items, func(it hub.Item) bool { return it.Reset != nil })+1:])
	if len(state) != 2 || state[0].ID.Seq != 21 || state[1].ID.Seq != 22 || len(after) == 0 || after[len(after)-1] != m {
		t.Fatalf("after the reset got %s, want the state 21 22, the synced, then 53 (synced at item %d)", describe(items), i)
	}
}
