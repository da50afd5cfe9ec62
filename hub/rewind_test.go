package hub_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// matching returns the Seqs of the events of hist that match any of ps.
func matching(hist []*hub.Message, ps []hub.Pattern) []uint64 {
	var out []uint64
	for _, m := range hist {
		for _, p := range ps {
			if p.Match(m.Topic) {
				out = append(out, m.ID.Seq)
				break
			}
		}
	}
	return out
}

// newestFrom is the position the newest n of the matching Seqs follow.
func newestFrom(seqs []uint64, n int) uint64 {
	switch {
	case len(seqs) == 0:
		return 0
	case n == 0:
		return seqs[len(seqs)-1]
	case len(seqs) <= n:
		return seqs[0] - 1
	}
	return seqs[len(seqs)-n] - 1
}

// TestRewind subscribes with a rewind on a quiet log: the client gets
// exactly the newest N matching events, oldest first, then the live ones.
func TestRewind(t *testing.T) {
	topics := []string{"a.x", "a.y", "b.z", "c.d.e", "a.x.deep"}
	for _, tc := range []struct {
		name   string
		pats   []string
		rewind int
		size   int // the memory broker's retention; 0: default
	}{
		{"exact", []string{"a.x"}, 3, 0},
		{"wildcard", []string{"a.*"}, 7, 0},
		{"tail wildcard", []string{"c.>"}, 2, 0},
		{"patterns together", []string{"a.y", "c.>", "a.x.*"}, 9, 0},
		{"overlapping patterns", []string{"a.*", "a.x", ">"}, 11, 0},
		{"more than retained", []string{"a.*"}, hub.MaxRewind, 40},
		{"more than match", []string{"b.z"}, 50, 0},
		{"nothing matches", []string{"q"}, 5, 0},
		{"one", []string{">"}, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: tc.size})})
			for i := range 100 {
				pub(t, h, topics[i*7%len(topics)], strconv.Itoa(i))
			}
			ps := pats(tc.pats...)
			hist := history(t, h)
			want := matching(hist, ps)
			from := newestFrom(want, tc.rewind)
			c := newClient(t, h, "test")
			col := collect(t, c)
			subscribe(t, c, hub.SubscribeRequest{Patterns: ps, Rewind: tc.rewind})
			// The newest N are those before the head that the replay reads,
			// after Subscribe returns: publish live only once it has.
			eventually(t, "the rewind", func() bool { return !hub.Catching(c) })
			for i := range 20 {
				pub(t, h, topics[i%len(topics)], "0")
			}
			pub(t, h, "q", "0")
			// Retention may have dropped some of what the rewind gave.
			for _, m := range history(t, h) {
				if m.ID.Seq > hist[len(hist)-1].ID.Seq {
					hist = append(hist, m)
				}
			}
			all := matching(hist, ps)
			items := col.waitSeq(t, all[len(all)-1])
			verifyAfter(t, items, hist, from, ps)
		})
	}
}

