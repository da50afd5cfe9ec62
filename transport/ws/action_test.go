package ws_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/ws"
)

// actionFrame is a reply to the action op.
type actionFrame struct {
	Op       string          `json:"op"`
	Ref      json.RawMessage `json:"ref"`
	ActionID string          `json:"action_id"`
}

// newActionEnv serves an action service over WebSocket and over the HTTP
// API, both on one real server, as herald serve does.
func newActionEnv(t *testing.T, o action.Options) (*env, *action.Service) {
	t.Helper()
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatalf("hub.New: %v", err)
	}
	o.Hub = h
	st := memstore.New(memstore.Options{})
	o.Store = st
	svc, err := action.New(o)
	if err != nil {
		t.Fatalf("action.New: %v", err)
	}
	handler := ws.New(ws.Options{Hub: h, Actions: svc})
	srv := httptest.NewServer(httpapi.NewRouter(httpapi.Config{Hub: h, WS: handler, Actions: svc}))
	e := &env{
		t: t, hub: h, handler: handler, srv: srv,
		url:  "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws",
		http: &http.Client{Transport: &http.Transport{}},
	}
	t.Cleanup(func() {
		h.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := handler.Wait(ctx); err != nil {
			t.Errorf("handler.Wait: %v", err)
		}
		srv.Close()
		e.http.CloseIdleConnections()
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("actions Shutdown: %v", err)
		}
		if err := h.Close(ctx); err != nil {
			t.Errorf("hub.Close: %v", err)
		}
		st.Close()
	})
	return e, svc
}

// submit sends an action op and returns the action_id of the ok reply.
func (c *client) submit(msg string) string {
	c.t.Helper()
	c.send(msg)
	f := c.expect("ok")
	var r actionFrame
	if err := json.Unmarshal(f.raw, &r); err != nil {
		c.t.Fatal(err)
	}
	if r.ActionID == "" {
		c.t.Fatalf("reply %s: no action_id", f)
	}
	return r.ActionID
}

func TestActionOp(t *testing.T) {
	e, svc := newActionEnv(t, action.Options{Echo: true})
	c := e.dial(nil)
	c.subscribe("", "todo.*")

	c.send(`{"op":"action","ref":"a1","type":"echo","topic":"todo.list","payload":{"title":"milk"}}`)
	// The ok and the result event may arrive in either order.
	var id string
	var result frame
	for range 2 {
		f := c.recv()
		switch f.Op {
		case "ok":
			var r actionFrame
			if err := json.Unmarshal(f.raw, &r); err != nil {
				t.Fatal(err)
			}
			if string(r.Ref) != `"a1"` || r.ActionID == "" {
				t.Fatalf("reply %s: want ref \"a1\" and an action_id", f)
			}
			if want := fmt.Sprintf(`{"op":"ok","ref":"a1","action_id":%q}`, r.ActionID); string(f.raw) != want {
				t.Errorf("reply %s, want exactly %s", f, want)
			}
			id = r.ActionID
		case "event":
			result = f
		default:
			t.Fatalf("unexpected %s", f)
		}
	}
	if result.Type != action.TypeSucceeded || result.Topic != "todo.list" {
		t.Fatalf("event %s: want %s on todo.list", result, action.TypeSucceeded)
	}
	var d struct {
		ActionID string          `json:"action_id"`
		Type     string          `json:"type"`
		Status   string          `json:"status"`
		Result   json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(result.Data, &d); err != nil {
		t.Fatal(err)
	}
	if d.ActionID != id || d.Type != "echo" || d.Status != "succeeded" || string(d.Result) != `{"title":"milk"}` {
		t.Errorf("event data %s: want action %s of type echo, succeeded, with the payload as result", result.Data, id)
	}
	if a, ok, _ := svc.Get(context.Background(), id); !ok || a.Status != action.Succeeded {
		t.Errorf("Get(%s) = %+v, %v; want succeeded", id, a, ok)
	}

	// Without a ref, the reply has none; a missing payload is null.
	c.send(`{"op":"action","type":"echo","topic":"todo.other"}`)
	for range 2 {
		f := c.recv()
		if f.Op == "ok" && strings.Contains(string(f.raw), `"ref"`) {
			t.Errorf("reply %s: want no ref", f)
		}
		if f.Op == "event" && !strings.Contains(string(f.Data), `"result":null`) {
			t.Errorf("event %s: want result null for a missing payload", f)
		}
	}
}

func TestActionOpErrors(t *testing.T) {
	e, _ := newActionEnv(t, action.Options{Echo: true})
	c := e.dial(nil)
	c.submit(`{"op":"action","ref":1,"type":"echo","topic":"a.b","payload":1,"idempotency_key":"k1"}`)
	cases := []struct {
		name, msg, code, ref string
	}{
		{"unknown type", `{"op":"action","ref":2,"type":"todo.add","topic":"a.b"}`, "unknown_action", "2"},
		{"missing type", `{"op":"action","ref":3,"topic":"a.b"}`, "invalid_type", "3"},
		{"reserved type", `{"op":"action","ref":4,"type":"herald.x","topic":"a.b"}`, "invalid_type", "4"},
		{"reserved type in capitals", `{"op":"action","ref":4,"type":"Herald.x","topic":"a.b"}`, "invalid_type", "4"},
		{"bad type", `{"op":"action","ref":5,"type":"a b","topic":"a.b"}`, "invalid_type", "5"},
		{"missing topic", `{"op":"action","ref":6,"type":"echo"}`, "invalid_topic", "6"},
		{"pattern topic", `{"op":"action","ref":7,"type":"echo","topic":"a.*"}`, "invalid_topic", "7"},
		{"type not a string", `{"op":"action","ref":8,"type":1,"topic":"a.b"}`, "invalid_json", "8"},
		{"key not a string", `{"op":"action","ref":9,"type":"echo","topic":"a.b","idempotency_key":1}`, "invalid_json", "9"},
		{"key too long", `{"op":"action","ref":10,"type":"echo","topic":"a.b","idempotency_key":"` + strings.Repeat("k", 256) + `"}`, "invalid_request", "10"},
		{"key not ASCII", `{"op":"action","ref":11,"type":"echo","topic":"a.b","idempotency_key":"clé"}`, "invalid_request", "11"},
		{"key reused", `{"op":"action","ref":12,"type":"echo","topic":"a.b","payload":2,"idempotency_key":"k1"}`, "idempotency_mismatch", "12"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.send(tc.msg)
			f := c.expect("error")
			if f.Error == nil || f.Error.Code != tc.code || f.Error.Message == "" {
				t.Fatalf("reply %s: want code %q with a message", f, tc.code)
			}
			if string(f.Ref) != tc.ref {
				t.Fatalf("reply %s: want ref %s", f, tc.ref)
			}
			c.roundTrip(fmt.Sprintf("after-%d", i))
		})
	}
}

