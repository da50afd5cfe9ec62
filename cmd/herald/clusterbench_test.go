package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
)

// TestClusterBenchScript runs scripts/cluster-bench.sh (make
// cluster-bench) at a tiny size, with a node killed halfway, on each
// broker: the summary it writes has every subscriber connected, nothing
// lost, repeated or out of order, the dead node's subscribers failed over,
// and each node's memory; and no node it started outlives it.
func TestClusterBenchScript(t *testing.T) {
	for _, broker := range []string{"redis", "nats"} {
		t.Run(broker, func(t *testing.T) { testClusterBenchScript(t, broker) })
	}
}

func testClusterBenchScript(t *testing.T, broker string) {
	bin, err := buildHerald()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../../scripts/cluster-bench.sh")
	cmd.Env = append(os.Environ(), "BIN="+bin, "OUT="+out, "BROKER="+broker, "NODES=2", "SHARDS=2",
		"SUBSCRIBERS=40", "TOPICS=2", "RATE=200", "DURATION=4s", "KILL=1", "PROFILE=1", "PROFILE_SECONDS=1", "SETTLE=500ms")
	stdout, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cluster-bench: %v\n%s", err, stdout)
	}
	raw, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	var c bench.ClusterReport
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.Shards != 2 || c.Nodes != 2 || c.Connected != 40 || c.Published == 0 || c.Delivered != c.Expected || !c.Exact() {
		t.Fatalf("summary: shards %d, nodes %d, connected %d, published %d, delivered %d of %d, lost %d, dup %d, ooo %d\n%s",
			c.Shards, c.Nodes, c.Connected, c.Published, c.Delivered, c.Expected, c.Lost, c.Duplicates, c.OutOfOrder, stdout)
	}
	if c.Failovers != 20 {
		t.Fatalf("failovers %d: want the killed node's 20 subscribers\n%s", c.Failovers, stdout)
	}
	if len(c.NodeReports) != 2 || c.NodeReports[0].Killed || !c.NodeReports[1].Killed {
		t.Fatalf("node reports %+v: want the second node killed", c.NodeReports)
	}
	// The CPU profiles of the surviving node and of a shard (the second
	// node's may be cut short by its death).
	for _, f := range []string{"node-1.cpu.pprof", "shard-1.cpu.pprof"} {
		if fi, err := os.Stat(filepath.Join(out, f)); err != nil || fi.Size() == 0 {
			t.Errorf("profile %s: %v (want a non-empty file)\n%s", f, err, stdout)
		}
	}
	for _, n := range c.NodeReports {
		if n.Connected != 20 || n.RSSKBBefore <= 0 || n.RSSKBHeld <= 0 || n.RSSKBPeak < n.RSSKBBefore {
			t.Fatalf("node %s: connected %d, rss kB before %d, held %d, peak %d", n.URL, n.Connected, n.RSSKBBefore, n.RSSKBHeld, n.RSSKBPeak)
		}
		if err := syscall.Kill(n.PID, 0); err == nil {
			t.Errorf("node %s (pid %d) outlived the script", n.URL, n.PID)
		}
	}
}