// TestRewindConcurrent subscribes with rewinds while a publisher runs
// throughout: each client gets the newest N matching events at some moment
// during its subscribe, then every later one, without a gap or a duplicate.
func TestRewindConcurrent(t *testing.T) {
	h := newHub(t, hub.Options{})
	topics := []string{"t.a", "t.b", "u.a", "t.c.d"}
	for i := range 200 {
		pub(t, h, topics[i%len(topics)], "0")
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var published atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := h.Publish(context.Background(), hub.Draft{Topic: topics[i%len(topics)], Data: []byte("1")}); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
			published.Add(1)
		}
	}()
	type run struct {
		ps     []hub.Pattern
		n      int
		col    *collector
		lo, hi uint64 // the head before Subscribe and once the first event arrived
	}
	var runs []*run
	for i, tc := range []struct {
		pats []string
		n    int
	}{{[]string{"t.*"}, 10}, {[]string{"t.>", "u.a"}, 100}, {[]string{"u.a"}, 1}, {[]string{">"}, hub.MaxRewind}} {
		r := &run{ps: pats(tc.pats...), n: tc.n}
		c := newClient(t, h, fmt.Sprint("rewind", i))
		r.col = collect(t, c)
		r.lo = head(t, h).Last
		subscribe(t, c, hub.SubscribeRequest{Patterns: r.ps, Rewind: r.n})
		r.col.waitFor(t, "a first event", func(items []hub.Item, _ error) bool { return len(items) > 0 })
		r.hi = head(t, h).Last
		runs = append(runs, r)
	}
	// Let the publisher carry on past every subscribe, then stop it.
	mark := published.Load()
	eventually(t, "more publishes", func() bool { return published.Load() > mark+200 })
	stop()
	wg.Wait()
	hist := history(t, h)
	end := hist[len(hist)-1].ID.Seq
	for _, r := range runs {
		all := matching(hist, r.ps)
		items := r.col.waitSeq(t, all[len(all)-1])
		if items[0].Msg == nil {
			t.Fatalf("first item %s", describe(items[:1]))
		}
		first := items[0].Msg.ID.Seq
		// Exactly n matching events in [first, L] for a head L that the
		// log had during the subscribe.
		before := func(head uint64) int {
			n := 0
			for _, s := range all {
				if s >= first && s <= head {
					n++
				}
			}
			return n
		}
		if before(r.lo) > r.n || before(r.hi) < r.n && first != all[0] {
			t.Errorf("%v rewind %d: first event %d has %d matching events up to the head %d before the subscribe and %d up to %d after",
				r.ps, r.n, first, before(r.lo), r.lo, before(r.hi), r.hi)
		}
		verifyExact(t, items, hist, first-1, r.ps)
		if end <= r.hi {
			t.Fatal("nothing was published live")
		}
	}
}

// TestRewindWithCursor: a cursor wins over a rewind.
func TestRewindWithCursor(t *testing.T) {
	h := newHub(t, hub.Options{})
	for i := range 50 {
		pub(t, h, "a", strconv.Itoa(i))
	}
	since := hub.Cursor{Epoch: h.Epoch(), Seq: 45}
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a"), Since: since.String(), Rewind: 20})
	last := pub(t, h, "a", "0")
	items := col.waitSeq(t, last.ID.Seq)
	verifyExact(t, items, history(t, h), 45, pats("a"))

	// An unusable cursor is a reset from the head, not a rewind.
	c2 := newClient(t, h, "test")
	col2 := collect(t, c2)
	subscribe(t, c2, hub.SubscribeRequest{Patterns: pats("a"), Since: "nope", Rewind: 20})
	eventually(t, "the reset", func() bool { return !hub.Catching(c2) })
	last = pub(t, h, "a", "0")
	items = col2.waitSeq(t, last.ID.Seq)
	if len(items) != 2 || items[0].Reset == nil || items[1].Msg != last {
		t.Fatalf("got %s, want a reset then %d", describe(items), last.ID.Seq)
	}
}

// TestRewindScanBound: the backward look examines at most RewindScan
// events; matching events older than that are not rewound, and nothing
// after them is missed.
func TestRewindScanBound(t *testing.T) {
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 2 * hub.RewindScan})})
	drafts := make([]hub.Draft, 0, 1000)
	flush := func() {
		if _, err := h.Publish(context.Background(), drafts...); err != nil {
			t.Fatal(err)
		}
		drafts = drafts[:0]
	}
	// rare events at 1..5, then RewindScan-3 busy ones, then rare at the
	// end: 3 rare events lie in the newest RewindScan.
	for range 5 {
		drafts = append(drafts, hub.Draft{Topic: "rare", Data: []byte("1")})
	}
	for i := range hub.RewindScan - 3 {
		drafts = append(drafts, hub.Draft{Topic: "busy", Data: []byte("1")})
		if len(drafts) == cap(drafts) || i == hub.RewindScan-4 {
			flush()
		}
	}
	for range 3 {
		drafts = append(drafts, hub.Draft{Topic: "rare", Data: []byte("1")})
	}
	flush()
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("rare"), Rewind: 10})
	last := pub(t, h, "rare", "0")
	items := col.waitSeq(t, last.ID.Seq)
	b := head(t, h)
	verifyExact(t, items, history(t, h), b.Last-4-hub.RewindScan+3, pats("rare"))
	if got := len(items); got != 4 {
		t.Fatalf("got %d events, want the 3 in the newest %d and the live one", got, hub.RewindScan)
	}
}

