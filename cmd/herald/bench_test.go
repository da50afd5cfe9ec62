package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/loadgen"
)

// TestBenchAgainstServer runs a short mixed WS/SSE fan-out against a real
// server and checks the report a user would read: everything delivered,
// exactly once, in order, with a plausible latency distribution.
func TestBenchAgainstServer(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"--url", in.url, "--transport", "mixed", "--subscribers", "40", "--topics", "4",
		"--publishers", "2", "--rate", "200", "--batch", "2", "--duration", "1s", "--quiet", "--json", out}
	if err := runBench(ctx, args, io.Discard, io.Discard); err != nil {
		t.Fatalf("bench: %v", err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep loadgen.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	if rep.Connected != 40 || rep.Published == 0 {
		t.Fatalf("connected %d, published %d", rep.Connected, rep.Published)
	}
	if rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("delivered %d of %d, lost %d, dup %d, ooo %d", rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder)
	}
	// Each event reaches the 10 subscribers of its topic.
	if rep.Expected != rep.Published*10 {
		t.Fatalf("expected %d deliveries for %d events to 10 subscribers each", rep.Expected, rep.Published)
	}
	l := rep.LatencyMS
	if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max < 5000) {
		t.Fatalf("implausible latency summary %+v", l)
	}
	for _, k := range []string{"mode", "transport", "subscribers", "duration_s", "offered_per_sec", "deliveries_per_sec", "lost", "duplicates", "out_of_order", "latency_ms", "errors"} {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(b, &m)
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
}
