package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestBenchFailover runs herald bench over two node processes on one log
// and kills one of them (SIGKILL) while it publishes: the killed node's
// subscribers resume from their cursors on the other node, and the
// bench's own checks find nothing lost, repeated or out of order. At 500
// events a second per topic, a resume without the cursor would miss some.
func TestBenchFailover(t *testing.T) { heraldtest.ForEachBroker(t, testBenchFailover) }

func testBenchFailover(t *testing.T, broker string) {
	a := startProcess(t, "--broker", broker)
	b := startProcess(t, "--broker", broker)
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- runBench(ctx, []string{"--url", a.URL + "," + b.URL, "--transport", "mixed",
			"--subscribers", "20", "--topics", "2", "--rate", "1000", "--duration", "2s",
			"--quiet", "--json", out}, &stdout, io.Discard)
	}()
	// Once b's subscribers have had events (so have cursors), b dies.
	wait.For(t, 30*time.Second, "deliveries on the node to kill", func() bool {
		fams, _ := heraldtest.Scrape(t, b.URL+"/metrics")
		n, _ := heraldtest.Value(fams, "herald_deliveries_total")
		return n >= 200
	})
	b.kill()
	if err := <-done; err != nil {
		t.Fatalf("bench: %v\n%s", err, stdout.String())
	}
	rep, _ := readReport(t, out)
	if rep.Nodes != 2 || len(rep.NodeConnected) != 2 || rep.NodeConnected[0] != 10 || rep.NodeConnected[1] != 10 {
		t.Fatalf("nodes %d, connected first %v: want 10 on each of 2", rep.Nodes, rep.NodeConnected)
	}
	if rep.Failovers != 10 || rep.Reconnects < rep.Failovers {
		t.Fatalf("failovers %d, reconnects %d: want the 10 subscribers of the killed node", rep.Failovers, rep.Reconnects)
	}
	if rep.Published == 0 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 || rep.Resets != 0 {
		t.Fatalf("published %d; delivered %d of %d, lost %d, dup %d, ooo %d, resets %d",
			rep.Published, rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder, rep.Resets)
	}
	if !strings.Contains(stdout.String(), "nodes 2  connected first 10/10  failovers 10") {
		t.Fatalf("the summary does not tell the failovers:\n%s", stdout.String())
	}
}

// TestBenchMerge adds up two shards' reports and the nodes' memory
// samples: counts and rates are sums, p50 is weighted by deliveries, p99
// the higher shard's, and memory per connection is the nodes' growth over
// the connections each held. A shard's loss makes the merge fail.
func TestBenchMerge(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v any) string {
		b, _ := json.Marshal(v)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("shard-1.json", bench.Report{Mode: "fanout", Shard: "1/2", Transport: "mixed", Subscribers: 100, Connected: 100,
		DurationS: 5, Published: 50, Expected: 1000, Delivered: 1000, DeliveriesPerSec: 200, Reconnects: 3, Failovers: 3,
		LatencyMS: bench.Latency{P50: 1, P99: 4, Max: 9}, Nodes: 2, NodeConnected: []int{50, 50}, Errors: map[string]int64{"reconnect_refused": 1}})
	write("shard-2.json", bench.Report{Mode: "fanout", Shard: "2/2", Transport: "mixed", Subscribers: 100, Connected: 100,
		DurationS: 6, Published: 50, Expected: 3000, Delivered: 3000, DeliveriesPerSec: 300,
		LatencyMS: bench.Latency{P50: 3, P99: 2, Max: 5}, Nodes: 2, NodeConnected: []int{50, 50}})
	nodes := write("nodes.json", []bench.NodeSample{
		{URL: "http://127.0.0.1:1", PID: 1, RSSKBBefore: 10000, RSSKBHeld: 10500, RSSKBPeak: 11000},
		{URL: "http://127.0.0.1:2", PID: 2, Killed: true, RSSKBBefore: 10000, RSSKBHeld: 11000},
	})
	out := filepath.Join(dir, "summary.json")
	var stdout bytes.Buffer
	if err := runBench(context.Background(), []string{"--merge", filepath.Join(dir, "shard-*.json"), "--nodes", nodes, "--json", out}, &stdout, io.Discard); err != nil {
		t.Fatalf("merge: %v\n%s", err, stdout.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var c bench.ClusterReport
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"mode", "transport", "subscribers", "duration_s", "offered_per_sec", "deliveries_per_sec", "lost", "duplicates", "out_of_order", "latency_ms", "errors"} {
		var m map[string]json.RawMessage
		_ = json.Unmarshal(raw, &m)
		if _, ok := m[k]; !ok {
			t.Errorf("summary lacks %q, which SPEC requires of a bench report", k)
		}
	}
	if c.Mode != "fanout" || c.Shards != 2 || c.Nodes != 2 || c.Subscribers != 200 || c.Published != 100 || c.Delivered != 4000 || c.DeliveriesPerSec != 500 || c.DurationS != 6 {
		t.Fatalf("sums wrong: %+v", c)
	}
	if c.LatencyMS.P50 != 2.5 || c.LatencyMS.P99 != 4 || c.LatencyMS.Max != 9 {
		t.Fatalf("latency %+v: want p50 2.5 (weighted), p99 4 and max 9 (highest)", c.LatencyMS)
	}
	if c.Reconnects != 3 || c.Failovers != 3 || c.Errors["reconnect_refused"] != 1 {
		t.Fatalf("reconnects %d, failovers %d, errors %v", c.Reconnects, c.Failovers, c.Errors)
	}
	if len(c.NodeReports) != 2 || c.NodeReports[0].Connected != 100 || c.NodeReports[0].RSSPerConnBytes != 5120 ||
		c.NodeReports[1].RSSPerConnBytes != 10240 || !c.NodeReports[1].Killed || c.RSSPerConnBytes != 7680 {
		t.Fatalf("memory per connection: %+v, overall %d", c.NodeReports, c.RSSPerConnBytes)
	}
	for _, want := range []string{"cluster  nodes 2  shards 2", "achieved 500/s", "lost 0  duplicates 0", "node 2  http://127.0.0.1:2", "killed", "rss per connection 7680 bytes"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout.String())
		}
	}

	write("shard-3.json", bench.Report{Mode: "fanout", Shard: "3/3", Transport: "ws", Subscribers: 10, Expected: 10, Delivered: 9, Lost: 1})
	err = runBench(context.Background(), []string{"--merge", filepath.Join(dir, "shard-*.json")}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "lost 1") {
		t.Fatalf("a shard's loss: merge said %v", err)
	}
	if err := runBench(context.Background(), []string{"--merge", filepath.Join(dir, "none-*.json")}, io.Discard, io.Discard); err == nil {
		t.Fatal("merge of no files succeeded")
	}
	if err := runBench(context.Background(), []string{"--merge", nodes}, io.Discard, io.Discard); err == nil {
		t.Fatal("merge of a file that is no report succeeded")
	}
	if err := runBench(context.Background(), []string{"--nodes", nodes}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--nodes needs --merge") {
		t.Fatalf("--nodes without --merge: %v", err)
	}
}
