package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// postAction sends an action body with an optional Idempotency-Key.
func (s *server) postAction(t *testing.T, body string, key ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.url+"/v1/actions", strings.NewReader(body))
	if err != nil {
		t.Fatalf("failed to build request: %v", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if len(key) > 0 {
		req.Header["Idempotency-Key"] = key
	}
	return s.send(t, req)
}

func (s *server) send(t *testing.T, req *http.Request) response {
	t.Helper()
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: failed to read body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// accepted is the body of a 202.
type accepted struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	StatusURL string `json:"status_url"`
}

// mustAccept posts an action that must be accepted and returns its ID.
func (s *server) mustAccept(t *testing.T, body string, key ...string) string {
	t.Helper()
	r := s.postAction(t, body, key...)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST /v1/actions %s: status %d, body %s", body, r.status, r.body)
	}
	var a accepted
	decodeStrict(t, r.body, &a)
	return a.ID
}

// actionStatus is GET /v1/actions/{id} as a client reads it.
type actionStatus struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Topic      string          `json:"topic"`
	Status     string          `json:"status"`
	Result     json.RawMessage `json:"result"`
	Error      *action.Failure `json:"error"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at"`
	Attempts   int             `json:"attempts"`
}

func (s *server) getAction(t *testing.T, id string) actionStatus {
	t.Helper()
	r := s.do(t, http.MethodGet, "/v1/actions/"+id, noContentType, "")
	if r.status != http.StatusOK {
		t.Fatalf("GET /v1/actions/%s: status %d, body %s", id, r.status, r.body)
	}
	var a actionStatus
	decodeStrict(t, r.body, &a)
	return a
}

// waitFinished polls the action's status until it is final.
func (s *server) waitFinished(t *testing.T, id string) actionStatus {
	t.Helper()
	var a actionStatus
	wait.For(t, 10*time.Second, "action "+id+" to finish", func() bool {
		a = s.getAction(t, id)
		return a.Status == "succeeded" || a.Status == "failed"
	})
	return a
}

func echoServer(t *testing.T) *server {
	return newServer(t, serverOptions{actions: &action.Options{Echo: true}})
}

