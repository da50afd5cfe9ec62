package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
	"github.com/heraldpush/herald/web"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type reply struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, c *http.Client, url, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, strings.TrimSpace(string(b))}
}

// startHerald runs Herald in process, as herald serve would with
// --action-upstream actionsURL (for the todo. types) and --cors-origins:
// the HTTP API, both transports, and /herald.js. It returns Herald's URL.
func startHerald(t *testing.T, actionsURL string, corsOrigins []string) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{})
	svc, err := action.New(action.Options{Hub: h, Store: st, Echo: true, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	up, err := action.NewUpstream(action.UpstreamOptions{URL: actionsURL})
	if err != nil {
		t.Fatal(err)
	}
	svc.Handle("todo.", up)
	sseH := sse.New(sse.Options{Hub: h})
	wsH := ws.New(ws.Options{Hub: h, Actions: svc, AllowedOrigins: corsOrigins})
	herald := httptest.NewServer(httpapi.NewRouter(httpapi.Config{
		Hub: h, SSE: sseH, WS: wsH, Actions: svc, Logger: log, Client: web.JS(), CORSOrigins: corsOrigins,
	}))
	t.Cleanup(func() {
		h.Shutdown()
		herald.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sseH.Wait(ctx); err != nil {
			t.Errorf("SSE streams: %v", err)
		}
		if err := wsH.Wait(ctx); err != nil {
			t.Errorf("WebSockets: %v", err)
		}
		if err := svc.Shutdown(ctx); err != nil {
			t.Errorf("actions: %v", err)
		}
		up.CloseIdleConnections()
		if err := h.Close(ctx); err != nil {
			t.Errorf("hub: %v", err)
		}
		st.Close()
	})
	return herald.URL
}

func newTestBackend(t *testing.T) (*backend, string, *http.Client) {
	t.Helper()
	b := newBackend(slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(b)
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	return b, srv.URL + "/actions", &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// TestBackendReplaysByKey calls the backend as Herald does when it retries:
// the same Idempotency-Key gets the same answer and adds nothing.
func TestBackendReplaysByKey(t *testing.T) {
	b, url, c := newTestBackend(t)
	add := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"milk"},"attempt":1}`
	for attempt := range 2 {
		r := post(t, c, url, add, "Idempotency-Key", "k1")
		if r.status != http.StatusOK || r.body != `{"id":1,"title":"milk"}` {
			t.Fatalf("attempt %d: %d %s, want 200 {\"id\":1,\"title\":\"milk\"}", attempt+1, r.status, r.body)
		}
	}
	if r := post(t, c, url, add, "Idempotency-Key", "k2"); r.body != `{"id":2,"title":"milk"}` {
		t.Errorf("another key: %s, want a second todo", r.body)
	}
	b.mu.Lock()
	n := len(b.todos)
	b.mu.Unlock()
	if n != 2 {
		t.Errorf("%d todos, want 2", n)
	}

	for _, tc := range []struct{ body, code string }{
		{`{"type":"todo.fail","payload":null}`, "refused"},
		{`{"type":"todo.add","payload":{}}`, "invalid_title"},
		{`{"type":"todo.delete","payload":{"id":42}}`, "not_found"},
		{`{"type":"todo.rename","payload":{}}`, "unknown_type"},
	} {
		r := post(t, c, url, tc.body, "Idempotency-Key", tc.body)
		var e struct {
			Error struct{ Code, Message string }
		}
		if r.status != http.StatusUnprocessableEntity || json.Unmarshal([]byte(r.body), &e) != nil ||
			e.Error.Code != tc.code || e.Error.Message == "" {
			t.Errorf("%s: %d %s, want 422 with code %s", tc.body, r.status, r.body, tc.code)
		}
	}
	if r := post(t, c, url, `not json`); r.status != http.StatusBadRequest {
		t.Errorf("a body that is not JSON: %d %s, want 400", r.status, r.body)
	}
}

// TestWithHerald runs Herald's HTTP API, SSE and action service in process,
// with this backend as the upstream of every todo. type, and follows the
// flow a browser sees: submit over HTTP, receive the result over SSE.
func TestWithHerald(t *testing.T) {
	b, backendURL, c := newTestBackend(t)

	heraldURL := startHerald(t, backendURL, nil)

	// Subscribe first: the stream is live once its headers arrive.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, heraldURL+"/v1/events?topic=todo.*", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	type event struct {
		Topic, Type string
		Data        json.RawMessage
	}
	events := make(chan event, 8)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e event
				if json.Unmarshal([]byte(data), &e) == nil {
					select {
					case events <- e:
					case <-ctx.Done():
						return
					}
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})

	submit := func(body string, header ...string) string {
		t.Helper()
		r := post(t, c, heraldURL+"/v1/actions", body, header...)
		var a struct{ ID string }
		if r.status != http.StatusAccepted || json.Unmarshal([]byte(r.body), &a) != nil {
			t.Fatalf("submit %s: %d %s", body, r.status, r.body)
		}
		return a.ID
	}
	expect := func(id, typ, data string) {
		t.Helper()
		select {
		case e := <-events:
			if e.Topic != "todo.list" || e.Type != typ || string(e.Data) != data {
				t.Errorf("event %s %s %s\nwant  todo.list %s %s", e.Topic, e.Type, e.Data, typ, data)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for action %s", id)
		}
	}

	id := submit(`{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`, "Idempotency-Key", "add-milk")
	expect(id, "action.succeeded", `{"action_id":"`+id+`","type":"todo.add","status":"succeeded","result":{"id":1,"title":"milk"}}`)

	// Repeating the request with its key names the same action; the
	// backend is not called again.
	r := post(t, c, heraldURL+"/v1/actions", `{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`,
		"Idempotency-Key", "add-milk")
	if r.status != http.StatusOK || r.header.Get("Location") != "/v1/actions/"+id || !strings.Contains(r.body, `"status":"succeeded"`) {
		t.Errorf("repeat: %d %s %s, want 200 with the first action's status", r.status, r.header.Get("Location"), r.body)
	}

	id = submit(`{"type":"todo.delete","topic":"todo.list","payload":{"id":1}}`)
	expect(id, "action.succeeded", `{"action_id":"`+id+`","type":"todo.delete","status":"succeeded","result":{"deleted":1}}`)

	id = submit(`{"type":"todo.fail","topic":"todo.list","payload":{}}`)
	expect(id, "action.failed", `{"action_id":"`+id+`","type":"todo.fail","status":"failed","error":{"code":"refused","message":"todo.fail always fails: this is how a backend refuses an action"}}`)

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.todos) != 0 || b.next != 1 {
		t.Errorf("backend has todos %v after %d adds, want none after one add and its delete", b.todos, b.next)
	}
}
