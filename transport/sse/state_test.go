package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

func publishKeyed(t testing.TB, h *hub.Hub, topic, key, data string) *hub.Message {
	t.Helper()
	msgs, err := h.Publish(context.Background(), hub.Draft{Topic: topic, Key: key, Data: []byte(data)})
	if err != nil {
		t.Fatal(err)
	}
	return msgs[0]
}

// TestStateSubscribe: state=1 on a wildcard gets each topic's latest event
// per key in cursor order, a herald.synced whose id is the state's
// position and whose data names the patterns, then live events.
func TestStateSubscribe(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	publishKeyed(t, f.hub, "d.1", "a", "1")
	publishKeyed(t, f.hub, "d.2", "a", "2")
	publish(t, f.hub, "d.1", "", `"unkeyed"`)
	publishKeyed(t, f.hub, "d.1", "b", "3")
	publishKeyed(t, f.hub, "d.1", "a", "4")
	publishKeyed(t, f.hub, "d.2", "a", "null")
	publishKeyed(t, f.hub, "x", "a", "6")
	s := f.open([]string{"d.*"}, nil, "state", "1")
	for _, want := range []uint64{4, 5} {
		if got := seqOf(t, s.nextEvent().ID); got != want {
			t.Fatalf("state event %d, want %d", got, want)
		}
	}
	fr := s.nextEvent()
	if fr.Event != sse.SyncedEvent || seqOf(t, fr.ID) != 7 || fr.Data != `{"topics":["d.*"]}` {
		t.Fatalf("got %q, want herald.synced at 7", fr.Raw)
	}
	live := publishKeyed(t, f.hub, "d.3", "z", "8")
	if got := s.nextEvent(); got.ID != live.ID.String() {
		t.Fatalf("got %q, want the live event", got.Raw)
	}
}

// TestStateResume: state=1 with a cursor that can be served sends no state
// and no synced; with a cursor that cannot, the reset is followed by the
// state and a synced.
func TestStateResume(t *testing.T) {
	f := newFixture(t, hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: 3})}, sse.Options{})
	for i := range 6 {
		publishKeyed(t, f.hub, "r", fmt.Sprint(i%2), fmt.Sprint(i))
	}
	cur := func(seq uint64) string { return hub.Cursor{Epoch: f.hub.Epoch(), Seq: seq}.String() }
	s := f.open([]string{"r"}, http.Header{"Last-Event-Id": {cur(5)}}, "state", "1")
	if got := seqOf(t, s.nextEvent().ID); got != 6 {
		t.Fatalf("resume got %d, want 6", got)
	}
	live := publish(t, f.hub, "r", "", "7")
	if got := s.nextEvent(); got.ID != live.ID.String() {
		t.Fatalf("got %q, want the live event, no synced", got.Raw)
	}
	s = f.open([]string{"r"}, http.Header{"Last-Event-Id": {cur(1)}}, "state", "1")
	if fr := s.nextEvent(); fr.Event != sse.ResetEvent {
		t.Fatalf("got %q, want a reset", fr.Raw)
	}
	for _, want := range []uint64{5, 6} {
		if got := seqOf(t, s.nextEvent().ID); got != want {
			t.Fatalf("state event %d, want %d", got, want)
		}
	}
	if fr := s.nextEvent(); fr.Event != sse.SyncedEvent || seqOf(t, fr.ID) != 7 {
		t.Fatalf("got %q, want herald.synced at 7", fr.Raw)
	}
}

// TestStateInvalid: a state other than 1 or 0, or given twice, is refused
// with 400 invalid_request; on a broker without state, state=1 is refused
// with 501 not_implemented.
func TestStateInvalid(t *testing.T) {
	f := newFixture(t, hub.Options{}, sse.Options{})
	for _, extra := range [][]string{
		{"state", "2"}, {"state", "true"}, {"state", ""}, {"state", "1", "state", "1"},
	} {
		resp, err := f.get(context.Background(), f.url([]string{"a"}, extra...), nil)
		if err != nil {
			t.Fatal(err)
		}
		assertAPIError(t, resp, http.StatusBadRequest, apierror.InvalidRequest)
		resp.Body.Close()
	}
	s := f.open([]string{"a"}, nil, "state", "0")
	m := publishKeyed(t, f.hub, "a", "k", "1")
	if got := s.nextEvent(); got.ID != m.ID.String() {
		t.Fatalf("state=0 got %q, want the live event", got.Raw)
	}

	f = newFixture(t, hub.Options{Broker: noStateBroker{hub.NewMemoryBroker(hub.MemoryOptions{})}}, sse.Options{})
	resp, err := f.get(context.Background(), f.url([]string{"a"}, "state", "1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	assertAPIError(t, resp, http.StatusNotImplemented, apierror.NotImplemented)
	resp.Body.Close()
	if n := sseClients(f.hub); n != 0 {
		t.Fatalf("%d clients left", n)
	}
}

// noStateBroker is a memory broker that answers as a broker keeping no
// state does.
type noStateBroker struct{ *hub.MemoryBroker }

func (noStateBroker) State(context.Context, []hub.Pattern) (hub.StateSnapshot, error) {
	return hub.StateSnapshot{}, hub.ErrStateUnsupported
}
