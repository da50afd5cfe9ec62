package brokertest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

func join(topic, client string) hub.PresenceChange {
	return hub.PresenceChange{Topic: topic, Client: client, Join: true,
		Member: json.RawMessage(`{"client":"` + client + `","user":null,"info":{"n":"` + client + `"}}`)}
}

func leave(topic, client string) hub.PresenceChange {
	return hub.PresenceChange{Topic: topic, Client: client}
}

// members returns the connection IDs of a snapshot, sorted.
func members(t testing.TB, s hub.PresenceSnapshot) []string {
	t.Helper()
	out := make([]string, len(s.Members))
	for i, m := range s.Members {
		var v struct{ Client string }
		if err := json.Unmarshal(m, &v); err != nil {
			t.Fatalf("member %s: %v", m, err)
		}
		out[i] = v.Client
	}
	sort.Strings(out)
	return out
}

// presenceOrSkip reads a topic's members, skipping the test for a broker
// that keeps none.
func presenceOrSkip(t *testing.T, ctx context.Context, b hub.Broker, topic string) hub.PresenceSnapshot {
	t.Helper()
	s, err := b.Presence(ctx, topic)
	if errors.Is(err, hub.ErrPresenceUnsupported) {
		t.Skip("this broker keeps no presence")
	}
	if err != nil {
		t.Fatalf("failed to read presence: %v", err)
	}
	return s
}

func changePresence(t testing.TB, ctx context.Context, b hub.Broker, chs ...hub.PresenceChange) []*hub.Message {
	t.Helper()
	msgs, err := b.ChangePresence(ctx, chs)
	if err != nil {
		t.Fatalf("failed to change presence: %v", err)
	}
	return msgs
}

