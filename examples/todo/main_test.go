package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
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

// testAPIKey is Herald's --api-key when it authenticates (heraldOptions.session).
const testAPIKey = "todo-test-key"

// startHerald runs Herald in process, as herald serve would with
// --action-upstream actionsURL (for the todo. types) and --cors-origins:
// the HTTP API, both transports, and /herald.js. history, if positive,
// is how many events it retains (--history-size). With authURL, it
// authenticates as with --auth upstream --auth-upstream authURL
// --public-subscribe todo.list --api-key testAPIKey. It returns Herald's URL.
func startHerald(t *testing.T, actionsURL string, corsOrigins []string, history int, authURL string) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	var authn *auth.Authenticator
	if authURL != "" {
		u, err := auth.NewUpstream(auth.UpstreamOptions{URL: authURL, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Close)
		public, _ := hub.ParsePattern(topic)
		if authn, err = auth.New(auth.Config{Upstream: u, APIKey: testAPIKey, CookieOrigins: corsOrigins,
			PublicSubscribe: []hub.Pattern{public}}); err != nil {
			t.Fatal(err)
		}
	}
	h, err := hub.New(hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: history})})
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
	sseH := sse.New(sse.Options{Hub: h, Auth: authn})
	wsH := ws.New(ws.Options{Hub: h, Actions: svc, AllowedOrigins: corsOrigins, Auth: authn})
	herald := httptest.NewServer(httpapi.NewRouter(httpapi.Config{
		Hub: h, SSE: sseH, WS: wsH, Actions: svc, Logger: log, Client: web.JS(), CORSOrigins: corsOrigins, Auth: authn,
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

// todoApp is the example running against an in-process Herald.
type todoApp struct {
	b      *backend
	page   string // the backend's URL: the page, and /actions
	herald string // Herald's URL
	api    *heraldAPI
	c      *http.Client
}

// heraldOptions are how startTodo runs Herald.
type heraldOptions struct {
	cors    bool // --cors-origins lists the page's origin
	history int  // events retained; 0: the default
	// session: Herald asks the backend's /herald/auth what the page's
	// cookie session may do (and the backend publishes with testAPIKey).
	session bool
}

// startTodo runs the backend with the seed to-dos and a Herald whose
// action upstream it is, and syncs Herald's copy of the list, as the
// command does on start.
func startTodo(t *testing.T, o heraldOptions, seed ...string) *todoApp {
	t.Helper()
	b := newBackend(slog.New(slog.DiscardHandler))
	b.seed(seed...)
	srv := httptest.NewServer(b)
	tr := &http.Transport{}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		srv.Close()
	})
	var origins []string
	if o.cors {
		origins = []string{srv.URL}
	}
	authURL, key := "", ""
	if o.session {
		authURL, key = srv.URL+"/herald/auth", testAPIKey
	}
	heraldURL := startHerald(t, srv.URL+"/actions", origins, o.history, authURL)
	api := newHeraldAPI(heraldURL, key)
	t.Cleanup(api.client.CloseIdleConnections)
	b.setHerald(heraldURL, api)
	if _, err := b.sync(context.Background()); err != nil {
		t.Fatalf("sync: %v", err)
	}
	return &todoApp{b: b, page: srv.URL, herald: heraldURL, api: api, c: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// state is Herald's copy of the list, as "key=data" sorted by key.
func (a *todoApp) state(t *testing.T) string {
	t.Helper()
	st, err := a.api.state(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for k, v := range st {
		out = append(out, k+"="+string(v))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// TestBackendReplaysByKey calls the backend as Herald does when it retries:
// the same Idempotency-Key gets the same answer and adds nothing.
func TestBackendReplaysByKey(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	b, url, c := app.b, app.page+"/actions", app.c
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
	if got, want := app.state(t), `1={"id":1,"title":"milk"} 2={"id":2,"title":"milk"}`; got != want {
		t.Errorf("Herald's copy of the list: %s, want %s", got, want)
	}
}

// TestHeraldUnreachable runs actions while the backend cannot publish to
// Herald: each answers 503, which Herald retries, and changes nothing, so
// that the retry, once Herald is back, is not a repeat.
func TestHeraldUnreachable(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk")
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	app.b.setHerald(app.herald, newHeraldAPI(dead.URL, ""))
	url := app.page + "/actions"
	add := `{"id":"act_1","type":"todo.add","topic":"todo.list","payload":{"title":"tea"},"attempt":1}`
	del := `{"id":"act_2","type":"todo.delete","topic":"todo.list","payload":{"id":1},"attempt":1}`
	for _, body := range []string{add, del} {
		r := post(t, app.c, url, body, "Idempotency-Key", body)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, `"code":"unavailable"`) {
			t.Errorf("%s without Herald: %d %s, want 503 unavailable", body, r.status, r.body)
		}
	}
	app.b.mu.Lock()
	if len(app.b.todos) != 1 || app.b.next != 1 {
		t.Errorf("after failed actions the list is %v (next %d), want only milk", app.b.todos, app.b.next)
	}
	app.b.mu.Unlock()

	app.b.setHerald(app.herald, app.api)
	if r := post(t, app.c, url, add, "Idempotency-Key", add); r.status != http.StatusOK || r.body != `{"id":2,"title":"tea"}` {
		t.Errorf("the retried add: %d %s, want 200 with id 2", r.status, r.body)
	}
	if r := post(t, app.c, url, del, "Idempotency-Key", del); r.status != http.StatusOK || r.body != `{"deleted":1}` {
		t.Errorf("the retried delete: %d %s, want 200", r.status, r.body)
	}
	if got, want := app.state(t), `2={"id":2,"title":"tea"}`; got != want {
		t.Errorf("Herald's copy of the list: %s, want %s", got, want)
	}
}

// TestSync brings a Herald whose copy of the list is wrong (a stale key, a
// changed title, a missing to-do) up to date, and then publishes nothing.
func TestSync(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk", "bread", "eggs")
	ctx := context.Background()
	if got, want := app.state(t), `1={"id":1,"title":"milk"} 2={"id":2,"title":"bread"} 3={"id":3,"title":"eggs"}`; got != want {
		t.Fatalf("after the first sync: %s, want %s", got, want)
	}
	for _, err := range []error{
		app.api.remove(ctx, 1),
		app.api.put(ctx, todo{ID: 2, Title: "butter"}),
		app.api.put(ctx, todo{ID: 9, Title: "stale"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, err := app.b.sync(ctx); err != nil || n != 3 {
		t.Errorf("sync: %d published, %v; want 3", n, err)
	}
	if got, want := app.state(t), `1={"id":1,"title":"milk"} 2={"id":2,"title":"bread"} 3={"id":3,"title":"eggs"}`; got != want {
		t.Errorf("after the sync: %s, want %s", got, want)
	}
	if n, err := app.b.sync(ctx); err != nil || n != 0 {
		t.Errorf("sync again: %d published, %v; want none", n, err)
	}
}

// TestWithHerald runs Herald's HTTP API, SSE and action service in process,
// with this backend as the upstream of every todo. type, and follows the
// flow a browser sees: submit over HTTP, receive the result over SSE.
func TestWithHerald(t *testing.T) {
	app := startTodo(t, heraldOptions{})
	b, heraldURL, c := app.b, app.herald, app.c

	// Subscribe first: the stream is live once its headers arrive.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, heraldURL+"/v1/events?topic=todo.*", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	type event struct {
		Topic, Type, Key string
		Data             json.RawMessage
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
	expect := func(id, typ, key, data string) {
		t.Helper()
		select {
		case e := <-events:
			if e.Topic != "todo.list" || e.Type != typ || e.Key != key || string(e.Data) != data {
				t.Errorf("event %s %s %q %s\nwant  todo.list %s %q %s", e.Topic, e.Type, e.Key, e.Data, typ, key, data)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no event for action %s", id)
		}
	}

	id := submit(`{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`, "Idempotency-Key", "add-milk")
	// The change, then the result: the page has the to-do before the
	// action's promise resolves.
	expect(id, "todo", "1", `{"id":1,"title":"milk"}`)
	expect(id, "action.succeeded", "", `{"action_id":"`+id+`","type":"todo.add","status":"succeeded","result":{"id":1,"title":"milk"}}`)

	// Repeating the request with its key names the same action; the
	// backend is not called again.
	r := post(t, c, heraldURL+"/v1/actions", `{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`,
		"Idempotency-Key", "add-milk")
	if r.status != http.StatusOK || r.header.Get("Location") != "/v1/actions/"+id || !strings.Contains(r.body, `"status":"succeeded"`) {
		t.Errorf("repeat: %d %s %s, want 200 with the first action's status", r.status, r.header.Get("Location"), r.body)
	}

	id = submit(`{"type":"todo.delete","topic":"todo.list","payload":{"id":1}}`)
	expect(id, "todo", "1", `null`)
	expect(id, "action.succeeded", "", `{"action_id":"`+id+`","type":"todo.delete","status":"succeeded","result":{"deleted":1}}`)

	id = submit(`{"type":"todo.fail","topic":"todo.list","payload":{}}`)
	expect(id, "action.failed", "", `{"action_id":"`+id+`","type":"todo.fail","status":"failed","error":{"code":"refused","message":"todo.fail always fails: this is how a backend refuses an action"}}`)

	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.todos) != 0 || b.next != 1 {
		t.Errorf("backend has todos %v after %d adds, want none after one add and its delete", b.todos, b.next)
	}
	if got := app.state(t); got != "" {
		t.Errorf("Herald's copy of the list: %s, want it empty", got)
	}
}

// TestKeepInSync runs the command's sync loop against a Herald that lost a
// to-do (as one restarted without a shared broker loses them all): the loop
// publishes it again, and ends with its context.
func TestKeepInSync(t *testing.T) {
	app := startTodo(t, heraldOptions{}, "milk", "bread")
	if err := app.api.remove(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		app.b.keepInSync(ctx, 10*time.Millisecond)
	}()
	wait.For(t, 5*time.Second, "bread to be back in Herald's copy", func() bool {
		return app.state(t) == `1={"id":1,"title":"milk"} 2={"id":2,"title":"bread"}`
	})
	cancel()
	<-done
}
