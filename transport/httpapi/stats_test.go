package httpapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestStats: GET /v1/stats reports what happened on the node, hub and
// actions alike, and leaves actions out when they are off.
func TestStats(t *testing.T) {
	s := newServer(t, serverOptions{actions: &action.Options{Echo: true}})
	c, err := s.hub.NewClient("test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("st.>")}}); err != nil {
		t.Fatal(err)
	}
	s.mustPublish(t, "st.a", "x", `1`)
	s.mustPublish(t, "st.b", "x", `2`)
	if r := s.do(t, http.MethodPost, "/v1/actions", "application/json", `{"type":"echo","topic":"st.c","payload":3}`); r.status != http.StatusAccepted {
		t.Fatalf("action: %d %s", r.status, r.body)
	}
	type statsBody struct {
		Hub     hub.Stats     `json:"hub"`
		Actions *action.Stats `json:"actions"`
	}
	var got statsBody
	wait.For(t, 10*time.Second, "the action to finish and its result to be delivered", func() bool {
		r := s.do(t, http.MethodGet, "/v1/stats", noContentType, "")
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
			t.Fatalf("GET /v1/stats: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
		}
		got = statsBody{}
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatalf("stats body: %v: %s", err, r.body)
		}
		return got.Actions != nil && got.Actions.Succeeded == 1 && got.Hub.Delivered == 3
	})
	if got.Hub.Published != 3 || got.Hub.Clients["test"] != 1 || got.Actions.Accepted != 1 {
		t.Fatalf("stats %+v %+v", got.Hub, *got.Actions)
	}

	off := newServer(t, serverOptions{})
	r := off.do(t, http.MethodGet, "/v1/stats", noContentType, "")
	var m map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &m); err != nil || r.status != http.StatusOK {
		t.Fatalf("stats without actions: %d %v %s", r.status, err, r.body)
	}
	if _, ok := m["actions"]; ok {
		t.Fatalf("stats without actions has an actions member: %s", r.body)
	}
	if r := off.do(t, http.MethodPost, "/v1/stats", noContentType, ""); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/stats: %d", r.status)
	}
}
