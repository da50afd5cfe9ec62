package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// matchingSeqs returns the Seqs of the retained events matching any of ps.
func matchingSeqs(t *testing.T, h *hub.Hub, ps ...string) []uint64 {
	t.Helper()
	var pats []hub.Pattern
	for _, p := range ps {
		pats = append(pats, hub.MustPattern(p))
	}
	b, err := h.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for after := b.First - 1; ; {
		res, err := h.Broker().Read(context.Background(), hub.ReadRequest{After: after, Patterns: pats, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Messages {
			out = append(out, m.ID.Seq)
		}
		if !res.More {
			return out
		}
		after = res.Next
	}
}

func headSeq(t *testing.T, h *hub.Hub) uint64 {
	t.Helper()
	b, err := h.Bounds(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b.Last
}

// TestRewindConcurrent: rewind=N with a publisher running throughout gets
// the newest N matching events as of a moment during the subscribe, then
// every later one: the whole sequence is the history's, without a gap or
// a duplicate.
func TestRewindConcurrent(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	topics := []string{"r.a", "r.b", "x.c.d", "other"}
	for i := range 400 {
		publish(t, f.hub, topics[i%len(topics)], "", fmt.Sprint(i))
	}
	for _, n := range []int{1, 37, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			pats := []string{"r.*", "x.>"}
			firstSeen, done := make(chan struct{}), make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { // publishes until 300 events after the stream's first
				defer wg.Done()
				defer close(done)
				extra := 0
				for i := 0; extra < 300; i++ {
					if _, err := f.hub.Publish(context.Background(), hub.Draft{Topic: topics[i%len(topics)], Data: []byte("1")}); err != nil {
						t.Errorf("publish: %v", err)
						return
					}
					select {
					case <-firstSeen:
						extra++
					default:
					}
				}
			}()
			defer wg.Wait()
			lo := headSeq(t, f.hub)
			s := f.open(pats, nil, "rewind", fmt.Sprint(n))
			var got []uint64
			got = append(got, seqOf(t, s.nextEvent().ID))
			hi := headSeq(t, f.hub)
			close(firstSeen)
			var all []uint64
			for {
				if all == nil {
					select {
					case <-done:
						all = matchingSeqs(t, f.hub, pats...)
					default:
					}
				}
				if all != nil && got[len(got)-1] >= all[len(all)-1] {
					break
				}
				got = append(got, seqOf(t, s.nextEvent().ID))
			}
			i := slices.Index(all, got[0])
			if i < 0 || !slices.Equal(got, all[i:]) {
				t.Fatalf("received %v..., not the history's matching events from %d on", got[:min(len(got), 10)], got[0])
			}
			before := func(head uint64) int { return countUpTo(all[i:], head) } // matching events in [first, head]
			if before(lo) > n || before(hi) < n && i != 0 {
				t.Fatalf("rewind %d: the first event %d has %d matching events up to the head before the subscribe, %d after", n, got[0], before(lo), before(hi))
			}
			if got[len(got)-1] <= hi {
				t.Fatal("nothing arrived live")
			}
		})
	}
}

func countUpTo(seqs []uint64, head uint64) int {
	n := 0
	for _, s := range seqs {
		if s <= head {
			n++
		}
	}
	return n
}

// TestRewindQuiet: exact events on a quiet log, for wildcards, several
// patterns, more than retained, and a cursor that wins over rewind.
func TestRewindQuiet(t *testing.T) {
	topics := []string{"a.b", "a.c.d", "e", "f.g"} // event i+1 is of topics[i%4]
	var fg []uint64                                // f.g in the newest 100
	for seq := uint64(51); seq <= 150; seq++ {
		if seq%4 == 0 {
			fg = append(fg, seq)
		}
	}
	for _, tc := range []struct {
		pats   []string
		rewind string
		since  uint64 // a cursor: 0 none; in last_event_id, or Last-Event-ID with header
		header bool
		want   []uint64 // then an event of live
		live   string
	}{
		{[]string{"a.*"}, "3", 0, false, []uint64{141, 145, 149}, "a.b"},
		{[]string{"a.>", "e"}, "4", 0, false, []uint64{146, 147, 149, 150}, "a.x.y"},
		{[]string{"f.g"}, "1000", 0, false, fg, "f.g"},
		{[]string{"e"}, "0", 0, false, nil, "e"},
		{[]string{"e"}, "5", 141, false, []uint64{143, 147}, "e"},
		{[]string{"e"}, "5", 145, true, []uint64{147}, "e"},
	} {
		t.Run(fmt.Sprint(tc.pats, tc.rewind, tc.since, tc.header), func(t *testing.T) {
			f := newFixture(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 100})}, sse.Options{})
			for i := range 150 {
				publish(t, f.hub, topics[i%len(topics)], "", fmt.Sprint(i))
			}
			extra := []string{"rewind", tc.rewind}
			var hdr http.Header
			if tc.since != 0 {
				since := hub.Cursor{Epoch: f.hub.Epoch(), Seq: tc.since}.String()
				if tc.header {
					hdr = http.Header{"Last-Event-Id": {since}}
				} else {
					extra = append(extra, "last_event_id", since)
				}
			}
			s := f.open(tc.pats, hdr, extra...)
			for _, w := range tc.want {
				if got := seqOf(t, s.nextEvent().ID); got != w {
					t.Fatalf("got %d, want %d (of %v)", got, w, tc.want)
				}
			}
			// The stream is live once Subscribe returned, but the rewind's
			// events were found afterwards: publish only once they came.
			live := publish(t, f.hub, tc.live, "", "0")
			if got := s.nextEvent().ID; got != live.ID.String() {
				t.Fatalf("got %s, want the live event %s", got, live.ID)
			}
		})
	}
}

// TestRewindInvalid: a rewind that is not an integer in 0..1000 is refused
// with 400 invalid_request, with a cursor too.
func TestRewindInvalid(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	for _, extra := range [][]string{
		{"rewind", "-1"}, {"rewind", "1001"}, {"rewind", "x"}, {"rewind", "1.5"}, {"rewind", ""},
		{"rewind", "1", "rewind", "2"}, {"rewind", "x", "last_event_id", "abc-1"},
	} {
		resp, err := f.get(context.Background(), f.url([]string{"a"}, extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidRequest)
		resp.Body.Close()
	}
	if n := sseClients(f.hub); n != 0 {
		t.Fatalf("%d clients left", n)
	}
}
