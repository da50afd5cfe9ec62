package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

// scrape reads and parses a /metrics page.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v\n%s", url, resp.StatusCode, err, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the metrics do not parse: %v\n%s", err, body)
	}
	return fams, string(body)
}

// value returns the value of the series of name whose labels include
// labels ("k=v" each), and whether there is one. For a histogram it is
// the number of observations.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetrics drives a server as its users do (an SSE stream, a
// WebSocket, publishes, an action, a bad path) and reads what /metrics
// says about it.
func TestMetrics(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	lines, stopSSE := streamLines(ctx, t, in.url+"/v1/events?topic=secret-topic-name.*", "")
	nextLine(t, lines, "retry:")
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.url, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: in.client.Transport},
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
		if status, body := in.post(t, "/v1/publish", fmt.Sprintf(`{"topic":"secret-topic-name.a","data":%d}`, i)); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, body)
		}
	}
	for range events {
		nextLine(t, lines, "data:")
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
	}
	id := in.submit(t, `{"type":"echo","topic":"done","payload":1}`, "")
	in.finished(t, id)
	// The status is final before the result event is published, so a
	// scrape right after it may not count that event yet.
	wait.For(t, 10*time.Second, "the action's result to be published", func() bool {
		fams, _ := scrape(t, in.url+"/metrics")
		n, _ := value(fams, "herald_events_published_total")
		return n == events+1
	})
	if status, _ := in.get(t, "/no/such/path"); status != http.StatusNotFound {
		t.Fatalf("GET /no/such/path: %d", status)
	}

	fams, body := scrape(t, in.url+"/metrics")
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
		v, ok := value(fams, w.name, w.labels...)
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
		fams, _ := scrape(t, in.url+"/metrics")
		sse, _ := value(fams, "herald_disconnects_total", "transport=sse", "reason=closed")
		ws, _ := value(fams, "herald_disconnects_total", "transport=ws", "reason=closed")
		open, _ := value(fams, "herald_connections", "transport=sse")
		return sse == 1 && ws == 1 && open == 0
	})
	fams, _ = scrape(t, in.url+"/metrics")
	// The example Grafana dashboard asks only for metrics that exist.
	dashboardMetricsExist(t, fams)
	if v, _ := value(fams, "herald_http_requests_total", "route=/v1/events", "code=200"); v != 1 {
		t.Errorf("the ended SSE stream is counted %v times among the requests, want 1", v)
	}
	if v, _ := value(fams, "herald_http_requests_total", "route=/v1/ws", "code=101"); v != 1 {
		t.Errorf("the ended WebSocket is counted %v times among the requests, want 1", v)
	}
}

// dashboardMetricsExist checks that every metric the dashboard's queries
// name is among fams (a histogram by its family name).
func dashboardMetricsExist(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	raw, err := os.ReadFile("../../deploy/grafana/herald-dashboard.json")
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

// TestMetricsInternalListener: with --metrics-addr, /metrics (and, with
// --pprof, the profiles) are served there and not on --addr.
func TestMetricsInternalListener(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0")
	base := internalURL(t, in)
	if fams, _ := scrape(t, base+"/metrics"); fams["herald_build_info"] == nil {
		t.Fatal("no herald_build_info on the internal listener")
	}
	if status, _ := in.get(t, "/metrics"); status != http.StatusNotFound {
		t.Errorf("GET /metrics on --addr: %d, want 404", status)
	}
	resp, err := http.Get(base + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/ without --pprof: %d, want 404", resp.StatusCode)
	}
}

// internalURL finds the address of the --metrics-addr listener in the log.
func internalURL(t *testing.T, in *instance) string {
	t.Helper()
	re := regexp.MustCompile(`msg="internal endpoints listening" addr=(\S+)`)
	var addr string
	wait.For(t, 10*time.Second, "the internal listener in the log", func() bool {
		m := re.FindStringSubmatch(in.logs.String())
		if m != nil {
			addr = m[1]
		}
		return m != nil
	})
	return "http://" + addr
}