func TestActionAccepted(t *testing.T) {
	s := echoServer(t)
	start := time.Now()
	r := s.postAction(t, `{"type":"echo","topic":"todo.list","payload":{"title":"milk"},"extra":"ignored"}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var a accepted
	decodeStrict(t, r.body, &a)
	if a.ID == "" || a.Status != "pending" || a.StatusURL != "/v1/actions/"+a.ID {
		t.Fatalf("body %s: want a non-empty id, status pending and status_url /v1/actions/ID", r.body)
	}
	if loc := r.header.Get("Location"); loc != a.StatusURL {
		t.Errorf("Location = %q, want %q", loc, a.StatusURL)
	}

	got := s.waitFinished(t, a.ID)
	if got.ID != a.ID || got.Type != "echo" || got.Topic != "todo.list" || got.Status != "succeeded" ||
		string(got.Result) != `{"title":"milk"}` || got.Error != nil {
		t.Errorf("status = %+v, want echo on todo.list succeeded with the payload as result", got)
	}
	if got.CreatedAt.Before(start.Add(-time.Second)) || got.FinishedAt == nil || got.FinishedAt.Before(got.CreatedAt) {
		t.Errorf("created_at %v, finished_at %v: want about now, finished after created", got.CreatedAt, got.FinishedAt)
	}

	// The result went to the action's topic, just after the status became
	// final.
	var evs []hub.Event
	wait.For(t, 10*time.Second, "the result event", func() bool {
		evs = s.history(t, "todo.list", "")
		return len(evs) > 0
	})
	if len(evs) != 1 || evs[0].Type != action.TypeSucceeded {
		t.Fatalf("todo.list history = %+v, want one %s event", evs, action.TypeSucceeded)
	}
	var data map[string]json.RawMessage
	if err := json.Unmarshal(evs[0].Data, &data); err != nil {
		t.Fatal(err)
	}
	if string(data["action_id"]) != `"`+a.ID+`"` || string(data["result"]) != `{"title":"milk"}` {
		t.Errorf("event data %s: want action_id %s and the payload as result", evs[0].Data, a.ID)
	}
}

func TestActionPendingWhileRunning(t *testing.T) {
	s := newServer(t, serverOptions{actions: &action.Options{Workers: 1}})
	started, release := make(chan struct{}), make(chan struct{})
	s.actions.Handle("slow", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		close(started)
		select {
		case <-release:
			return json.RawMessage(`"done"`), nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))
	id := s.mustAccept(t, `{"type":"slow","topic":"jobs"}`)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	if a := s.getAction(t, id); a.Status != "running" || a.FinishedAt != nil || a.Result != nil {
		t.Errorf("while the handler runs, status = %+v, want running with no result or finished_at", a)
	}
	close(release)
	if a := s.waitFinished(t, id); a.Status != "succeeded" || string(a.Result) != `"done"` {
		t.Errorf("status = %+v, want succeeded with result \"done\"", a)
	}
}

func TestActionNotFound(t *testing.T) {
	s := echoServer(t)
	assertError(t, s.do(t, http.MethodGet, "/v1/actions/no-such-action", noContentType, ""), http.StatusNotFound, "not_found")
	assertError(t, s.do(t, http.MethodGet, "/v1/actions/"+strings.Repeat("x", 300), noContentType, ""), http.StatusNotFound, "not_found")
}

func TestActionsDisabled(t *testing.T) {
	s := newServer(t, serverOptions{})
	assertError(t, s.postAction(t, `{"type":"echo","topic":"a"}`), http.StatusNotFound, "not_found")
	assertError(t, s.do(t, http.MethodGet, "/v1/actions/x", noContentType, ""), http.StatusNotFound, "not_found")
}

func TestActionIdempotency(t *testing.T) {
	s := echoServer(t)
	const body = `{"type":"echo","topic":"orders.1","payload":{"a":1,"b":[1,2]}}`
	r := s.postAction(t, body, "order-1-pay")
	if r.status != http.StatusAccepted {
		t.Fatalf("first: status %d, body %s", r.status, r.body)
	}
	var first accepted
	decodeStrict(t, r.body, &first)
	loc := r.header.Get("Location")

	// The same key and the same body, spelled differently: the first action,
	// 200 with its current status. Key order and spacing do not count.
	for _, again := range []string{body, `{ "payload": {"b": [1, 2], "a": 1}, "topic": "orders.1", "type": "echo" }`} {
		r = s.postAction(t, again, "order-1-pay")
		if r.status != http.StatusOK {
			t.Fatalf("repeat %s: status %d, body %s, want 200", again, r.status, r.body)
		}
		if got := r.header.Get("Location"); got != loc {
			t.Errorf("repeat: Location = %q, want %q", got, loc)
		}
		var st actionStatus
		decodeStrict(t, r.body, &st)
		if st.ID != first.ID || st.Type != "echo" || st.Topic != "orders.1" || st.Status == "" {
			t.Errorf("repeat body = %+v, want the first action's status document", st)
		}
	}

	// The same key with another body is refused.
	for _, other := range []string{
		`{"type":"echo","topic":"orders.1","payload":{"a":2,"b":[1,2]}}`,
		`{"type":"echo","topic":"orders.2","payload":{"a":1,"b":[1,2]}}`,
		`{"type":"echo","topic":"orders.1"}`,
	} {
		assertError(t, s.postAction(t, other, "order-1-pay"), http.StatusUnprocessableEntity, "idempotency_mismatch")
	}

	// Another key, or none, is another action.
	second := s.mustAccept(t, body, "order-1-pay-again")
	third := s.mustAccept(t, body)
	if second == first.ID || third == first.ID || second == third {
		t.Errorf("ids %s, %s, %s: want three distinct actions", first.ID, second, third)
	}

	for _, id := range []string{first.ID, second, third} {
		s.waitFinished(t, id)
	}
	// After it finished, the key still answers with the final status.
	r = s.postAction(t, body, "order-1-pay")
	var st actionStatus
	if r.status != http.StatusOK {
		t.Fatalf("repeat after finishing: status %d, body %s", r.status, r.body)
	}
	decodeStrict(t, r.body, &st)
	if st.ID != first.ID || st.Status != "succeeded" || string(st.Result) != `{"a":1,"b":[1,2]}` {
		t.Errorf("repeat after finishing = %+v, want the first action, succeeded, with its result", st)
	}
	// Three actions ran, not five: the repeats never executed. (A status is
	// final just before its event is published, so the events are awaited.)
	if st := s.actions.Stats(); st.Accepted != 3 {
		t.Errorf("accepted %d actions, want 3", st.Accepted)
	}
	wait.For(t, 10*time.Second, "three result events", func() bool { return len(s.history(t, "orders.1", "")) >= 3 })
	if n := len(s.history(t, "orders.1", "")); n != 3 {
		t.Errorf("orders.1 has %d result events, want 3", n)
	}
}

func TestActionUnknownType(t *testing.T) {
	s := echoServer(t)
	assertError(t, s.postAction(t, `{"type":"todo.add","topic":"todo.list"}`), http.StatusUnprocessableEntity, "unknown_action")
	// Without Echo, not even echo is known.
	s = newServer(t, serverOptions{actions: &action.Options{}})
	assertError(t, s.postAction(t, `{"type":"echo","topic":"todo.list"}`), http.StatusUnprocessableEntity, "unknown_action")
}

func TestActionQueueFull(t *testing.T) {
	// A queue of two: the running action and one waiting.
	s := newServer(t, serverOptions{actions: &action.Options{Workers: 1, QueueSize: 2}})
	started := make(chan string, 4)
	release := make(chan struct{})
	var released atomic.Bool
	t.Cleanup(func() {
		if released.CompareAndSwap(false, true) {
			close(release)
		}
	})
	s.actions.Handle("block", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		started <- c.ID
		select {
		case <-release:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}))

	running := s.mustAccept(t, `{"type":"block","topic":"q"}`)
	select {
	case id := <-started:
		if id != running {
			t.Fatalf("started %s, want %s", id, running)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first action did not start")
	}
	queued := s.mustAccept(t, `{"type":"block","topic":"q"}`) // waits in the queue's one slot

	r := s.postAction(t, `{"type":"block","topic":"q"}`)
	assertError(t, r, http.StatusServiceUnavailable, "unavailable")
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want \"1\"", ra)
	}
	// A full queue refuses before the idempotency key is taken: the same
	// key works once there is room.
	assertError(t, s.postAction(t, `{"type":"block","topic":"q"}`, "k"), http.StatusServiceUnavailable, "unavailable")

	released.Store(true)
	close(release)
	for _, id := range []string{running, queued} {
		if a := s.waitFinished(t, id); a.Status != "succeeded" {
			t.Errorf("action %s: %+v, want succeeded", id, a)
		}
	}
	id := s.mustAccept(t, `{"type":"block","topic":"q"}`, "k")
	if a := s.waitFinished(t, id); a.Status != "succeeded" {
		t.Errorf("after the queue drained: %+v, want succeeded", a)
	}
}

func TestActionBadInput(t *testing.T) {
	s := newServer(t, serverOptions{maxBody: 1 << 10, actions: &action.Options{Echo: true}})
	const js = "application/json"
	huge := `{"type":"echo","topic":"a","payload":"` + strings.Repeat("x", 2<<10) + `"}`
	cases := []struct {
		name, method, path, contentType, body string
		key                                   []string
		status                                int
		code, allow                           string
	}{
		{"wrong content type", "POST", "/v1/actions", "text/plain", `{"type":"echo","topic":"a"}`, nil, 415, "unsupported_media_type", ""},
		{"missing content type", "POST", "/v1/actions", noContentType, `{"type":"echo","topic":"a"}`, nil, 415, "unsupported_media_type", ""},
		{"body too large", "POST", "/v1/actions", js, huge, nil, 413, "too_large", ""},
		{"invalid JSON", "POST", "/v1/actions", js, `{"type":`, nil, 400, "invalid_json", ""},
		{"empty body", "POST", "/v1/actions", js, ``, nil, 400, "invalid_json", ""},
		{"array body", "POST", "/v1/actions", js, `[{"type":"echo","topic":"a"}]`, nil, 400, "invalid_json", ""},
		{"null body", "POST", "/v1/actions", js, `null`, nil, 400, "invalid_json", ""},
		{"trailing garbage", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"} x`, nil, 400, "invalid_json", ""},
		{"type is a number", "POST", "/v1/actions", js, `{"type":1,"topic":"a"}`, nil, 400, "invalid_json", ""},
		{"topic is an object", "POST", "/v1/actions", js, `{"type":"echo","topic":{}}`, nil, 400, "invalid_json", ""},
		{"invalid UTF-8", "POST", "/v1/actions", js, "{\"type\":\"echo\",\"topic\":\"a\",\"payload\":\"\xff\"}", nil, 400, "invalid_json", ""},
		{"missing type", "POST", "/v1/actions", js, `{"topic":"a","payload":1}`, nil, 400, "invalid_type", ""},
		{"empty type", "POST", "/v1/actions", js, `{"type":"","topic":"a"}`, nil, 400, "invalid_type", ""},
		{"null type", "POST", "/v1/actions", js, `{"type":null,"topic":"a"}`, nil, 400, "invalid_type", ""},
		{"reserved type", "POST", "/v1/actions", js, `{"type":"herald.reset","topic":"a"}`, nil, 400, "invalid_type", ""},
		{"reserved type in capitals", "POST", "/v1/actions", js, `{"type":"HERALD.reset","topic":"a"}`, nil, 400, "invalid_type", ""},
		{"bad type chars", "POST", "/v1/actions", js, `{"type":"todo add","topic":"a"}`, nil, 400, "invalid_type", ""},
		{"65-byte type", "POST", "/v1/actions", js, `{"type":"` + strings.Repeat("t", 65) + `","topic":"a"}`, nil, 400, "invalid_type", ""},
		{"missing topic", "POST", "/v1/actions", js, `{"type":"echo"}`, nil, 400, "invalid_topic", ""},
		{"wildcard topic", "POST", "/v1/actions", js, `{"type":"echo","topic":"todo.*"}`, nil, 400, "invalid_topic", ""},
		{"bad topic", "POST", "/v1/actions", js, `{"type":"echo","topic":"a..b"}`, nil, 400, "invalid_topic", ""},
		{"key too long", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"}`, []string{strings.Repeat("k", 256)}, 400, "invalid_request", ""},
		{"key not ASCII", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"}`, []string{"clé"}, 400, "invalid_request", ""},
		{"key with a tab", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"}`, []string{"a\tb"}, 400, "invalid_request", ""},
		{"empty key", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"}`, []string{""}, 400, "invalid_request", ""},
		{"two keys", "POST", "/v1/actions", js, `{"type":"echo","topic":"a"}`, []string{"a", "b"}, 400, "invalid_request", ""},
		{"GET actions", "GET", "/v1/actions", noContentType, "", nil, 405, "method_not_allowed", "POST"},
		{"POST an action's status", "POST", "/v1/actions/x", js, `{}`, nil, 405, "method_not_allowed", "GET"},
		{"DELETE an action", "DELETE", "/v1/actions/x", noContentType, "", nil, 405, "method_not_allowed", "GET"},
		{"trailing slash", "POST", "/v1/actions/", js, `{"type":"echo","topic":"a"}`, nil, 404, "not_found", ""},
		{"nested path", "GET", "/v1/actions/x/y", noContentType, "", nil, 404, "not_found", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, s.url+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.contentType != noContentType {
				req.Header.Set("Content-Type", tc.contentType)
			}
			if tc.key != nil {
				req.Header["Idempotency-Key"] = tc.key
			}
			r := s.send(t, req)
			assertError(t, r, tc.status, tc.code)
			if got := r.header.Get("Allow"); got != tc.allow {
				t.Errorf("Allow = %q, want %q", got, tc.allow)
			}
		})
	}
	if st := s.actions.Stats(); st.Accepted != 0 {
		t.Errorf("rejected requests were accepted as actions: %+v", st)
	}
	// A 255-byte key of printable ASCII, spaces inside, is fine.
	key := "a b" + strings.Repeat("~", 252)
	s.mustAccept(t, `{"type":"echo","topic":"a"}`, key)
}

// sseStream is an open SSE subscription read by a goroutine the test owns.
type sseStream struct {
	events chan hub.Event
}

func (s *server) subscribeSSE(t *testing.T, pattern string) *sseStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?topic="+pattern, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		t.Fatalf("GET /v1/events: status %d", resp.StatusCode)
	}
	st := &sseStream{events: make(chan hub.Event, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(st.events)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				continue
			}
			var e hub.Event
			if err := json.Unmarshal([]byte(data), &e); err != nil {
				t.Errorf("SSE data line is not an event: %q: %v", line, err)
				return
			}
			select {
			case st.events <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return st
}

func (st *sseStream) next(t *testing.T) hub.Event {
	t.Helper()
	select {
	case e, ok := <-st.events:
		if !ok {
			t.Fatal("the SSE stream ended")
		}
		return e
	case <-time.After(10 * time.Second):
		t.Fatal("no SSE event within 10s")
	}
	return hub.Event{}
}

// wsConn is a WebSocket client of the server.
type wsConn struct {
	c   *websocket.Conn
	ctx context.Context
}

func (s *server) dialWS(t *testing.T) *wsConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"}, HTTPClient: s.client,
	})
	if err != nil {
		cancel()
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		c.CloseNow()
	})
	return &wsConn{c: c, ctx: ctx}
}

