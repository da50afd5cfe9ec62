package heraldtest

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

// UpstreamCall is one request a node made to a Backend.
type UpstreamCall struct {
	Path string
	Key  string // Idempotency-Key
	CT   string // Content-Type
	Body map[string]json.RawMessage
}

// Backend is an HTTP action backend on a real socket that records what
// the nodes send it. Its methods may be called from any goroutine.
type Backend struct {
	URL   string
	mu    sync.Mutex
	calls []UpstreamCall
}

// NewBackend starts a Backend, closed when the test ends, whose route
// answers each call.
func NewBackend(t testing.TB, route func(w http.ResponseWriter, r *http.Request, c UpstreamCall)) *Backend {
	t.Helper()
	b := &Backend{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := UpstreamCall{Path: r.URL.Path, Key: r.Header.Get("Idempotency-Key"), CT: r.Header.Get("Content-Type")}
		if err := json.NewDecoder(r.Body).Decode(&c.Body); err != nil || r.Method != http.MethodPost {
			t.Errorf("upstream got %s %s with a body that is not a JSON object: %v", r.Method, r.URL, err)
		}
		b.mu.Lock()
		b.calls = append(b.calls, c)
		b.mu.Unlock()
		route(w, r, c)
	}))
	t.Cleanup(srv.Close)
	b.URL = srv.URL
	return b
}

// Called returns the calls so far, in order.
func (b *Backend) Called() []UpstreamCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]UpstreamCall(nil), b.calls...)
}

// ActionStatus is GET /v1/actions/{id}.
type ActionStatus struct {
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

// Submit posts an action that must be accepted and returns its ID.
func (n *Node) Submit(t testing.TB, body, key string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.URL+"/v1/actions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := n.Client.Do(req)
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

// Finished polls an action's status until it is final.
func (n *Node) Finished(t testing.TB, id string) ActionStatus {
	t.Helper()
	var a ActionStatus
	wait.For(t, 15*time.Second, "action "+id+" to finish", func() bool {
		status, body := n.Get(t, "/v1/actions/"+id)
		if status != http.StatusOK {
			t.Fatalf("GET /v1/actions/%s: status %d, body %s", id, status, body)
		}
		a = ActionStatus{}
		if err := json.Unmarshal(body, &a); err != nil {
			t.Fatalf("status body %s: %v", body, err)
		}
		return a.Status == "succeeded" || a.Status == "failed"
	})
	return a
}

// Event is one event of an SSE stream.
type Event struct {
	Topic string          `json:"topic"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
}

// Subscribe opens an SSE stream; its events arrive on the channel, read
// by a goroutine that ends with the test.
func (n *Node) Subscribe(t testing.TB, pattern string) <-chan Event {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/v1/events?topic="+pattern, nil)
	resp, err := (&http.Client{Transport: n.Client.Transport}).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /v1/events: %v %v", resp, err)
	}
	events := make(chan Event, 16)
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
				var e Event
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

// Next returns the next event of a Subscribe stream, failing t after 15 s
// without one.
func Next(t testing.TB, events <-chan Event) Event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(15 * time.Second):
		t.Fatal("no SSE event within 15s")
		return Event{}
	}
}
