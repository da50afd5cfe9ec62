package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// TestMetrics drives a server as its users do (an SSE stream, a
// WebSocket, publishes, an action, a bad path) and reads what /metrics
// says about it.
func TestMetrics(t *testing.T) {
	in := start(t, server.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	lines, stopSSE := heraldtest.StreamLines(ctx, t, in.URL+"/v1/events?topic=secret-topic-name.*", "")
	heraldtest.NextLine(t, lines, "retry:")
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: in.Client.Transport},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"1","topics":["secret-topic-name.*"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, msg, err := c.Read(ctx); err != nil || !strings.Contains(string(msg), `"ok"`) {
		t.Fatalf("subscribe reply %s, %v", msg, err)
	}

	const events = 5
	for i := range events {
		if status, body := in.Post(t, "/v1/publish", fmt.Sprintf(`{"topic":"secret-topic-name.a","data":%d}`, i)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	for range events {
		heraldtest.NextLine(t, lines, "data:")
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	id := in.Submit(t, `{"type":"echo","topic":"done","payload":1}`, "")
	in.Finished(t, id)
	// The status is final before the result event is published, so a
	// scrape right after it may not count that event yet.
	wait.For(t, 10*time.Second, "the action's result to be published", func() bool {
		fams, _ := heraldtest.Scrape(t, in.URL+"/metrics")
		n, _ := heraldtest.Value(fams, "herald_events_published_total")
		return n == events+1
	})
	if status, _ := in.Get(t, "/no/such/path"); status != http.StatusNotFound {
		t.Fatalf("GET /no/such/path: %d", status)
	}

	fams, body := heraldtest.Scrape(t, in.URL+"/metrics")
	want := []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"herald_connections", []string{"transport=sse"}, 1, 1},
		{"herald_connections", []string{"transport=ws"}, 1, 1},
		{"herald_connects_total", []string{"transport=ws"}, 1, 1},
		{"herald_events_published_total", nil, events + 1, events + 1}, // and the action's result
		{"herald_deliveries_total", nil, 2 * events, 2 * events},
		{"herald_direct_writes_total", nil, 0, 2 * events},      // those written by the dispatcher: as the writers' timing allows
		{"herald_delivery_latency_seconds", nil, 1, 2 * events}, // one per write: writes may carry several events
		{"herald_history_events", nil, events + 1, events + 1},
		{"herald_broker_up", nil, 1, 1},
		{"herald_broker_errors_total", []string{"op=publish"}, 0, 0},
		{"herald_actions_accepted_total", nil, 1, 1},
		{"herald_actions_finished_total", []string{"status=succeeded"}, 1, 1},
		{"herald_actions_finished_total", []string{"status=failed"}, 0, 0},
		{"herald_action_duration_seconds", []string{"status=succeeded"}, 1, 1},
		{"herald_actions_running", nil, 0, 0},
		{"herald_http_requests_total", []string{"route=/v1/publish", "code=200"}, events, events},
		{"herald_http_requests_total", []string{"route=/v1/actions", "code=202"}, 1, 1},
		{"herald_http_requests_total", []string{"route=/v1/actions/{id}", "code=200"}, 1, 100},
		{"herald_http_requests_total", []string{"route=unmatched", "code=404"}, 1, 1},
		{"herald_http_request_duration_seconds", []string{"route=/v1/publish"}, events, events},
		{"herald_queue_bytes", nil, 0, 1 << 20},
		{"herald_build_info", nil, 1, 1},
		{"go_goroutines", nil, 1, 1e6},
		{"process_open_fds", nil, 1, 1e6},
	}
	for _, w := range want {
		v, ok := heraldtest.Value(fams, w.name, w.labels...)
		if !ok || v < w.min || v > w.max {
			t.Errorf("%s%v = %v (found %v), want %v to %v", w.name, w.labels, v, ok, w.min, w.max)
		}
	}
	// No label is made of what clients send: topics, paths, IDs.
	for _, leak := range []string{"secret-topic-name", "/no/such/path", id} {
		if strings.Contains(body, leak) {
			t.Errorf("the metrics mention %q", leak)
		}
	}

	// Ended connections are counted by reason.
	stopSSE()
	c.Close(websocket.StatusNormalClosure, "")
	wait.For(t, 10*time.Second, "the disconnects to be counted", func() bool {
		fams, _ := heraldtest.Scrape(t, in.URL+"/metrics")
		sse, _ := heraldtest.Value(fams, "herald_disconnects_total", "transport=sse", "reason=closed")
		ws, _ := heraldtest.Value(fams, "herald_disconnects_total", "transport=ws", "reason=closed")
		open, _ := heraldtest.Value(fams, "herald_connections", "transport=sse")
		return sse == 1 && ws == 1 && open == 0
	})
	fams, _ = heraldtest.Scrape(t, in.URL+"/metrics")
	// The example Grafana dashboard asks only for metrics that exist.
	dashboardMetricsExist(t, fams)
	if v, _ := heraldtest.Value(fams, "herald_http_requests_total", "route=/v1/events", "code=200"); v != 1 {
		t.Errorf("the ended SSE stream is counted %v times among the requests, want 1", v)
	}
	if v, _ := heraldtest.Value(fams, "herald_http_requests_total", "route=/v1/ws", "code=101"); v != 1 {
		t.Errorf("the ended WebSocket is counted %v times among the requests, want 1", v)
	}
}

// dashboardMetricsExist checks that every metric the dashboard's queries
// name is among fams (a histogram by its family name).
func dashboardMetricsExist(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	raw, err := os.ReadFile("../deploy/grafana/herald-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	// Only a shared broker reports reconnects.
	sharedOnly := map[string]bool{"herald_broker_reconnects_total": true}
	names := regexp.MustCompile(`\b(?:herald|go|process)_[a-z_]+\b`)
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range names.FindAllString(tg.Expr, -1) {
				n++
				fam := strings.TrimSuffix(name, "_bucket")
				if fams[fam] == nil && !sharedOnly[fam] {
					t.Errorf("panel %q asks for %s, which the server does not export", p.Title, name)
				}
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d metric names in the dashboard", n)
	}
}

// TestMetricsInternalListener: with MetricsAddr, /metrics (and, with
// Pprof, the profiles) are served there and not on Addr.
func TestMetricsInternalListener(t *testing.T) {
	in := start(t, server.Config{MetricsAddr: "127.0.0.1:0"})
	base := in.InternalURL(t)
	if fams, _ := heraldtest.Scrape(t, base+"/metrics"); fams["herald_build_info"] == nil {
		t.Fatal("no herald_build_info on the internal listener")
	}
	if status, _ := in.Get(t, "/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics on Addr: %d, want 404", status)
	}
	resp, err := http.Get(base + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without Pprof: %d, want 404", resp.StatusCode)
	}
}

// TestServeDebugEndpoints checks MetricsAddr with Pprof: profiles, and a memory
// release that answers with what the runtime holds.
func TestServeDebugEndpoints(t *testing.T) {
	in := start(t, server.Config{MetricsAddr: "127.0.0.1:0", Pprof: true})
	base := in.InternalURL(t)
	resp, err := in.Client.Get(base + "/debug/pprof/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /debug/pprof/: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = in.Client.Post(base+"/debug/free-memory", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /debug/free-memory: %v %v", resp, err)
	}
	var m map[string]uint64
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil || m["heap_inuse_bytes"] == 0 || m["goroutines"] == 0 {
		t.Fatalf("free-memory answered %v, %v", m, err)
	}
	if resp, err := in.Client.Get(base + "/debug/free-memory"); err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET /debug/free-memory: %v %v, want 405", resp, err)
	} else {
		resp.Body.Close()
	}
	// The public listener does not serve them.
	if resp, err := in.Client.Get(in.URL + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /debug/pprof/ on the public listener: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}
}
