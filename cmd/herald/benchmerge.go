package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
)

// maxReportBytes bounds each file --merge reads: a report with its
// timeline is tens of kilobytes, so this leaves room for hours of seconds.
const maxReportBytes = 64 << 20

// runBenchMerge runs "herald bench --merge FILES": it adds up the shards'
// reports (and the nodes' memory samples of nodesFile, if given), prints
// the sum and writes it as JSON to jsonOut.
func runBenchMerge(files, nodesFile, jsonOut string, stdout io.Writer) error {
	var paths []string
	for _, f := range strings.Split(files, ",") {
		m, err := filepath.Glob(strings.TrimSpace(f))
		if err != nil {
			return usagef("--merge %q: %v", f, err)
		}
		paths = append(paths, m...)
	}
	if len(paths) == 0 {
		return usagef("--merge %q: no such files", files)
	}
	var reports []*bench.Report
	for _, p := range paths {
		var r bench.Report
		if err := readJSONFile(p, &r); err != nil {
			return err
		}
		reports = append(reports, &r)
	}
	var nodes []bench.NodeSample
	if nodesFile != "" {
		if err := readJSONFile(nodesFile, &nodes); err != nil {
			return err
		}
	}
	c, err := bench.Merge(reports, nodes)
	if err != nil {
		return fmt.Errorf("failed to merge reports: %w", err)
	}
	printClusterReport(stdout, c)
	if err := writeReport(stdout, jsonOut, c); err != nil {
		return err
	}
	if !c.Exact() {
		return fmt.Errorf("delivery was not exact: lost %d, duplicates %d, out of order %d, resets %d", c.Lost, c.Duplicates, c.OutOfOrder, c.Resets)
	}
	return nil
}

// readJSONFile decodes the JSON file at path into v, which must be all of it.
func readJSONFile(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxReportBytes+1))
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	if len(b) > maxReportBytes {
		return fmt.Errorf("failed to read %s: larger than %d bytes", path, maxReportBytes)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("failed to read %s: %w", path, err)
	}
	return nil
}

// printClusterReport writes the human summary of a merged run.
func printClusterReport(w io.Writer, c *bench.ClusterReport) {
	fmt.Fprintf(w, "cluster  nodes %d  shards %d  transport %s  subscribers %d (connected %d)  published %d in %.1fs\n",
		c.Nodes, c.Shards, c.Transport, c.Subscribers, c.Connected, c.Published, c.DurationS)
	fmt.Fprintf(w, "deliveries %d of %d  offered %.0f/s  achieved %.0f/s (sum of the shards')\n", c.Delivered, c.Expected, c.OfferedPerSec, c.DeliveriesPerSec)
	fmt.Fprintf(w, "lost %d  duplicates %d  out of order %d  resets %d  incomplete subscribers %d\n", c.Lost, c.Duplicates, c.OutOfOrder, c.Resets, c.Incomplete)
	l := c.LatencyMS
	fmt.Fprintf(w, "latency ms  p50 %.2f  p90 %.2f (shards' weighted by deliveries)  p99 %.2f  p99.9 %.2f  max %.2f (shards' highest)\n", l.P50, l.P90, l.P99, l.P999, l.Max)
	fmt.Fprintf(w, "connect ms  p50 %.2f  p99 %.2f  max %.2f\n", c.ConnectMS.P50, c.ConnectMS.P99, c.ConnectMS.Max)
	if r := c.ReconnectMS; r != nil && c.Reconnects > 0 {
		fmt.Fprintf(w, "reconnects %d  failovers %d  reconnect ms  p99 %.2f  max %.2f (shards' highest)\n", c.Reconnects, c.Failovers, r.P99, r.Max)
	} else {
		fmt.Fprintf(w, "reconnects %d  failovers %d\n", c.Reconnects, c.Failovers)
	}
	for i, n := range c.NodeReports {
		killed := ""
		if n.Killed {
			killed = "  killed"
		}
		fmt.Fprintf(w, "node %d  %s  pid %d  connected %d  rss kB before %d  held %d  peak %d  per connection %d bytes%s\n",
			i+1, n.URL, n.PID, n.Connected, n.RSSKBBefore, n.RSSKBHeld, n.RSSKBPeak, n.RSSPerConnBytes, killed)
	}
	if c.RSSPerConnBytes > 0 {
		fmt.Fprintf(w, "rss per connection %d bytes (all nodes' growth over all connections held)\n", c.RSSPerConnBytes)
	}
	if len(c.Errors) > 0 {
		fmt.Fprintf(w, "errors %s\n", strings.Join(bench.SortedErrors(c.Errors), " "))
	}
}
