package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// TestServeActionFlow runs actions through a server and an upstream
// backend: routing by type, the request the backend gets, results on SSE,
// failures, retries and the per-attempt timeout.
func TestServeActionFlow(t *testing.T) {
	up := heraldtest.NewBackend(t, func(w http.ResponseWriter, r *http.Request, c heraldtest.UpstreamCall) {
		w.Header().Set("Content-Type", "application/json")
		switch typ := strings.Trim(string(c.Body["type"]), `"`); typ {
		case "todo.add":
			var p struct{ Title string }
			_ = json.Unmarshal(c.Body["payload"], &p)
			_ = json.NewEncoder(w).Encode(map[string]any{"id": 1, "title": p.Title})
		case "todo.down":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "todo.slow":
			<-r.Context().Done() // never answers in time
		default:
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprintf(w, `{"error":{"code":"refused","message":"no %s here"}}`, typ)
		}
	})
	in := start(t, server.Config{
		ActionUpstreams:   []server.Upstream{{Type: "todo.", URL: up.URL + "/todo"}, {URL: up.URL + "/other"}},
		ActionMaxAttempts: 2, ActionTimeout: 300 * time.Millisecond,
	})
	events := in.Subscribe(t, "todo.*")

	id := in.Submit(t, `{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`, "add-milk")
	e := heraldtest.Next(t, events)
	if e.Topic != "todo.list" || e.Type != "action.succeeded" ||
		string(e.Data) != `{"action_id":"`+id+`","type":"todo.add","status":"succeeded","result":{"id":1,"title":"milk"}}` {
		t.Errorf("SSE event %+v %s: want action.succeeded on todo.list with the upstream's result", e, e.Data)
	}
	calls := up.Called()
	if len(calls) != 1 {
		t.Fatalf("upstream got %d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.Path != "/todo" || c.Key != "add-milk" || c.CT != "application/json" ||
		string(c.Body["id"]) != `"`+id+`"` || string(c.Body["type"]) != `"todo.add"` ||
		string(c.Body["topic"]) != `"todo.list"` || string(c.Body["payload"]) != `{"title":"milk"}` ||
		string(c.Body["attempt"]) != "1" || len(c.Body) != 5 {
		t.Errorf("upstream call %+v: want POST /todo with the action and its Idempotency-Key", c)
	}

	// A type outside todo. goes to the fallback URL; its 422 is the failure.
	id = in.Submit(t, `{"type":"misc.thing","topic":"todo.list"}`, "")
	e = heraldtest.Next(t, events)
	if a := in.Finished(t, id); a.Status != "failed" || a.Error == nil || a.Error.Code != "refused" ||
		a.Error.Message != "no misc.thing here" || e.Type != "action.failed" {
		t.Errorf("misc.thing: status %+v, event %s %s; want failed with the upstream's error", a, e.Type, e.Data)
	}
	calls = up.Called()
	if last := calls[len(calls)-1]; last.Path != "/other" || last.Key != id {
		t.Errorf("misc.thing went to %s with key %q; want /other with the action ID as key", last.Path, last.Key)
	}

	// echo stays built in: the upstream is not called.
	before := len(up.Called())
	id = in.Submit(t, `{"type":"echo","topic":"todo.list","payload":[1]}`, "")
	if a := in.Finished(t, id); a.Status != "succeeded" || string(a.Result) != "[1]" {
		t.Errorf("echo: %+v", a)
	}
	heraldtest.Next(t, events)
	if n := len(up.Called()); n != before {
		t.Errorf("echo called the upstream %d times", n-before)
	}

	// 5xx and timeouts are retried ActionMaxAttempts times, then fail.
	for _, typ := range []string{"todo.down", "todo.slow"} {
		id = in.Submit(t, `{"type":"`+typ+`","topic":"todo.list"}`, "")
		a := in.Finished(t, id)
		if a.Status != "failed" || a.Attempts != 2 || a.Error == nil || a.Error.Code != "upstream_unavailable" {
			t.Errorf("%s: %+v, want failed after 2 attempts with upstream_unavailable", typ, a)
		}
		heraldtest.Next(t, events)
	}
}