func (w *wsConn) send(t *testing.T, msg string) {
	t.Helper()
	if err := w.c.Write(w.ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write %s: %v", msg, err)
	}
}

// recv returns the next message, decoded.
func (w *wsConn) recv(t *testing.T) map[string]json.RawMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	_, b, err := w.c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("server sent %q: %v", b, err)
	}
	return m
}

// resultData is the data of an action.succeeded or action.failed event.
type resultData struct {
	ActionID string          `json:"action_id"`
	Type     string          `json:"type"`
	Status   string          `json:"status"`
	Result   json.RawMessage `json:"result"`
	Error    *action.Failure `json:"error"`
}

// TestActionResultReachesSubscribers runs the whole flow a browser sees:
// subscribe over SSE and WebSocket, submit an action over HTTP, receive its
// result on both, and find the status already final.
func TestActionResultReachesSubscribers(t *testing.T) {
	s := echoServer(t)
	s.actions.Handle("todo.fail", action.HandlerFunc(func(ctx context.Context, c *action.Call) (json.RawMessage, error) {
		return nil, &action.Failure{Code: "refused", Message: "not today"}
	}))
	sub := s.subscribeSSE(t, "todo.*")
	w := s.dialWS(t)
	w.send(t, `{"op":"subscribe","ref":1,"topics":["todo.*"]}`)
	if m := w.recv(t); string(m["op"]) != `"ok"` || string(m["ref"]) != "1" {
		t.Fatalf("subscribe reply %v", m)
	}

	check := func(name string, e hub.Event, id, typ, status string) resultData {
		t.Helper()
		if e.Topic != "todo.list" || e.Type != typ {
			t.Fatalf("%s: event %s on %s, want %s on todo.list", name, e.Type, e.Topic, typ)
		}
		var d resultData
		decodeStrict(t, e.Data, &d)
		if d.ActionID != id || d.Status != status {
			t.Fatalf("%s: data %s, want action_id %s and status %s", name, e.Data, id, status)
		}
		return d
	}
	wsEvent := func() hub.Event {
		t.Helper()
		m := w.recv(t)
		if string(m["op"]) != `"event"` {
			t.Fatalf("WS: got %v, want an event", m)
		}
		delete(m, "op")
		b, _ := json.Marshal(m)
		var e hub.Event
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatal(err)
		}
		return e
	}

	id := s.mustAccept(t, `{"type":"echo","topic":"todo.list","payload":{"title":"milk"}}`)
	e := sub.next(t)
	// The status is final before the event is published.
	if a := s.getAction(t, id); a.Status != "succeeded" {
		t.Errorf("status when the result event arrived: %s, want succeeded", a.Status)
	}
	d := check("SSE", e, id, action.TypeSucceeded, "succeeded")
	if d.Type != "echo" || string(d.Result) != `{"title":"milk"}` || d.Error != nil {
		t.Errorf("SSE: data %s, want type echo and the payload as result", e.Data)
	}
	we := wsEvent()
	check("WS", we, id, action.TypeSucceeded, "succeeded")
	if we.ID != e.ID || string(we.Data) != string(e.Data) {
		t.Errorf("WS got %s %s, SSE got %s %s: want the same event", we.ID, we.Data, e.ID, e.Data)
	}

	id = s.mustAccept(t, `{"type":"todo.fail","topic":"todo.list","payload":{}}`)
	e = sub.next(t)
	d = check("SSE", e, id, action.TypeFailed, "failed")
	if d.Type != "todo.fail" || d.Error == nil || d.Error.Code != "refused" || d.Error.Message != "not today" || d.Result != nil {
		t.Errorf("SSE: data %s, want the handler's failure and no result", e.Data)
	}
	check("WS", wsEvent(), id, action.TypeFailed, "failed")
	if a := s.getAction(t, id); a.Status != "failed" || a.Error == nil || a.Error.Code != "refused" {
		t.Errorf("status %+v, want failed with code refused", a)
	}
}

// TestActionShutdownRefuses checks that actions submitted after the service
// began shutting down get 503 with Retry-After.
func TestActionShutdownRefuses(t *testing.T) {
	s := echoServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.actions.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v", err)
	}
	r := s.postAction(t, `{"type":"echo","topic":"a"}`)
	assertError(t, r, http.StatusServiceUnavailable, "unavailable")
	if ra := r.header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After = %q, want \"1\"", ra)
	}
}