func TestActionOpQueueFull(t *testing.T) {
	e, svc := newActionEnv(t, action.Options{Workers: 1, QueueSize: 2})
	started, release := make(chan struct{}, 2), make(chan struct{})
	svc.Handle("block", action.HandlerFunc(func(ctx context.Context, _ *action.Call) (json.RawMessage, error) {
		started <- struct{}{}
		select {
		case <-release:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	defer close(release)
	c := e.dial(nil)
	c.submit(`{"op":"action","type":"block","topic":"q"}`)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first action did not start")
	}
	c.submit(`{"op":"action","type":"block","topic":"q"}`)
	c.send(`{"op":"action","ref":"full","type":"block","topic":"q"}`)
	if f := c.expect("error"); f.Error == nil || f.Error.Code != "unavailable" || string(f.Ref) != `"full"` {
		t.Fatalf("reply %s: want unavailable", f)
	}
}

func TestActionsDisabledByDefault(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := e.dial(nil)
	c.send(`{"op":"action","ref":1,"type":"echo","topic":"a.b","payload":{}}`)
	if f := c.expect("error"); f.Error == nil || f.Error.Code != "unknown_action" {
		t.Fatalf("reply %s: want unknown_action", f)
	}
}

// TestActionIdempotencySharedWithHTTP submits with one key over HTTP and
// over WebSocket: both name the same action, and it runs once.
func TestActionIdempotencySharedWithHTTP(t *testing.T) {
	e, svc := newActionEnv(t, action.Options{Echo: true})
	post := func(body, key string) (int, http.Header, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/actions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := e.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, b
	}
	status, _, body := post(`{"type":"echo","topic":"orders.1","payload":{"n":1}}`, "pay-1")
	if status != http.StatusAccepted {
		t.Fatalf("POST: status %d, body %s", status, body)
	}
	var first struct{ ID string }
	if err := json.Unmarshal(body, &first); err != nil || first.ID == "" {
		t.Fatalf("POST body %s: %v", body, err)
	}

	c := e.dial(nil)
	msg := `{"op":"action","type":"echo","topic":"orders.1","payload":{"n":1},"idempotency_key":"pay-1"}`
	if id := c.submit(msg); id != first.ID {
		t.Errorf("WS with the HTTP key: action_id %s, want %s", id, first.ID)
	}
	c.send(`{"op":"action","ref":"x","type":"echo","topic":"orders.1","payload":{"n":2},"idempotency_key":"pay-1"}`)
	if f := c.expect("error"); f.Error == nil || f.Error.Code != "idempotency_mismatch" {
		t.Errorf("WS with the HTTP key and another payload: %s, want idempotency_mismatch", f)
	}

	// And the other way round: a key first used over WebSocket.
	wsID := c.submit(`{"op":"action","type":"echo","topic":"orders.2","idempotency_key":"pay-2"}`)
	status, h, body := post(`{"type":"echo","topic":"orders.2"}`, "pay-2")
	if status != http.StatusOK || h.Get("Location") != "/v1/actions/"+wsID {
		t.Errorf("HTTP with the WebSocket key: status %d, Location %q, body %s; want 200 and the WS action", status, h.Get("Location"), body)
	}
	status, _, body = post(`{"type":"echo","topic":"orders.3"}`, "pay-2")
	if status != http.StatusUnprocessableEntity || !strings.Contains(string(body), "idempotency_mismatch") {
		t.Errorf("HTTP with the WS key and another topic: status %d, body %s", status, body)
	}
	if st := svc.Stats(); st.Accepted != 2 {
		t.Errorf("accepted %d actions, want 2 (every repeat named an existing one)", st.Accepted)
	}
}
