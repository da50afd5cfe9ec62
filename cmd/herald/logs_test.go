package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// TestJSONLogsStayJSON runs the herald binary with --log-format json and an
// action upstream that drops the first connection without an answer, so
// that the node logs the failed attempt and retries. Every line the process
// writes to stderr, that warning among them, must be one JSON object: a log
// pipeline parses the stream line by line.
func TestJSONLogsStayJSON(t *testing.T) {
	var calls atomic.Int64
	up := heraldtest.NewBackend(t, func(w http.ResponseWriter, r *http.Request, c heraldtest.UpstreamCall) {
		if calls.Add(1) == 1 {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"done":true}`))
	})
	p := startProcess(t, "--log-format", "json", "--action-upstream", "work="+up.URL)
	in := &heraldtest.Node{URL: p.URL, Client: &http.Client{Timeout: 10 * time.Second}}
	id := in.Submit(t, `{"type":"work","topic":"jobs"}`, "")
	if a := in.Finished(t, id); a.Status != "succeeded" || a.Attempts != 2 {
		t.Fatalf("action %+v: want succeeded at the second attempt", a)
	}
	if code := p.terminate(t, 20*time.Second); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}

	warned := false
	for line := range strings.Lines(p.Logs.String()) {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("stderr line is not a JSON object (%v): %q", err, line)
			continue
		}
		if rec.Level == "WARN" && rec.Msg == "upstream attempt failed" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no JSON warning about the failed upstream attempt in the log:\n%s", p.Logs)
	}
}
