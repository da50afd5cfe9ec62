package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

func TestServeActionFlags(t *testing.T) {
	env := func(kv map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := kv[k]; return v, ok }
	}
	c, err := parseServeFlags([]string{"--action-workers", "4"}, env(map[string]string{
		"HERALD_ACTION_WORKERS":      "3",
		"HERALD_ACTION_QUEUE":        "7",
		"HERALD_ACTION_TTL":          "5m",
		"HERALD_ACTION_TIMEOUT":      "2s",
		"HERALD_ACTION_MAX_ATTEMPTS": "2",
		"HERALD_ACTION_UPSTREAM":     " billing.=http://billing/actions , http://app/actions?x=1&y=2,",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.actionWorkers != 4 || c.actionQueue != 7 || c.actionTTL != 5*time.Minute ||
		c.actionTimeout != 2*time.Second || c.actionMaxAttempts != 2 {
		t.Errorf("workers %d (flag), queue %d, ttl %v, timeout %v, attempts %d: want 4, 7, 5m, 2s, 2",
			c.actionWorkers, c.actionQueue, c.actionTTL, c.actionTimeout, c.actionMaxAttempts)
	}
	want := []upstreamRoute{{"billing.", "http://billing/actions"}, {"", "http://app/actions?x=1&y=2"}}
	if fmt.Sprint(c.actionUpstream) != fmt.Sprint(want) {
		t.Errorf("upstream routes %+v, want %+v", c.actionUpstream, want)
	}

	for in, want := range map[string][]upstreamRoute{
		"":                    nil,
		" , ":                 nil,
		"https://app/actions": {{"", "https://app/actions"}},
		"todo.add=http://a/x,todo.*=http://b/y,http://c/z?q=a=b": {
			{"todo.add", "http://a/x"}, {"todo.*", "http://b/y"}, {"", "http://c/z?q=a=b"},
		},
		"a:b-c_d=http://127.0.0.1:9000/": {{"a:b-c_d", "http://127.0.0.1:9000/"}},
	} {
		got, err := parseUpstream(in)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("parseUpstream(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestServeBadActionFlags(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		env    map[string]string
		stderr string
	}{
		{"zero workers", []string{"--action-workers", "0"}, nil, "--action-workers must be positive"},
		{"negative queue", []string{"--action-queue=-1"}, nil, "--action-queue must be positive"},
		{"zero ttl", []string{"--action-ttl", "0s"}, nil, "--action-ttl must be positive"},
		{"negative timeout", []string{"--action-timeout", "-1s"}, nil, "--action-timeout must be positive"},
		{"zero attempts", []string{"--action-max-attempts", "0"}, nil, "--action-max-attempts must be positive"},
		{"attempts not a number", []string{"--action-max-attempts", "many"}, nil, "invalid value"},
		{"bad timeout", []string{"--action-timeout", "soon"}, nil, "invalid value"},
		{"workers from env", nil, map[string]string{"HERALD_ACTION_WORKERS": "lots"}, "HERALD_ACTION_WORKERS"},
		{"queue from env", nil, map[string]string{"HERALD_ACTION_QUEUE": "0"}, "--action-queue must be positive"},
		{"upstream not a URL", []string{"--action-upstream", "upstream"}, nil, "must be absolute"},
		{"upstream from env", nil, map[string]string{"HERALD_ACTION_UPSTREAM": "garbage"}, "--action-upstream entry"},
		{"upstream scheme", []string{"--action-upstream", "ftp://app/actions"}, nil, "http:// or https://"},
		{"upstream without host", []string{"--action-upstream", "http:///actions"}, nil, "must be absolute"},
		{"empty type", []string{"--action-upstream", "=http://a/x"}, nil, "is empty"},
		{"star type", []string{"--action-upstream", "*=http://a/x"}, nil, "is empty"},
		{"reserved type", []string{"--action-upstream", "herald.=http://a/x"}, nil, "reserved"},
		{"reserved type in capitals", []string{"--action-upstream", "HERALD.reset=http://a/x"}, nil, "reserved"},
		{"reserved namespace by prefix", []string{"--action-upstream", "Herald*=http://a/x"}, nil, "reserved"},
		{"bad type", []string{"--action-upstream", "todo add=http://a/x"}, nil, `byte ' ' not allowed`},
		{"bad prefix", []string{"--action-upstream", "todo/*=http://a/x"}, nil, `byte '/' not allowed`},
		{"long type", []string{"--action-upstream", strings.Repeat("t", 65) + "=http://a/x"}, nil, "1 to 64 bytes"},
		{"the reserved namespace's name", []string{"--action-upstream", "herald=http://a/x"}, nil, "reserved"},
		{"type without URL", []string{"--action-upstream", "todo.="}, nil, "must be absolute"},
		{"two fallbacks", []string{"--action-upstream", "http://a/x,http://b/y"}, nil, "more than one fallback"},
		{"same prefix twice", []string{"--action-upstream", "todo.=http://a/x,todo.*=http://b/y"}, nil, "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"--addr", "127.0.0.1:0"}, tc.args...)
			if status := exitStatus(runServe(ctx, args, &stdout, &stderr, nil), &stderr); status != 2 {
				t.Errorf("exit status %d, want 2 (stderr %q)", status, &stderr)
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q does not mention %q", &stderr, tc.stderr)
			}
		})
	}
}

// upstreamCall is one request Herald made to a test backend.
type upstreamCall struct {
	path string
	key  string
	ct   string
	body map[string]json.RawMessage
}

// backend is an HTTP action backend on a real socket that records what
// Herald sends it. route answers one call.
type backend struct {
	url   string
	mu    sync.Mutex
	calls []upstreamCall
}

func newBackend(t *testing.T, route func(w http.ResponseWriter, r *http.Request, c upstreamCall)) *backend {
	t.Helper()
	b := &backend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := upstreamCall{path: r.URL.Path, key: r.Header.Get("Idempotency-Key"), ct: r.Header.Get("Content-Type")}
		if err := json.NewDecoder(r.Body).Decode(&c.body); err != nil || r.Method != http.MethodPost {
			t.Errorf("upstream got %s %s with a body that is not a JSON object: %v", r.Method, r.URL, err)
		}
		b.mu.Lock()
		b.calls = append(b.calls, c)
		b.mu.Unlock()
		route(w, r, c)
	}))
	t.Cleanup(srv.Close)
	b.url = srv.URL
	return b
}

