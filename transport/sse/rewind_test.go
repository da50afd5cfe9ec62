package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/rewindtest"
	"github.com/heraldpush/herald/transport/sse"
)

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
			p := rewindtest.Publish(t, f.hub, topics, 300)
			defer p.Wait()
			lo := rewindtest.Head(t, f.hub)
			s := f.open(pats, nil, "rewind", fmt.Sprint(n))
			rewindtest.Receive(t, f.hub, p, pats, n, lo, func() uint64 { return seqOf(t, s.nextEvent().ID) })
		})
	}
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
			got := s.nextEvent().ID
			// Without a rewind the stream is live from the subscribe on, and
			// events published before it may still be on their way to it.
			for tc.rewind == "0" && got != live.ID.String() && seqOf(t, got) < live.ID.Seq {
				got = s.nextEvent().ID
			}
			if got != live.ID.String() {
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
