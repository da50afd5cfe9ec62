package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/action/memstore"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/limit"
	"github.com/heraldpush/herald/transport/httpapi"
	"github.com/heraldpush/herald/transport/sse"
	"github.com/heraldpush/herald/transport/ws"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// server is a real hub behind the real router on a real socket.
type server struct {
	hub     *hub.Hub
	actions action.Runner // nil unless serverOptions.actions was set
	url     string
	client  *http.Client
}

type serverOptions struct {
	retain       int // memory broker size; 0: default
	maxBody      int64
	maxBatch     int
	readTimeout  time.Duration
	writeTimeout time.Duration
	observe      func(route string, code int, d time.Duration) // Config.ObserveRequest
	sse, ws      http.Handler                                  // nil: the real transports
	logger       *slog.Logger
	// actions, when not nil, starts an action service with these options
	// (Hub filled in) and serves it over HTTP and WebSocket.
	actions *action.Options
	cors    []string // CORSOrigins
	// wsOrigins are the WebSocket's AllowedOrigins; the binary passes
	// --allowed-origins and --cors-origins.
	wsOrigins []string
	auth      *auth.Authenticator
	// limits
	publishRates, actionRates *limit.Rates
	conns                     *limit.Conns
}

func newServer(t *testing.T, o serverOptions) *server {
	t.Helper()
	h, err := hub.New(hub.Options{Broker: hub.NewMemoryBroker(hub.MemoryOptions{Size: o.retain}), Shards: 2})
	if err != nil {
		t.Fatalf("failed to start hub: %v", err)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	var svc action.Runner // a nil *action.Service would not be a nil Runner
	if o.actions != nil {
		ao := *o.actions
		ao.Hub = h
		ao.Logger = o.logger
		st := memstore.New(memstore.Options{TTL: ao.TTL})
		t.Cleanup(st.Close) // after the cleanup below, which shuts the actions down
		ao.Store = st
		s, err := action.New(ao)
		if err != nil {
			t.Fatalf("failed to start actions: %v", err)
		}
		svc = s
	}
	if o.sse == nil {
		o.sse = sse.New(sse.Options{Hub: h, Auth: o.auth, Conns: o.conns})
	}
	if o.ws == nil {
		o.ws = ws.New(ws.Options{Hub: h, Actions: svc, Auth: o.auth, Conns: o.conns, AllowedOrigins: o.wsOrigins,
			PublishRates: o.publishRates, ActionRates: o.actionRates})
	}
	srv := httptest.NewServer(httpapi.NewRouter(httpapi.Config{
		Hub: h, SSE: o.sse, WS: o.ws, Actions: svc, MaxBody: o.maxBody, MaxBatch: o.maxBatch, ReadTimeout: o.readTimeout, WriteTimeout: o.writeTimeout, Logger: o.logger,
		ObserveRequest: o.observe,
		CORSOrigins:    o.cors, Auth: o.auth, PublishRates: o.publishRates, ActionRates: o.actionRates,
	}))
	tr := &http.Transport{}
	t.Cleanup(func() {
		// The order of the server binary: clients first, then actions
		// (which publish their results), then the hub.
		h.Shutdown()
		tr.CloseIdleConnections()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if w, ok := o.sse.(interface{ Wait(context.Context) error }); ok {
			if err := w.Wait(ctx); err != nil {
				t.Errorf("SSE streams: %v", err)
			}
		}
		if svc != nil {
			if err := svc.Shutdown(ctx); err != nil {
				t.Errorf("failed to shut actions down: %v", err)
			}
		}
		if err := h.Close(ctx); err != nil {
			t.Errorf("failed to close hub: %v", err)
		}
	})
	return &server{hub: h, actions: svc, url: srv.URL, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// response is what a client observed.
type response struct {
	status int
	header http.Header
	body   []byte
}

// noContentType asks do to send no Content-Type header at all.
const noContentType = "-"

func (s *server) do(t *testing.T, method, path, contentType, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("failed to build request: %v", err)
	}
	if contentType != noContentType {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: failed to read body: %v", method, path, err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func (s *server) publish(t *testing.T, body string) response {
	t.Helper()
	return s.do(t, http.MethodPost, "/v1/publish", "application/json", body)
}

// mustPublish publishes one event and returns its cursor.
func (s *server) mustPublish(t *testing.T, topic, typ, data string) string {
	t.Helper()
	ev := map[string]any{"topic": topic}
	if typ != "" {
		ev["type"] = typ
	}
	if data != "" {
		ev["data"] = json.RawMessage(data)
	}
	body, err := json.Marshal(ev)
	if err != nil {
		t.Fatalf("failed to encode event: %v", err)
	}
	r := s.publish(t, string(body))
	if r.status != http.StatusOK {
		t.Fatalf("publish %s: status %d, body %s", topic, r.status, r.body)
	}
	var out struct{ ID string }
	decodeStrict(t, r.body, &out)
	return out.ID
}

// decodeStrict decodes b into v, failing on unknown fields or trailing data.
func decodeStrict(t *testing.T, b []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("failed to decode %s: %v", b, err)
	}
	if dec.More() {
		t.Fatalf("trailing data after JSON in %s", b)
	}
}

// assertError checks the protocol's error shape,
// {"error":{"code":CODE,"message":TEXT}}, and the status.
func assertError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("error body is not the protocol's shape: %v: %s", err, r.body)
	}
	if len(doc) != 1 || doc["error"] == nil {
		t.Fatalf("error body must have exactly one key \"error\": %s", r.body)
	}
	e := doc["error"]
	if len(e) != 2 {
		t.Errorf("error object must have exactly code and message: %s", r.body)
	}
	if got, _ := e["code"].(string); got != code {
		t.Errorf("code = %q, want %q (body %s)", e["code"], code, r.body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("message must be a non-empty string: %s", r.body)
	}
}

// history reads a topic's history and returns the decoded events.
func (s *server) history(t *testing.T, topic, query string) []hub.Event {
	t.Helper()
	r := s.do(t, http.MethodGet, "/v1/topics/"+topic+"/history"+query, noContentType, "")
	if r.status != http.StatusOK {
		t.Fatalf("history %s%s: status %d, body %s", topic, query, r.status, r.body)
	}
	var out struct{ Events []hub.Event }
	decodeStrict(t, r.body, &out)
	if out.Events == nil {
		t.Fatalf("history %s%s: \"events\" must be an array, got %s", topic, query, r.body)
	}
	return out.Events
}

// syncBuffer is a concurrency-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
