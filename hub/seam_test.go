package hub_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// These tests check the SPEC's ordering promise at the hub API, where the
// history/live seam is: a client that hands back a cursor gets every later
// matching event exactly once, in strictly increasing order, with live events
// following replayed ones without a gap, while publishers keep publishing.

// group is a set of a client's patterns that share one expectation: the
// client receives exactly the group's events with Seq > T, for one T in
// [lo, hi]. lo == hi when the start is known exactly (a since on a fresh
// client); a live subscription is only known to start somewhere before the
// head of the log at the time Subscribe returned. The groups of one client
// never match the same topic, so every delivered event belongs to one group.
type group struct {
	name   string
	pats   []hub.Pattern
	lo, hi uint64
}

func (g *group) match(topic string) bool {
	for _, p := range g.pats {
		if p.Match(topic) {
			return true
		}
	}
	return false
}

// subscriber is one client of a seam test and what it was asked for.
type subscriber struct {
	name      string
	col       *collector
	groups    []*group
	allowKick bool // small queues: a slow-consumer kick is allowed; what came before it must be exact
}

// verify checks what s received against the full log hist (hist[i] has Seq
// i+1) up to end, and reports whether the client was kicked.
func (s *subscriber) verify(t *testing.T, hist []*hub.Message, end uint64) (kicked bool) {
	t.Helper()
	items, err := s.col.snapshot()
	switch {
	case err == nil:
	case errors.Is(err, hub.ErrSlowConsumer) && s.allowKick:
		kicked = true
		end = 0
		if seqs := msgSeqs(items); len(seqs) > 0 {
			end = seqs[len(seqs)-1]
		}
	default:
		t.Errorf("%s: client closed: %v", s.name, err)
		return false
	}
	delivered := map[*group][]uint64{}
	var prev uint64
	for _, it := range items {
		if it.Msg == nil {
			t.Errorf("%s: unexpected item %s", s.name, describe([]hub.Item{it}))
			continue
		}
		m := it.Msg
		if m.ID.Seq <= prev {
			t.Errorf("%s: seq %d after %d (duplicate or out of order) in %s", s.name, m.ID.Seq, prev, describe(items))
			return kicked
		}
		prev = m.ID.Seq
		if m.ID.Seq > end || hist[m.ID.Seq-1] != m {
			t.Errorf("%s: delivered seq %d is not event %d of the log", s.name, m.ID.Seq, m.ID.Seq)
			continue
		}
		var g *group
		for _, cand := range s.groups {
			if cand.match(m.Topic) {
				if g != nil {
					t.Fatalf("%s: test bug: groups %s and %s overlap on %s", s.name, g.name, cand.name, m.Topic)
				}
				g = cand
			}
		}
		if g == nil {
			t.Errorf("%s: seq %d on %s matches none of its patterns", s.name, m.ID.Seq, m.Topic)
			continue
		}
		if m.ID.Seq <= g.lo {
			t.Errorf("%s: group %s got seq %d, at or before its start %d", s.name, g.name, m.ID.Seq, g.lo)
		}
		delivered[g] = append(delivered[g], m.ID.Seq)
	}
	for _, g := range s.groups {
		got := delivered[g]
		var want []uint64
		for _, m := range hist[:end] {
			if !g.match(m.Topic) {
				continue
			}
			// From the first delivered event on, or past hi, nothing may be missing.
			if (len(got) > 0 && m.ID.Seq >= got[0]) || m.ID.Seq > g.hi {
				want = append(want, m.ID.Seq)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: group %s (start in [%d,%d], end %d):\n got  %v\n want %v", s.name, g.name, g.lo, g.hi, end, got, want)
		}
	}
	return kicked
}

// seamConfig is one variant of the concurrent seam test.
type seamConfig struct {
	queueBytes int
	gated      bool // some since-clients do not drain until well after they subscribed
	publishers int
	publishes  int // per publisher; a publish is a batch of 1 to 3 events
	steps      int
}

// seamTopics: s0.* and s1.> and s2.q and s3.a and fin never share a topic,
// which lets each client's groups be disjoint.
var seamTopics = []string{"s0.a", "s0.b", "s1.a.x", "s1.b.y", "s2.q", "s3.a"}

func runSeam(t *testing.T, cfg seamConfig, seed uint64) {
	h := newHub(t, hub.Options{
		Broker:     hub.NewMemoryBroker(hub.MemoryOptions{Size: 1 << 16}),
		Shards:     3,
		QueueBytes: cfg.queueBytes,
		ReplayWait: waitTimeout,
	})
	epoch := head(t, h).Epoch
	cursor := func(seq uint64) string { return hub.Cursor{Epoch: epoch, Seq: seq}.String() }
	r := rand.New(rand.NewPCG(seed, 99))

	progress := make(chan struct{}, 1)
	pubDone := make(chan struct{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Registered after newHub's cleanup, so it runs first: a test that
	// fails early stops its publishers before the hub closes.
	t.Cleanup(func() { close(stop); wg.Wait() })
	for p := range cfg.publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pr := rand.New(rand.NewPCG(seed, uint64(p)))
			for i := range cfg.publishes {
				select {
				case <-stop:
					return
				default:
				}
				ds := make([]hub.Draft, 1+pr.IntN(3))
				for j := range ds {
					ds[j] = hub.Draft{Topic: seamTopics[pr.IntN(len(seamTopics))], Data: fmt.Appendf(nil, `{"p":%d,"i":%d,"j":%d}`, p, i, j)}
				}
				if _, err := h.Publish(context.Background(), ds...); err != nil {
					t.Errorf("publisher %d: %v", p, err)
					return
				}
				select {
				case progress <- struct{}{}:
				default:
				}
			}
		}()
	}
	go func() { wg.Wait(); close(pubDone) }()

	waitLast := func(n uint64) uint64 {
		timer := time.NewTimer(waitTimeout)
		defer timer.Stop()
		for {
			last := head(t, h).Last
			if last >= n {
				return last
			}
			select {
			case <-progress:
			case <-pubDone:
				return head(t, h).Last
			case <-timer.C:
				t.Fatalf("publishers stalled at %d", last)
			}
		}
	}
	// A cursor somewhere in the log so far: the start, the head, or between.
	someSeq := func(last uint64) uint64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return last
		default:
			return r.Uint64N(last + 1)
		}
	}

	var subs []*subscriber
	var gated []*collector
	// sub subscribes; in small-queue runs the client may have been kicked
	// already, which verify accounts for.
	sub := func(c *hub.Client, req hub.SubscribeRequest) {
		t.Helper()
		if err := c.Subscribe(req); err != nil && (cfg.queueBytes == 0 || !errors.Is(err, hub.ErrSlowConsumer)) {
			t.Fatalf("failed to subscribe %v: %v", req.Patterns, err)
		}
	}
	start := func(name string, c *hub.Client, gate bool) *subscriber {
		s := &subscriber{name: name, allowKick: cfg.queueBytes > 0}
		if gate {
			s.col = collectGated(t, c)
			gated = append(gated, s.col)
		} else {
			s.col = collect(t, c)
		}
		subs = append(subs, s)
		return s
	}
	fin := hub.MustPattern("fin")
	var pendingB *subscriber // a live client that gets its since-pattern at the next step
	var pendingBClient *hub.Client
	minTotal := uint64(cfg.publishers * cfg.publishes)
	for step := 1; step <= cfg.steps; step++ {
		last := waitLast(minTotal * uint64(step) / uint64(cfg.steps+1))
		// Let the gated writers of earlier steps drain now, while publishers
		// still run: their replays were held with a full queue meanwhile.
		for _, col := range gated {
			col.open()
		}

		// (a) Fresh clients subscribe with since: exact from the cursor.
		for i := range 2 {
			variants := [][]string{{"s0.*", "s0.>", "*.a", "fin"}, {">"}, {"s1.a.x", "s2.q", "fin"}}
			ps := pats(variants[(step+i)%len(variants)]...)
			since := someSeq(last)
			c := newClient(t, h, "sse")
			s := start(fmt.Sprintf("a%d.%d(since %d)", step, i, since), c, cfg.gated && (step+i)%2 == 0)
			s.groups = []*group{{name: "since", pats: ps, lo: since, hi: since}}
			sub(c, hub.SubscribeRequest{Patterns: ps, Since: cursor(since)})
		}

		// (b) The live client from the previous step adds a pattern with
		// since: replayed from the later of since and what it was sent.
		if pendingB != nil {
			since := someSeq(last)
			ps := pats("s0.*")
			g := &group{name: "added since", pats: ps, lo: since}
			pendingB.groups = append(pendingB.groups, g)
			sub(pendingBClient, hub.SubscribeRequest{Patterns: ps, Since: cursor(since)})
			g.hi = max(since, head(t, h).Last)
			pendingB.name += fmt.Sprintf("+since %d", since)
		}
		{
			c := newClient(t, h, "ws")
			s := start(fmt.Sprintf("b%d(live)", step), c, false)
			ps := []hub.Pattern{hub.MustPattern("s1.>"), fin}
			g := &group{name: "live", pats: ps}
			s.groups = []*group{g}
			sub(c, hub.SubscribeRequest{Patterns: ps})
			g.hi = head(t, h).Last
			pendingB, pendingBClient = s, c
		}

		// (c) Patterns added while a long replay runs: a live one, then one
		// with its own since.
		{
			since := uint64(r.IntN(20))
			c := newClient(t, h, "ws")
			s := start(fmt.Sprintf("c%d(since %d)", step, since), c, cfg.gated && step%2 == 1)
			g1 := &group{name: "replay", pats: []hub.Pattern{hub.MustPattern("s0.>"), fin}, lo: since, hi: since}
			g2 := &group{name: "live mid-replay", pats: pats("s2.q")}
			since3 := someSeq(last)
			g3 := &group{name: "since mid-replay", pats: pats("s3.a", "s1.a.x"), lo: since3}
			s.groups = []*group{g1, g2, g3}
			sub(c, hub.SubscribeRequest{Patterns: g1.pats, Since: cursor(since)})
			sub(c, hub.SubscribeRequest{Patterns: g2.pats})
			g2.hi = head(t, h).Last
			sub(c, hub.SubscribeRequest{Patterns: g3.pats, Since: cursor(since3)})
			g3.hi = max(since3, head(t, h).Last)
		}
	}
	select {
	case <-pubDone:
	case <-time.After(waitTimeout):
		t.Fatal("publishers did not finish")
	}
	for _, col := range gated {
		col.open()
	}
	flush := pub(t, h, "fin", `"end"`)
	end := flush.ID.Seq
	for _, s := range subs {
		s.col.waitFor(t, fmt.Sprintf("%s: the final event %d", s.name, end), func(items []hub.Item, err error) bool {
			if err != nil {
				return true
			}
			seqs := msgSeqs(items)
			return len(seqs) > 0 && seqs[len(seqs)-1] >= end
		})
	}
	hist := history(t, h)
	if uint64(len(hist)) != end {
		t.Fatalf("log has %d events, want %d", len(hist), end)
	}
	kicked := 0
	for _, s := range subs {
		if s.verify(t, hist, end) {
			kicked++
		}
	}
	if st := h.Stats(); st.SlowKicked != int64(kicked) {
		t.Errorf("Stats().SlowKicked = %d, %d clients were kicked", st.SlowKicked, kicked)
	}
	if kicked > 0 {
		t.Logf("seed %d: %d of %d clients kicked as slow consumers (checked up to their last event)", seed, kicked, len(subs))
	}
}

