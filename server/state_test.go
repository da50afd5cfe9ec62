package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/server"
)

// TestStateBoundsReachBroker checks that the state's flags reach every
// broker.
func TestStateBoundsReachBroker(t *testing.T) {
	for _, b := range []struct {
		name   string
		broker func(testing.TB) string
	}{
		{"memory", func(testing.TB) string { return "memory" }},
		{"redis", redistest.URL},
		{"nats", natstest.BrokerURL},
	} {
		t.Run(b.name, func(t *testing.T) {
			in := start(t, server.Config{Broker: b.broker(t), StateMaxKeys: 2})
			for _, k := range []string{"a", "b", "c"} {
				if status, body := in.Post(t, "/v1/publish", `{"topic":"doc.1","key":"`+k+`","data":1}`); status != http.StatusOK {
					t.Fatalf("publish: %d %s", status, body)
				}
			}
			status, body := in.Get(t, "/v1/topics/doc.1/state")
			if status != http.StatusOK || strings.Contains(string(body), `"key":"a"`) ||
				!strings.Contains(string(body), `"key":"b"`) || !strings.Contains(string(body), `"key":"c"`) {
				t.Fatalf("state with --state-max-keys 2: %d %s, want keys b and c", status, body)
			}
		})
	}
}

// stateFold is what a state subscriber folds: the state before its synced,
// then every event after; the synced's position; and the events after it
// in order, for the no-gap check.
type stateFold struct {
	keys   map[string]string // topic "\n" key -> data
	synced int               // position of the synced, 0 before it
	after  []int             // positions of the events after the synced
}

func (f *stateFold) event(t *testing.T, id, topic, key string, data json.RawMessage) {
	t.Helper()
	if f.synced != 0 {
		seq := seqOf(t, id)
		if len(f.after) > 0 && seq <= f.after[len(f.after)-1] || seq <= f.synced {
			t.Fatalf("event %s after the synced at %d repeats or goes back", id, f.synced)
		}
		f.after = append(f.after, seq)
	}
	if key == "" {
		return
	}
	if string(data) == "null" {
		delete(f.keys, topic+"\n"+key)
	} else {
		f.keys[topic+"\n"+key] = string(data)
	}
}

// TestStateSubscribeCluster subscribes with state on node B, over SSE and
// WebSocket, while node A publishes keyed events (and removals) to two
// topics through the shared Redis: what each subscriber folds is the
// state GET answers on B once publishing is over, and the events after
// its synced are every event of the topics after that position.
func TestStateSubscribeCluster(t *testing.T) {
	url := redistest.URL(t)
	a := start(t, server.Config{Broker: url})
	b := start(t, server.Config{Broker: url})
	for i := range 50 {
		if status, body := a.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"doc.%d","key":"k%d","data":%d}`, i%2, i%9, i)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	published := make(chan struct{})
	go func() {
		defer close(published)
		for i := range 300 {
			data := fmt.Sprint(i)
			if i%11 == 10 {
				data = "null"
			}
			if status, body := a.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"doc.%d","key":"k%d","data":%s}`, i%2, i%13, data)); status != http.StatusOK {
				t.Errorf("publish: %d %s", status, body)
				return
			}
		}
	}()

	// SSE on B.
	sseFold := &stateFold{keys: map[string]string{}}
	lines, stop := heraldtest.StreamLines(ctx, t, b.URL+"/v1/events?topic=doc.*&state=1", "")
	defer stop()
	// WebSocket on B.
	wsFold := &stateFold{keys: map[string]string{}}
	conn, _, err := websocket.Dial(ctx, strings.Replace(b.URL, "http", "ws", 1)+"/v1/ws", &websocket.DialOptions{Subprotocols: []string{"herald.v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	conn.SetReadLimit(1 << 20)
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"s","topics":["doc.*"],"state":true}`)); err != nil {
		t.Fatal(err)
	}
	<-published
	if t.Failed() {
		return
	}
	status, body := a.Post(t, "/v1/publish", `{"topic":"doc.end","data":"end"}`)
	if status != http.StatusOK {
		t.Fatalf("publish: %d %s", status, body)
	}
	var end struct{ ID string }
	_ = json.Unmarshal(body, &end)

	type envelope struct {
		ID    string          `json:"id"`
		Topic string          `json:"topic"`
		Key   string          `json:"key"`
		Data  json.RawMessage `json:"data"`
	}
	var id, event string
	for done := false; !done; {
		var l string
		select {
		case l = <-lines:
		case <-ctx.Done():
			t.Fatal("SSE: timed out before the end event")
		}
		switch {
		case strings.HasPrefix(l, "id: "):
			id = l[4:]
		case strings.HasPrefix(l, "event: "):
			event = l[7:]
		case strings.HasPrefix(l, "data: ") && event == "herald.synced":
			if sseFold.synced != 0 || l != `data: {"topics":["doc.*"]}` {
				t.Fatalf("SSE: a second synced or a wrong one: %s", l)
			}
			sseFold.synced = seqOf(t, id)
		case strings.HasPrefix(l, "data: "):
			var e envelope
			if err := json.Unmarshal([]byte(l[6:]), &e); err != nil {
				t.Fatal(err)
			}
			sseFold.event(t, e.ID, e.Topic, e.Key, e.Data)
			done = e.ID == end.ID
		}
	}
	for done := false; !done; {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("WS: %v", err)
		}
		var m struct {
			Op     string
			Ref    string
			Topics []string
			envelope
		}
		if err := json.Unmarshal(msg, &m); err != nil {
			t.Fatal(err)
		}
		switch m.Op {
		case "synced":
			if wsFold.synced != 0 || m.Ref != "s" || fmt.Sprint(m.Topics) != "[doc.*]" {
				t.Fatalf("WS: a second synced or a wrong one: %s", msg)
			}
			wsFold.synced = seqOf(t, m.ID)
		case "event":
			wsFold.event(t, m.ID, m.Topic, m.Key, m.Data)
			done = m.ID == end.ID
		}
	}

	want := map[string]string{}
	for _, topic := range []string{"doc.0", "doc.1"} {
		status, body := b.Get(t, "/v1/topics/"+topic+"/state")
		if status != http.StatusOK {
			t.Fatalf("state: %d %s", status, body)
		}
		var st struct{ Events []envelope }
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		for _, e := range st.Events {
			want[e.Topic+"\n"+e.Key] = string(e.Data)
		}
	}
	endSeq := seqOf(t, end.ID)
	for name, f := range map[string]*stateFold{"SSE": sseFold, "WS": wsFold} {
		if f.synced == 0 {
			t.Fatalf("%s: no synced", name)
		}
		if fmt.Sprint(f.keys) != fmt.Sprint(want) {
			t.Errorf("%s folded %v, the state is %v", name, f.keys, want)
		}
		// Every position after the synced up to the end holds an event of
		// doc.* (one Redis log, no holes): none is missing.
		if len(f.after) != endSeq-f.synced {
			t.Errorf("%s: %d events after the synced at %d up to %d, want %d", name, len(f.after), f.synced, endSeq, endSeq-f.synced)
		}
	}
}