// TestRewindByteBound: a rewind takes at most RewindBytes of events, the
// newest.
func TestRewindByteBound(t *testing.T) {
	h := newHub(t, hub.Options{})
	data := `"` + strings.Repeat("x", 40<<10) + `"`
	for range 2 * hub.RewindBytes / (40 << 10) {
		pub(t, h, "big", data)
	}
	hist := history(t, h)
	size := hub.ItemSize(hist[len(hist)-1])
	n := hub.RewindBytes / size
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("big"), Rewind: hub.MaxRewind})
	last := pub(t, h, "big", "1")
	items := col.waitSeq(t, last.ID.Seq)
	if len(items) != n+1 {
		t.Fatalf("got %d events, want the %d newest that fit %d bytes and the live one", len(items), n, hub.RewindBytes)
	}
	verifyExact(t, items, history(t, h), last.ID.Seq-uint64(n)-1, pats("big"))
}

// TestRewindSecondSubscribe: on a connection that has been sent events, a
// rewind never goes back before the last one sent (one order): it adds the
// newest events of its patterns after it.
func TestRewindSecondSubscribe(t *testing.T) {
	h := newHub(t, hub.Options{})
	for i := range 20 {
		pub(t, h, []string{"a", "b"}[i%2], "1")
	}
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a"), Rewind: 3})
	eventually(t, "the rewind", func() bool { return !hub.Catching(c) })
	last := pub(t, h, "a", "0") // 21
	col.waitSeq(t, last.ID.Seq)
	pub(t, h, "b", "0") // 22: after the last event sent
	settle(t, h)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Rewind: 5})
	eventually(t, "the rewind", func() bool { return !hub.Catching(c) })
	end := pub(t, h, "a", "0")
	items := col.waitSeq(t, end.ID.Seq)
	got := msgSeqs(items)
	want := []uint64{15, 17, 19, 21, 22, 23}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// TestParseRewind: the one rule both transports apply.
func TestParseRewind(t *testing.T) {
	for s, want := range map[string]int{"0": 0, "1": 1, "1000": 1000, "17": 17} {
		if n, err := hub.ParseRewind(s); err != nil || n != want {
			t.Errorf("ParseRewind(%q) = %d, %v; want %d", s, n, err, want)
		}
	}
	for _, s := range []string{"-1", "1001", "x", "1.5", "", "1e2", " 1", "99999999999999999999"} {
		if _, err := hub.ParseRewind(s); !errors.Is(err, hub.ErrInvalidRewind) {
			t.Errorf("ParseRewind(%q) = %v, want ErrInvalidRewind", s, err)
		}
	}
}

// verifyAfter checks that items are exactly the events of hist after from
// that match ps, in order.
func verifyAfter(t *testing.T, items []hub.Item, hist []*hub.Message, from uint64, ps []hub.Pattern) {
	t.Helper()
	var want []uint64
	for _, s := range matching(hist, ps) {
		if s > from {
			want = append(want, s)
		}
	}
	if got := msgSeqs(items); len(items) != len(got) || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got  %s\nwant %v", describe(items), want)
	}
}

// TestRewindNoMatchWhileTrimming: a rewind that finds fewer matching
// events than it asks for, while retention trims the front of the log
// under a busy publisher, starts its replay where matches begin (the head,
// when there are none), not at the front that is being trimmed: the
// subscriber gets its topic's events and no reset for what it never
// wanted.
func TestRewindNoMatchWhileTrimming(t *testing.T) {
	// The log is full from the start, so every publish trims its front:
	// a replay from the front falls behind at once. The log is shorter
	// than a rewind's look (rewindScan), which so reaches its front.
	// After each subscribe, 50 publishes trim the log while the replays
	// run: fewer in all than retention holds, so a replay from the head
	// cannot fall behind however late it runs.
	const size, clients, each = 4096, 50, 50
	h := newHub(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: size})})
	for range size {
		pub(t, h, "busy", "0")
	}
	var cols []*collector
	for i := range clients {
		c := newClient(t, h, fmt.Sprint("quiet", i))
		cols = append(cols, collect(t, c))
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("quiet.*"), Rewind: hub.MaxRewind})
		for range each {
			pub(t, h, "busy", "1")
		}
	}
	live := pub(t, h, "quiet.x", "2")
	for i, col := range cols {
		items := col.waitSeq(t, live.ID.Seq)
		if len(items) != 1 || items[0].Msg == nil {
			t.Fatalf("subscriber %d got %s, want only the live event", i, describe(items))
		}
	}
}