func (b *backend) called() []upstreamCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]upstreamCall(nil), b.calls...)
}

// actionStatus is GET /v1/actions/{id}.
type actionStatus struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Status   string          `json:"status"`
	Result   json.RawMessage `json:"result"`
	Attempts int             `json:"attempts"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// submit posts an action that must be accepted and returns its ID.
func (in *instance) submit(t *testing.T, body, key string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.url+"/v1/actions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := in.client.Do(req)
	if err != nil {
		t.Fatalf("POST /v1/actions: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ ID string }
	if resp.StatusCode != http.StatusAccepted || json.Unmarshal(b, &out) != nil || out.ID == "" {
		t.Fatalf("POST /v1/actions %s: status %d, body %s", body, resp.StatusCode, b)
	}
	if loc := resp.Header.Get("Location"); loc != "/v1/actions/"+out.ID {
		t.Errorf("Location %q, want /v1/actions/%s", loc, out.ID)
	}
	return out.ID
}

// finished polls an action's status until it is final.
func (in *instance) finished(t *testing.T, id string) actionStatus {
	t.Helper()
	var a actionStatus
	wait.For(t, 15*time.Second, "action "+id+" to finish", func() bool {
		status, body := in.get(t, "/v1/actions/"+id)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/actions/%s: status %d, body %s", id, status, body)
		}
		a = actionStatus{}
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("status body %s: %v", body, err)
		}
		return a.Status == "succeeded" || a.Status == "failed"
	})
	return a
}

// sseEvent is one event of an SSE stream.
type sseEvent struct {
	Topic string          `json:"topic"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
}

