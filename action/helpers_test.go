package action_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/hubwatch"
)

// waitLong bounds every wait of these tests; they pass in milliseconds.
const waitLong = 10 * time.Second

func newHub(t testing.TB, queueBytes int) *hub.Hub {
	t.Helper()
	h, err := hub.New(hub.Options{QueueBytes: queueBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return h
}

// newStore returns a memory store, which the test's cleanup closes.
func newStore(t testing.TB, o memstore.Options) *memstore.Store {
	t.Helper()
	st := memstore.New(o)
	t.Cleanup(st.Close)
	return st
}

// newService starts a service on h, and on a new memory store with o.TTL
// unless o.Store is set; the test's cleanup shuts it down (before the hub
// closes and the store is closed: cleanups run last-registered first).
func newService(t testing.TB, h *hub.Hub, o action.Options) *action.Service {
	t.Helper()
	o.Hub = h
	if o.Store == nil {
		o.Store = newStore(t, memstore.Options{TTL: o.TTL})
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	s, err := action.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// testWriter sends the service's log to the test's output.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// outcome is the data of an action.succeeded or action.failed event, with
// the event's own type and topic.
type outcome struct {
	EventType string          `json:"-"`
	Topic     string          `json:"-"`
	ActionID  string          `json:"action_id"`
	Type      string          `json:"type"`
	Status    action.Status   `json:"status"`
	Result    json.RawMessage `json:"result"`
	Error     *action.Failure `json:"error"`
	keys      map[string]json.RawMessage
}

// subscriber watches "t.>" the way a transport does (hubwatch) and records
// the result events it sees.
type subscriber struct {
	w     *hubwatch.Watcher
	seen  map[string][]outcome // by action ID
	total int
}

func subscribe(t testing.TB, h *hub.Hub) *subscriber {
	t.Helper()
	return &subscriber{w: hubwatch.Watch(t, h, "t.>"), seen: make(map[string][]outcome)}
}

// pump waits until d for one batch of events, records them and returns
// them (nil when nothing arrived).
func (s *subscriber) pump(t testing.TB, d time.Duration) []outcome {
	t.Helper()
	var got []outcome
	for _, m := range s.w.Next(t, d) {
		o := outcome{EventType: m.Type, Topic: m.Topic}
		if err := json.Unmarshal(m.Data, &o); err != nil {
			t.Fatalf("event data %s: %v", m.Data, err)
		}
		if err := json.Unmarshal(m.Data, &o.keys); err != nil {
			t.Fatal(err)
		}
		s.seen[o.ActionID] = append(s.seen[o.ActionID], o)
		s.total++
		got = append(got, o)
	}
	return got
}

// await returns the first result event of action id, failing t if none
// arrives in time.
func (s *subscriber) await(t testing.TB, id string) outcome {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for len(s.seen[id]) == 0 {
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("no result event for action %s within %v", id, waitLong)
		}
		s.pump(t, left)
	}
	return s.seen[id][0]
}

// quiet drains whatever arrives within d (to prove that nothing more comes).
func (s *subscriber) quiet(t testing.TB, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for left := time.Until(deadline); left > 0; left = time.Until(deadline) {
		s.pump(t, left)
	}
}

func submit(t testing.TB, s *action.Service, req action.Request) action.Action {
	t.Helper()
	a, created, err := s.Submit(context.Background(), req)
	if err != nil {
		t.Fatalf("Submit(%+v): %v", req, err)
	}
	if !created {
		t.Fatalf("Submit(%+v) matched an earlier action %s", req, a.ID)
	}
	return a
}

func mustGet(t testing.TB, s *action.Service, id string) action.Action {
	t.Helper()
	a, ok, _ := s.Get(context.Background(), id)
	if !ok {
		t.Fatalf("Get(%s): not found", id)
	}
	return a
}

// jsonEqual compares two JSON texts by value.
func jsonEqual(t testing.TB, got, want json.RawMessage) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("not JSON: %s: %v", want, err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return string(gb) == string(wb)
}

// gate is a handler that blocks every call until released, reporting each
// call on started.
type gate struct {
	started chan *action.Call
	release chan struct{}
}

func newGate() *gate {
	return &gate{started: make(chan *action.Call, 100), release: make(chan struct{})}
}

func (g *gate) Handle(ctx context.Context, call *action.Call) (json.RawMessage, error) {
	g.started <- call
	select {
	case <-g.release:
		return json.RawMessage(`"released"`), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gate) awaitStart(t testing.TB) *action.Call {
	t.Helper()
	select {
	case c := <-g.started:
		return c
	case <-time.After(waitLong):
		t.Fatal("handler not called")
		return nil
	}
}
