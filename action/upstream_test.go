package action_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
)

// received is one request as the backend saw it.
type received struct {
	Key         string
	ContentType string
	Method      string
	Body        struct {
		ID      string          `json:"id"`
		Type    string          `json:"type"`
		Topic   string          `json:"topic"`
		Payload json.RawMessage `json:"payload"`
		Attempt int             `json:"attempt"`
	}
}

// backend is a real HTTP server standing in for an application's action
// endpoint; answer decides each response from the request's attempt number.
type backend struct {
	srv  *httptest.Server
	stop chan struct{} // closed at cleanup: releases handlers that hang

	mu   sync.Mutex
	reqs []received
}

func newBackend(t *testing.T, answer func(w http.ResponseWriter, r *http.Request, got received)) *backend {
	t.Helper()
	b := &backend{stop: make(chan struct{})}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := received{Key: r.Header.Get("Idempotency-Key"), ContentType: r.Header.Get("Content-Type"), Method: r.Method}
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		if err := json.Unmarshal(raw, &got.Body); err != nil {
			t.Errorf("backend got a body that is not JSON: %q", raw)
		}
		b.mu.Lock()
		b.reqs = append(b.reqs, got)
		b.mu.Unlock()
		answer(w, r, got)
	}))
	t.Cleanup(b.srv.Close)
	t.Cleanup(func() { close(b.stop) })
	return b
}

func (b *backend) requests() []received {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]received(nil), b.reqs...)
}

// upstreamService serves every action type through an Upstream on url.
func upstreamService(t *testing.T, url string, timeout time.Duration, maxAttempts int) (*action.Service, *subscriber) {
	t.Helper()
	h := newHub(t, 0)
	u, err := action.NewUpstream(action.UpstreamOptions{URL: url, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(u.CloseIdleConnections) // after the service has stopped
	s := newService(t, h, action.Options{
		MaxAttempts: maxAttempts, BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond,
	})
	s.Handle("", u)
	return s, subscribe(t, h)
}

func TestUpstreamSuccess(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, _ *http.Request, got received) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"charged": `+string(got.Body.Payload)+`, "id": "`+got.Body.ID+`"}`)
	})
	s, sub := upstreamService(t, b.srv.URL+"/actions", time.Second, 3)

	a := submit(t, s, action.Request{Type: "billing.charge", Topic: "t.bill", Payload: json.RawMessage(`{"cents": 250}`), IdempotencyKey: "order-7"})
	o := sub.await(t, a.ID)
	if o.Status != action.Succeeded || string(o.Result) != `{"charged":{"cents":250},"id":"`+a.ID+`"}` {
		t.Fatalf("event %+v result %s", o, o.Result)
	}
	noKey := submit(t, s, action.Request{Type: "ping", Topic: "t.bill"})
	sub.await(t, noKey.ID)

	reqs := b.requests()
	if len(reqs) != 2 {
		t.Fatalf("backend got %d requests, want 2", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.ContentType != "application/json" || r.Key != "order-7" {
		t.Errorf("request %s, Content-Type %q, Idempotency-Key %q", r.Method, r.ContentType, r.Key)
	}
	if r.Body.ID != a.ID || r.Body.Type != "billing.charge" || r.Body.Topic != "t.bill" ||
		string(r.Body.Payload) != `{"cents":250}` || r.Body.Attempt != 1 {
		t.Errorf("request body %+v payload %s", r.Body, r.Body.Payload)
	}
	if reqs[1].Key != noKey.ID || string(reqs[1].Body.Payload) != "null" {
		t.Errorf("without a caller key: Idempotency-Key %q (want the action ID %s), payload %s", reqs[1].Key, noKey.ID, reqs[1].Body.Payload)
	}
}

func TestUpstreamAnswers(t *testing.T) {
	big := `"` + strings.Repeat("x", 1<<20) + `"`
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request, got received) {
		switch got.Body.Type {
		case "redirect":
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case "empty":
			w.WriteHeader(http.StatusNoContent)
		case "coded":
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = io.WriteString(w, `{"error":{"code":"out_of_stock","message":"none left"}}`)
		case "plain":
			http.Error(w, "no such thing", http.StatusNotFound)
		case "badcode":
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error":{"code":"Not A Code","message":"x"}}`)
		case "text":
			_, _ = io.WriteString(w, "all good!")
		case "huge":
			_, _ = io.WriteString(w, big)
		}
	})
	s, sub := upstreamService(t, b.srv.URL, time.Second, 3)

	for _, tc := range []struct {
		typ, result, code, msg string
	}{
		{typ: "empty", result: "null"},
		{typ: "coded", code: "out_of_stock", msg: "none left"},
		{typ: "plain", code: action.CodeUpstreamRejected, msg: "404"},
		{typ: "badcode", code: action.CodeUpstreamRejected, msg: "400"},
		{typ: "text", code: action.CodeUpstreamBadResponse},
		{typ: "huge", code: action.CodeUpstreamBadResponse},
		{typ: "redirect", code: action.CodeUpstreamBadResponse, msg: "302"},
	} {
		before := len(b.requests())
		a := submit(t, s, action.Request{Type: tc.typ, Topic: "t.up"})
		o := sub.await(t, a.ID)
		if tc.code == "" {
			if o.Status != action.Succeeded || string(o.Result) != tc.result {
				t.Errorf("%s: %+v result %s, want %s", tc.typ, o, o.Result, tc.result)
			}
		} else if o.Status != action.Failed || o.Error == nil || o.Error.Code != tc.code || !strings.Contains(o.Error.Message, tc.msg) {
			t.Errorf("%s: %+v error %+v, want code %s with %q", tc.typ, o, o.Error, tc.code, tc.msg)
		}
		// None of these is worth a retry.
		if n := len(b.requests()) - before; n != 1 {
			t.Errorf("%s: %d requests, want 1", tc.typ, n)
		}
	}
	if st := s.Stats(); st.Retried != 0 {
		t.Errorf("Retried = %d, want 0", st.Retried)
	}
}