// subscribe opens an SSE stream; its events arrive on the channel, read by
// a goroutine that ends with the test.
func (in *instance) subscribe(t *testing.T, pattern string) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.url+"/v1/events?topic="+pattern, nil)
	resp, err := (&http.Client{Transport: in.client.Transport}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	events := make(chan sseEvent, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				var e sseEvent
				if err := json.Unmarshal([]byte(data), &e); err != nil {
					t.Errorf("SSE data %q: %v", data, err)
					return
				}
				select {
				case events <- e:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
		<-done
	})
	return events
}

func next(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(15 * time.Second):
		t.Fatal("no SSE event within 15s")
		return sseEvent{}
	}
}

// TestServeActionFlow runs actions through herald serve and an upstream
// backend: routing by type, the request the backend gets, results on SSE,
// failures, retries and the per-attempt timeout.
func TestServeActionFlow(t *testing.T) {
	up := newBackend(t, func(w http.ResponseWriter, r *http.Request, c upstreamCall) {
		w.Header().Set("Content-Type", "application/json")
		switch typ := strings.Trim(string(c.body["type"]), `"`); typ {
		case "todo.add":
			var p struct{ Title string }
			_ = json.Unmarshal(c.body["payload"], &p)
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
	in := startServe(t, "--addr", "127.0.0.1:0", "--action-upstream", "todo.="+up.url+"/todo,"+up.url+"/other",
		"--action-max-attempts", "2", "--action-timeout", "300ms")
	events := in.subscribe(t, "todo.*")

	id := in.submit(t, `{"type":"todo.add","topic":"todo.list","payload":{"title":"milk"}}`, "add-milk")
	e := next(t, events)
	if e.Topic != "todo.list" || e.Type != "action.succeeded" ||
		string(e.Data) != `{"action_id":"`+id+`","type":"todo.add","status":"succeeded","result":{"id":1,"title":"milk"}}` {
		t.Errorf("SSE event %+v %s: want action.succeeded on todo.list with the upstream's result", e, e.Data)
	}
	calls := up.called()
	if len(calls) != 1 {
		t.Fatalf("upstream got %d calls, want 1", len(calls))
	}
	c := calls[0]
	if c.path != "/todo" || c.key != "add-milk" || c.ct != "application/json" ||
		string(c.body["id"]) != `"`+id+`"` || string(c.body["type"]) != `"todo.add"` ||
		string(c.body["topic"]) != `"todo.list"` || string(c.body["payload"]) != `{"title":"milk"}` ||
		string(c.body["attempt"]) != "1" || len(c.body) != 5 {
		t.Errorf("upstream call %+v: want POST /todo with the action and its Idempotency-Key", c)
	}

	// A type outside todo. goes to the fallback URL; its 422 is the failure.
	id = in.submit(t, `{"type":"misc.thing","topic":"todo.list"}`, "")
	e = next(t, events)
	if a := in.finished(t, id); a.Status != "failed" || a.Error == nil || a.Error.Code != "refused" ||
		a.Error.Message != "no misc.thing here" || e.Type != "action.failed" {
		t.Errorf("misc.thing: status %+v, event %s %s; want failed with the upstream's error", a, e.Type, e.Data)
	}
	calls = up.called()
	if last := calls[len(calls)-1]; last.path != "/other" || last.key != id {
		t.Errorf("misc.thing went to %s with key %q; want /other with the action ID as key", last.path, last.key)
	}

	// echo stays built in: the upstream is not called.
	before := len(up.called())
	id = in.submit(t, `{"type":"echo","topic":"todo.list","payload":[1]}`, "")
	if a := in.finished(t, id); a.Status != "succeeded" || string(a.Result) != "[1]" {
		t.Errorf("echo: %+v", a)
	}
	next(t, events)
	if n := len(up.called()); n != before {
		t.Errorf("echo called the upstream %d times", n-before)
	}

	// 5xx and timeouts are retried --action-max-attempts times, then fail.
	for _, typ := range []string{"todo.down", "todo.slow"} {
		id = in.submit(t, `{"type":"`+typ+`","topic":"todo.list"}`, "")
		a := in.finished(t, id)
		if a.Status != "failed" || a.Attempts != 2 || a.Error == nil || a.Error.Code != "upstream_unavailable" {
			t.Errorf("%s: %+v, want failed after 2 attempts with upstream_unavailable", typ, a)
		}
		next(t, events)
	}
}

// TestServeShutdownFinishesActions checks that a shutdown waits for an
// action in progress, and that its result is still published: the hub is
// closed only after the actions.
func TestServeShutdownFinishesActions(t *testing.T) {
	started := make(chan struct{}, 1)
	var (
		mu         sync.Mutex
		answeredAt time.Time
		cancelled  bool
	)
	up := newBackend(t, func(w http.ResponseWriter, r *http.Request, _ upstreamCall) {
		started <- struct{}{}
		select {
		case <-time.After(300 * time.Millisecond): // the work the action does
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"done":true}`)
			http.NewResponseController(w).Flush()
			mu.Lock()
			answeredAt = time.Now()
			mu.Unlock()
		case <-r.Context().Done():
			mu.Lock()
			cancelled = true
			mu.Unlock()
		}
	})
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", "5s", "--action-upstream", up.url)
	in.submit(t, `{"type":"report.build","topic":"reports"}`, "")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not called")
	}

	err, took := in.stop(t, 10*time.Second)
	returned := time.Now()
	if err != nil {
		t.Errorf("runServe: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelled || answeredAt.IsZero() {
		t.Fatalf("the upstream call was cut short by the shutdown (cancelled %v)", cancelled)
	}
	if returned.Before(answeredAt) {
		t.Errorf("runServe returned before the upstream answered")
	}
	logs := in.logs.String()
	for _, bad := range []string{"failed to publish", "did not finish in time", "did not stop in time"} {
		if strings.Contains(logs, bad) {
			t.Errorf("logs mention %q: the result was not published before the hub closed:\n%s", bad, logs)
		}
	}
	t.Logf("shutdown with an action in progress took %v", took)
}

// TestServeShutdownBoundsActions checks that an action that does not finish
// cannot hold the shutdown beyond its bound: it fails with code shutdown
// and its upstream request is cancelled.
func TestServeShutdownBoundsActions(t *testing.T) {
	started := make(chan struct{}, 1)
	quit := make(chan struct{})
	cancelled := make(chan struct{})
	up := newBackend(t, func(w http.ResponseWriter, r *http.Request, _ upstreamCall) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-quit:
		}
	})
	t.Cleanup(func() { close(quit) }) // runs before the backend's Close
	const timeout = time.Second
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", timeout.String(),
		"--action-upstream", up.url, "--action-timeout", "1m")
	in.submit(t, `{"type":"forever","topic":"jobs"}`, "")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not called")
	}

	err, took := in.stop(t, timeout+10*time.Second)
	if err != nil {
		t.Errorf("runServe: %v", err)
	}
	// The bound, plus the moment cancelled handlers get to return.
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("shutdown took %v, want the %v bound (and at most a few seconds more)", took, timeout)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled by the shutdown")
	}
	logs := in.logs.String()
	if !strings.Contains(logs, "actions did not finish in time") {
		t.Errorf("the cut action is not logged:\n%s", logs)
	}
	if strings.Contains(logs, "failed to publish") {
		t.Errorf("the shutdown failure was not published:\n%s", logs)
	}
}