// TestSeamConcurrent is the central ordering test: four publishers on
// several topics while clients subscribe with cursors taken mid-stream (a),
// live clients add a pattern with since (b), and clients add live and since
// patterns while their replay runs (c).
func TestSeamConcurrent(t *testing.T) {
	rounds := uint64(10)
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			runSeam(t, seamConfig{publishers: 4, publishes: 200, steps: 6}, round+1)
		})
	}
}

// TestSeamSmallQueue runs the same scenario with queues of a few dozen
// events and writers that start late, so pending buffers overflow during
// replays and the replays read the log again, and some clients are kicked.
// A kicked client must still have received an exact prefix.
func TestSeamSmallQueue(t *testing.T) {
	rounds := uint64(6)
	if testing.Short() {
		rounds = 2
	}
	for round := range rounds {
		t.Run(fmt.Sprint(round), func(t *testing.T) {
			runSeam(t, seamConfig{queueBytes: 6 << 10, gated: true, publishers: 4, publishes: 150, steps: 6}, round+100)
		})
	}
}

// TestReplayPendingOverflow is case (d) made deterministic: the replay is
// held by a full queue while four publishers publish far more than the
// pending bound, so pending must overflow; the replay then reads the log
// again. The client still gets every event once, in order.
func TestReplayPendingOverflow(t *testing.T) {
	h := newHub(t, hub.Options{Shards: 2, QueueBytes: 4 << 10, ReplayWait: waitTimeout})
	for i := range 100 {
		pub(t, h, []string{"d.x", "d.y", "e.z"}[i%3], fmt.Sprint(i))
	}
	c := newClient(t, h, "ws")
	col := collectGated(t, c)
	since := hub.Cursor{Epoch: head(t, h).Epoch, Seq: 10}
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("d.*"), Since: since.String()})
	waitClosed(t, col.woke, "the replay's first events") // it now waits for room
	var wg sync.WaitGroup
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 60 {
				_, err := h.Publish(context.Background(), hub.Draft{Topic: []string{"d.x", "d.y", "e.z"}[(p+i)%3], Data: fmt.Appendf(nil, "[%d,%d]", p, i)})
				if err != nil {
					t.Errorf("failed to publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	last := head(t, h).Last
	// Wait until the dispatchers have offered the client everything, so
	// pending has certainly overflowed (160 events of ~170 bytes >> 4 KiB).
	eventually(t, "pending to overflow", func() bool { return hub.PendingLost(c) })
	if !hub.Catching(c) {
		t.Fatal("replay finished while its queue was full")
	}
	col.open()
	items := col.waitSeq(t, lastMatching(t, h, "d.*"))
	verifyExact(t, items, history(t, h), since.Seq, pats("d.*"))

	// Now live, with publishers racing the writer; each waits for its event
	// before the next, so at most four are in flight and the queue cannot
	// overflow.
	for p := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				msgs, err := h.Publish(context.Background(), hub.Draft{Topic: []string{"d.x", "d.y"}[(p+i)%2], Data: []byte("0")})
				if err != nil {
					t.Errorf("failed to publish: %v", err)
					return
				}
				_, err = col.await("own event", func(items []hub.Item, err error) bool {
					return err != nil || slices.ContainsFunc(items, func(it hub.Item) bool { return it.Msg == msgs[0] })
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if last >= head(t, h).Last {
		t.Fatal("nothing published live")
	}
	items = col.waitSeq(t, head(t, h).Last)
	verifyExact(t, items, history(t, h), since.Seq, pats("d.*"))
}

// lastMatching is the Seq of the newest event of the log matching p.
func lastMatching(t *testing.T, h *hub.Hub, p string) uint64 {
	hist := history(t, h)
	pat := hub.MustPattern(p)
	for i := len(hist) - 1; i >= 0; i-- {
		if pat.Match(hist[i].Topic) {
			return hist[i].ID.Seq
		}
	}
	return 0
}

// verifyExact checks that items are exactly the events of hist after since
// that match ps, in order.
func verifyExact(t *testing.T, items []hub.Item, hist []*hub.Message, since uint64, ps []hub.Pattern) {
	t.Helper()
	var want []uint64
	for _, m := range hist[since:] {
		for _, p := range ps {
			if p.Match(m.Topic) {
				want = append(want, m.ID.Seq)
				break
			}
		}
	}
	for _, it := range items {
		if it.Msg == nil {
			t.Fatalf("unexpected item in %s", describe(items))
		}
	}
	if got := msgSeqs(items); !slices.Equal(got, want) {
		t.Fatalf("got  %v\nwant %v", got, want)
	}
}