func TestUpstreamRetries5xx(t *testing.T) {
	b := newBackend(t, func(w http.ResponseWriter, _ *http.Request, got received) {
		if got.Body.Type == "down" || got.Body.Attempt < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, `"done"`)
	})
	s, sub := upstreamService(t, b.srv.URL, time.Second, 4)

	a := submit(t, s, action.Request{Type: "flaky", Topic: "t.r", IdempotencyKey: "k"})
	if o := sub.await(t, a.ID); o.Status != action.Succeeded || string(o.Result) != `"done"` {
		t.Fatalf("%+v %s", o, o.Result)
	}
	reqs := b.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d attempts at the backend, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Body.Attempt != i+1 || r.Key != "k" || r.Body.ID != a.ID {
			t.Errorf("attempt %d: %+v key %q", i+1, r.Body, r.Key)
		}
	}
	if g := mustGet(t, s, a.ID); g.Attempts != 3 {
		t.Errorf("Attempts = %d", g.Attempts)
	}
	if st := s.Stats(); st.Retried != 2 {
		t.Errorf("Retried = %d, want 2", st.Retried)
	}

	d := submit(t, s, action.Request{Type: "down", Topic: "t.r"})
	o := sub.await(t, d.ID)
	if o.Status != action.Failed || o.Error.Code != action.CodeUpstreamUnavailable || !strings.Contains(o.Error.Message, "503") {
		t.Errorf("exhausted: %+v %+v", o, o.Error)
	}
	if n := len(b.requests()) - 3; n != 4 {
		t.Errorf("%d attempts, want MaxAttempts 4", n)
	}
	if st := s.Stats(); st.Retried != 2+3 {
		t.Errorf("Retried = %d, want 5", st.Retried)
	}
}

func TestUpstreamTimeout(t *testing.T) {
	var b *backend
	b = newBackend(t, func(_ http.ResponseWriter, r *http.Request, _ received) {
		select {
		case <-r.Context().Done(): // the client gave up
		case <-b.stop:
		}
	})
	s, sub := upstreamService(t, b.srv.URL, 50*time.Millisecond, 2)

	a := submit(t, s, action.Request{Type: "slow", Topic: "t.slow"})
	o := sub.await(t, a.ID)
	if o.Status != action.Failed || o.Error.Code != action.CodeUpstreamUnavailable || !strings.Contains(o.Error.Message, "no answer within 50ms") {
		t.Fatalf("%+v %+v", o, o.Error)
	}
	if n := len(b.requests()); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
	if st := s.Stats(); st.Retried != 1 {
		t.Errorf("Retried = %d, want 1", st.Retried)
	}
}

func TestUpstreamConnectionRefused(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	s, sub := upstreamService(t, url, time.Second, 3)

	a := submit(t, s, action.Request{Type: "x", Topic: "t.gone"})
	o := sub.await(t, a.ID)
	if o.Status != action.Failed || o.Error.Code != action.CodeUpstreamUnavailable || !strings.Contains(o.Error.Message, "refused") {
		t.Fatalf("%+v %+v", o, o.Error)
	}
	// Clients learn what went wrong, not where the backend lives.
	host := strings.TrimPrefix(url, "http://")
	if strings.Contains(o.Error.Message, host) || strings.Contains(mustGet(t, s, a.ID).Error.Message, host) {
		t.Errorf("the failure message reveals the upstream address %s: %q", host, o.Error.Message)
	}
	if g := mustGet(t, s, a.ID); g.Attempts != 3 {
		t.Errorf("Attempts = %d, want 3", g.Attempts)
	}
	if st := s.Stats(); st.Retried != 2 {
		t.Errorf("Retried = %d, want 2", st.Retried)
	}
}

func TestNewUpstreamChecksURL(t *testing.T) {
	for _, u := range []string{"", "actions", "ftp://host/x", "http://", "://x"} {
		if _, err := action.NewUpstream(action.UpstreamOptions{URL: u}); err == nil {
			t.Errorf("NewUpstream(%q) accepted", u)
		}
	}
}