// membersAt replays the joins and leaves of topic in log up to seq.
func membersAt(log []*hub.Message, topic string, seq uint64) []string {
	set := map[string]bool{}
	for _, m := range log {
		if m.ID.Seq > seq {
			break
		}
		if m.Topic != topic {
			continue
		}
		switch m.Type {
		case hub.TypeJoin:
			set[m.Key] = true
		case hub.TypeLeave:
			delete(set, m.Key)
		}
	}
	out := make([]string, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// Joins and leaves are events of their topic, applied only when they
// change the membership; a leave carries the member as it joined; the
// members are apart from the state and exact at their position.
func (s *suite) testPresence(t *testing.T) {
	b, rec := s.open(t, Options{})
	ctx := ctxT(t)
	presenceOrSkip(t, ctx, b, "room")
	k := publish(t, ctx, b, hub.Draft{Topic: "room", Type: "message", Key: "k", Data: json.RawMessage(`1`)})
	msgs := changePresence(t, ctx, b, join("room", "n-1"), join("room", "n-2"), join("room", "n-1"), leave("room", "n-3"), join("other", "n-1"))
	if len(msgs) != 3 {
		t.Fatalf("ChangePresence appended %d events, want 3 (a repeated join and a leave of a non-member append nothing)", len(msgs))
	}
	for i, m := range msgs {
		if m.ID.Seq != k[0].ID.Seq+1+uint64(i) || m.Type != hub.TypeJoin {
			t.Errorf("event %d = %s %s, want a join at %d", i, m.ID, m.Type, k[0].ID.Seq+1+uint64(i))
		}
	}
	if msgs[0].Key != "n-1" || string(msgs[0].Data) != string(join("room", "n-1").Member) {
		t.Errorf("join = key %q data %s", msgs[0].Key, msgs[0].Data)
	}
	left := changePresence(t, ctx, b, leave("room", "n-1"), leave("room", "n-1"))
	if len(left) != 1 || left[0].Type != hub.TypeLeave || left[0].Key != "n-1" || string(left[0].Data) != string(join("room", "n-1").Member) {
		t.Fatalf("leave = %v, want one herald.leave of n-1 carrying its member", left)
	}
	del := rec.waitN(t, 5)
	for i, m := range append(msgs, left...) {
		sameEvent(t, del[i+1], m)
	}
	read := readAll(t, ctx, b, 0, all, 100, 0)
	if len(read) != 5 {
		t.Fatalf("the log holds %d events, want 5", len(read))
	}
	snap := presenceOrSkip(t, ctx, b, "room")
	if got := members(t, snap); strings.Join(got, ",") != "n-2" || snap.Last.Seq != left[0].ID.Seq {
		t.Errorf("presence = %v at %d, want n-2 at %d", got, snap.Last.Seq, left[0].ID.Seq)
	}
	st, err := b.State(ctx, pats("room"))
	if err == nil && len(st.Events) != 1 {
		t.Errorf("state holds %d events, want the one keyed event (joins are not state)", len(st.Events))
	}
	rec.check(t)
}

func (s *suite) testPresenceMaxMembers(t *testing.T) {
	b, _ := s.open(t, Options{PresenceMaxMembers: 2})
	ctx := ctxT(t)
	presenceOrSkip(t, ctx, b, "full")
	msgs := changePresence(t, ctx, b, join("full", "a"), join("full", "b"), join("full", "c"), join("other", "c"))
	if len(msgs) != 3 || msgs[2].Topic != "other" {
		t.Fatalf("appended %d events, want the joins of a and b and of c to another topic", len(msgs))
	}
	if got := changePresence(t, ctx, b, leave("full", "c")); len(got) != 0 {
		t.Errorf("the leave of a refused join appended %v", got)
	}
	changePresence(t, ctx, b, leave("full", "a"))
	if got := changePresence(t, ctx, b, join("full", "c")); len(got) != 1 {
		t.Errorf("a join after a leave made room appended %d events, want 1", len(got))
	}
	if got := members(t, presenceOrSkip(t, ctx, b, "full")); strings.Join(got, ",") != "b,c" {
		t.Errorf("members = %v, want b and c", got)
	}
}

// RunPresenceCluster checks presence on brokers several nodes share:
// snapshots exact at their positions while two nodes join and leave at
// once, every node seeing the same joins and leaves, and the members of a
// node that died (kill stops it as a crash would: no leaves, no clean-up)
// leaving. newNodes is as for RunCluster.
func RunPresenceCluster(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker, kill func(hub.Broker)) {
	t.Run("PresenceExactAcrossNodes", func(t *testing.T) { testPresenceAcrossNodes(t, newNodes) })
	t.Run("DeadNodeMembersLeave", func(t *testing.T) { testDeadNode(t, newNodes, kill) })
}

func startNodes(t *testing.T, bs []hub.Broker) []*recorder {
	recs := make([]*recorder, len(bs))
	for i, b := range bs {
		recs[i] = &recorder{notify: make(chan struct{}, 1), gaps: true}
		if err := b.Start(recs[i].deliver); err != nil {
			t.Fatalf("failed to start node %d: %v", i, err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("failed to close node %d: %v", i, err)
			}
		})
	}
	return recs
}

func testPresenceAcrossNodes(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker) {
	const perNode, rounds = 3, 30
	bs := newNodes(t, 2, Options{})
	recs := startNodes(t, bs)
	ctx := ctxT(t)
	var mu sync.Mutex
	var snaps []hub.PresenceSnapshot
	var wg sync.WaitGroup
	total := 0
	for n, b := range bs {
		for p := range perNode {
			total += rounds + rounds/2
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					c := fmt.Sprintf("n%d-%d-%d", n, p, r)
					chs := []hub.PresenceChange{join("hall", c)}
					if r%2 == 1 {
						chs = append(chs, leave("hall", fmt.Sprintf("n%d-%d-%d", n, p, r-1)))
					}
					if _, err := b.ChangePresence(ctx, chs); err != nil {
						t.Errorf("node %d: %v", n, err)
						return
					}
					s, err := b.Presence(ctx, "hall")
					if err != nil {
						t.Errorf("node %d: %v", n, err)
						return
					}
					mu.Lock()
					snaps = append(snaps, s)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	var first []*hub.Message
	for i, rec := range recs {
		del := rec.waitN(t, total)
		if len(del) != total {
			t.Fatalf("node %d delivered %d joins and leaves, want %d", i, len(del), total)
		}
		for j, m := range del {
			if first != nil && (first[j].ID != m.ID || first[j].Key != m.Key || first[j].Type != m.Type) {
				t.Fatalf("nodes disagree at %d: %s %s %s vs %s %s %s", j, first[j].ID, first[j].Type, first[j].Key, m.ID, m.Type, m.Key)
			}
		}
		first = del
		rec.check(t)
	}
	for _, s := range snaps {
		if got, want := members(t, s), membersAt(first, "hall", s.Last.Seq); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Fatalf("snapshot at %d has %d members, the log up to it %d", s.Last.Seq, len(got), len(want))
		}
	}
	if got := members(t, presenceOrSkip(t, ctx, bs[1], "hall")); len(got) != 2*perNode*(rounds/2) {
		t.Errorf("%d members at the end, want %d", len(got), 2*perNode*(rounds/2))
	}
}

// sweeper is implemented by brokers whose nodes take turns to sweep (the
// test binaries of redisbroker and natsbroker): Sweeps reports whether the
// node sweeps now.
type sweeper interface {
	Sweeps(ctx context.Context) bool
}

// testDeadNode kills the node that sweeps, when the broker says which one
// it is: its members must still leave, swept by a node that takes over.
func testDeadNode(t *testing.T, newNodes func(t *testing.T, n int, o Options) []hub.Broker, kill func(hub.Broker)) {
	bs := newNodes(t, 3, Options{NodeTTL: 600 * time.Millisecond})
	recs := startNodes(t, bs)
	ctx := ctxT(t)
	d := 0
	if _, ok := bs[0].(sweeper); ok {
		d = -1
		deadline := time.Now().Add(waitTimeout)
		for d < 0 {
			for i, b := range bs {
				if b.(sweeper).Sweeps(ctx) {
					d = i
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("no node took the sweep lease")
			}
			time.Sleep(20 * time.Millisecond) // polling the broker with a deadline
		}
	}
	a, c := (d+1)%3, (d+2)%3
	dead := changePresence(t, ctx, bs[d], join("lobby", "dead-1"), join("lobby", "dead-2"), join("side", "dead-1"))
	alive := changePresence(t, ctx, bs[a], join("lobby", "live-1"))
	if len(dead) != 3 || len(alive) != 1 {
		t.Fatalf("joins appended %d and %d events", len(dead), len(alive))
	}
	kill(bs[d])
	start := time.Now()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := members(t, presenceOrSkip(t, ctx, bs[a], "lobby"))
		side := members(t, presenceOrSkip(t, ctx, bs[a], "side"))
		if strings.Join(got, ",") == "live-1" && len(side) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("members of lobby %v and side %v long after the node died", got, side)
		}
		time.Sleep(20 * time.Millisecond) // polling the broker with a deadline
	}
	t.Logf("the dead node's members left %v after it stopped (heartbeat TTL 600ms)", time.Since(start).Round(time.Millisecond))
	// Each member left exactly once, on both live nodes.
	for _, i := range []int{a, c} {
		del := recs[i].waitN(t, 7)
		leaves := map[string]int{}
		for _, m := range del {
			if m.Type == hub.TypeLeave {
				leaves[m.Topic+"/"+m.Key]++
			}
		}
		if len(leaves) != 3 || leaves["lobby/dead-1"] != 1 || leaves["lobby/dead-2"] != 1 || leaves["side/dead-1"] != 1 {
			t.Errorf("node %d saw leaves %v, want one of each of the dead node's members", i, leaves)
		}
	}
	if s, ok := bs[a].(sweeper); ok && !s.Sweeps(ctx) && !bs[c].(sweeper).Sweeps(ctx) {
		t.Error("no live node holds the sweep lease")
	}
}
