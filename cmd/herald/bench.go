package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
)

// runBench runs "herald bench": subscribers and fixed-rate publishers against
// a running server, a live status line on stderr, and a report at the end.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var cfg bench.Config
	var jsonOut, htmlOut, shard, merge, nodesFile, cpuProfile string
	var quiet bool
	fs := flag.NewFlagSet("herald bench", flag.ContinueOnError)
	fs.StringVar(&cfg.Mode, "mode", bench.ModeFanout, "fanout (publish and measure deliveries), actions (post actions, measure 202 time; subscribers check the result events), connect (connection ramp rate and latency) or idle (hold idle connections, measure server memory)")
	fs.StringVar(&cfg.ActionType, "action-type", "echo", "actions mode: the action `TYPE` to post; the server needs a handler for it")
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "server base `URL`, or the nodes of a cluster as a comma-separated list: each subscriber connects to one (round robin), and when its node ends the connection resumes from its cursor on another (a dead node's subscribers spread evenly over the others); publishing goes to the first unless --publish-url")
	fs.StringVar(&cfg.PublishURL, "publish-url", "", "publish (and submit actions) to this `URL` instead of --url: another node of a cluster, so that every delivery crosses the broker")
	fs.StringVar(&cfg.Transport, "transport", "ws", "subscriber transport: ws, sse or mixed (half each)")
	fs.IntVar(&cfg.Subscribers, "subscribers", 1000, "subscriber connections")
	fs.IntVar(&cfg.Topics, "topics", 10, "topics; subscriber i subscribes to topic i mod K")
	fs.IntVar(&cfg.Publishers, "publishers", 4, "publishing goroutines (each owns a share of the topics)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "publish requests (actions mode: actions) per second, all publishers together")
	fs.IntVar(&cfg.Batch, "batch", 1, "events per publish request")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "how long to publish (idle mode: how long to hold the connections)")
	fs.Float64Var(&cfg.Ramp, "ramp", 0, "connect and idle modes: new connections per second (0: as fast as the dial workers go)")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "`PID` of a server on this machine: idle mode samples its resident memory (VmRSS), fanout mode its CPU time (instead of /metrics)")
	fs.StringVar(&cfg.ServerDebug, "server-debug", "", "base `URL` of the server's --metrics-addr listener: fanout mode reads the server's CPU time (process_cpu_seconds_total) from its /metrics (default: --url's /metrics; --server-pid, if given, is read instead); idle mode (run the server with --pprof) has each memory sample follow a garbage collection that returns free memory to the system")
	fs.IntVar(&cfg.Payload, "payload", 64, "padding bytes per event (--payload-shape pad)")
	fs.IntVar(&cfg.Keys, "key-space", 0, "publish keyed events, cycling through `N` keys per topic (0: no key)")
	fs.IntVar(&cfg.Keys, "keys", 0, "the same as --key-space")
	fs.StringVar(&cfg.PayloadShape, "payload-shape", bench.ShapePad, "event data: pad ({\"bseq\",\"bts\",\"pad\"} with --payload bytes of padding) or dashboard (a ~3.7 KB JSON object per key: labels, 40 metrics as {name, value, unit, status} and 8 panels, of which each event of a key changes one metric's value besides bseq and bts; --payload is ignored)")
	fs.BoolVar(&cfg.Prime, "prime", false, "with --key-space: publish each key of each topic once before the measured phase and wait until every subscriber has them, so that rates, latency, bytes on the wire and server CPU are those of a steady state in which every key has a previous event (the primed events still count for loss)")
	fs.BoolVar(&cfg.WSCompression, "ws-compression", false, "WebSocket subscribers offer permessage-deflate (client_no_context_takeover, server_no_context_takeover) and inflate compressed messages; the report says on how many connections the server accepted it")
	fs.BoolVar(&cfg.Delta, "delta", false, "WebSocket subscribers subscribe with \"delta\":\"fossil\", rebuild each keyed event's data from the last one of its key and check it is what was published (error kind delta_mismatch); needs --key-space and --transport ws; each connection keeps the data of every key of its topic (memory: subscribers × keys × data size)")
	fs.IntVar(&cfg.SourceIPs, "source-ips", 1, "spread connections over 127.0.0.1 … 127.0.0.N (one address has ~28k ports)")
	fs.IntVar(&cfg.DialWorkers, "dial-workers", 64, "concurrent connection attempts while ramping up")
	fs.StringVar(&cfg.Prefix, "prefix", "bench", "topic `PREFIX`: topics are PREFIX.0 … PREFIX.K-1")
	fs.StringVar(&shard, "shard", "", "run shard `i/n` of a load split over n bench processes: this one takes its share of --subscribers and --rate, topics PREFIX-si.*, and source addresses after the other shards'")
	fs.DurationVar(&cfg.Drain, "drain", 5*time.Second, "how long to wait for late deliveries after publishing")
	fs.DurationVar(&cfg.Settle, "settle", 0, "hold the connected subscribers idle this long before publishing starts (for sampling a server's memory with every connection held)")
	fs.Int64Var(&cfg.Events, "events", 0, "publish exactly `N` events (actions mode: actions) at --rate, instead of publishing for --duration")
	fs.Float64Var(&cfg.ChaosDisconnect, "chaos-disconnect", 0, "forced disconnects per second while publishing: each cuts a random subscriber's connection from the client side, and the subscriber reconnects at once and resumes from its last event (SSE Last-Event-ID, WebSocket subscribe since); the report counts the reconnects, and loss, duplicates and order are judged across them")
	fs.IntVar(&cfg.Stall, "stall", 0, "`N` extra connections that subscribe to every topic and never read (their receive window fills), left out of the figures; the report says how many the server closed")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the run's random choices (0: drawn; the report gives it, to replay a run)")
	fs.StringVar(&jsonOut, "json", "", "write the report as JSON to `FILE` (- for stdout)")
	fs.StringVar(&htmlOut, "html", "", "write the report as a self-contained HTML page with latency-over-time and histogram plots to `FILE`")
	fs.BoolVar(&quiet, "quiet", false, "no live status line")
	fs.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of this process, from the first connection to the report, to `FILE` (for go tool pprof)")
	fs.StringVar(&merge, "merge", "", "run nothing: add up the --json reports of the shards of one fan-out run, `FILES` (a glob, or a comma-separated list), print the sum and write it with --json; exits non-zero unless every event was delivered once and in order")
	fs.StringVar(&nodesFile, "nodes", "", "with --merge: a JSON `FILE` with the cluster's nodes, in --url's order, as [{\"url\",\"pid\",\"killed\",\"rss_kb_before\",\"rss_kb_held\",\"rss_kb_peak\"}], for their memory per connection")
	if err := parseFlags(fs, args, stdout, "Usage: herald bench [flags]\n\nConnects subscribers, publishes at a fixed rate, and reports deliveries/s,\nloss, duplicates, order and publish-to-receive latency. --mode actions posts\nactions instead and measures the time to 202, --mode connect the connection\nramp, --mode idle the memory idle connections cost. --chaos-disconnect cuts\nrandom subscribers, which resume from their last event; --stall adds\nconnections that never read. --ws-compression, --delta and --payload-shape\ndashboard measure the bytes on the wire per event (the kernel's count).\n--url with several nodes spreads the subscribers over a cluster, and\n--merge adds up the reports of a run split with --shard.\n\nFlags:\n"); err != nil {
		return err
	}
	if merge != "" {
		return runBenchMerge(merge, nodesFile, jsonOut, stdout)
	}
	if nodesFile != "" {
		return usagef("--nodes needs --merge")
	}
	switch cfg.Mode {
	case bench.ModeFanout, bench.ModeActions, bench.ModeConnect, bench.ModeIdle:
	default:
		return usagef("unknown --mode %q: want fanout, actions, connect or idle", cfg.Mode)
	}
	if cfg.Ramp < 0 || cfg.ServerPID < 0 || cfg.Settle < 0 {
		return usagef("--ramp, --server-pid and --settle must not be negative")
	}
	if cfg.Events < 0 || cfg.ChaosDisconnect < 0 || cfg.Stall < 0 {
		return usagef("--events, --chaos-disconnect and --stall must not be negative")
	}
	if (cfg.Events > 0 || cfg.ChaosDisconnect > 0 || cfg.Stall > 0) && cfg.Mode != bench.ModeFanout && cfg.Mode != bench.ModeActions {
		return usagef("--events, --chaos-disconnect and --stall need --mode fanout or actions")
	}
	if cfg.Prime && cfg.Keys == 0 {
		return usagef("--prime needs --key-space N")
	}
	if cfg.Delta && (cfg.Keys == 0 || cfg.Transport != "ws") {
		return usagef("--delta needs --key-space N and --transport ws")
	}
	if cfg.WSCompression && cfg.Transport == "sse" {
		return usagef("--ws-compression needs --transport ws or mixed")
	}
	switch cfg.PayloadShape {
	case bench.ShapePad, bench.ShapeDashboard:
	default:
		return usagef("unknown --payload-shape %q: want pad or dashboard", cfg.PayloadShape)
	}
	if shard != "" {
		i, n, ok := strings.Cut(shard, "/")
		var err1, err2 error
		cfg.Shard, err1 = strconv.Atoi(i)
		cfg.Shards, err2 = strconv.Atoi(n)
		if !ok || err1 != nil || err2 != nil || cfg.Shards < 1 || cfg.Shard < 1 || cfg.Shard > cfg.Shards {
			return usagef("--shard %q: want i/n with 1 <= i <= n, e.g. 2/4", shard)
		}
	}
	if !quiet {
		cfg.Progress = func(s bench.Status) { fmt.Fprintln(stderr, bench.FormatStatus(s)) }
	}
	if cpuProfile != "" {
		stop, err := startCPUProfile(cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return fmt.Errorf("failed to run bench: %w", err)
	}
	printReport(stdout, rep)
	if len(rep.Errors) > 0 {
		fmt.Fprintf(stdout, "errors %s\n", strings.Join(bench.SortedErrors(rep.Errors), " "))
		for _, k := range bench.SortedKeys(rep.ErrorSamples) {
			fmt.Fprintf(stdout, "  first %s: %s\n", k, rep.ErrorSamples[k])
		}
	}
	if err := writeReport(stdout, jsonOut, rep); err != nil {
		return err
	}
	if htmlOut != "" {
		if err := writeHTML(htmlOut, rep); err != nil {
			return fmt.Errorf("failed to write report: %w", err)
		}
	}
	if rep.Mode == bench.ModeConnect || rep.Mode == bench.ModeIdle {
		if failed := rep.Subscribers - rep.Connected; failed > 0 || len(rep.Errors) > 0 {
			return fmt.Errorf("connections failed: %d of %d did not connect, errors %s",
				failed, rep.Subscribers, strings.Join(bench.SortedErrors(rep.Errors), " "))
		}
		return nil
	}
	if rep.Mode == bench.ModeActions && rep.Accepted == 0 {
		return fmt.Errorf("no action was accepted: errors %s", strings.Join(bench.SortedErrors(rep.Errors), " "))
	}
	if n := rep.Errors["delta_mismatch"] + rep.Errors["ws_protocol"]; n > 0 {
		return fmt.Errorf("delivery was not exact: %d delta mismatches and protocol errors", n)
	}
	if rep.Lost > 0 || rep.Duplicates > 0 || rep.OutOfOrder > 0 || rep.Resets > 0 {
		return fmt.Errorf("delivery was not exact: lost %d, duplicates %d, out of order %d, resets %d", rep.Lost, rep.Duplicates, rep.OutOfOrder, rep.Resets)
	}
	return nil
}

// printChaos writes the lines of the forced disconnects and stalled
// connections, if the run had any.
func printChaos(w io.Writer, rep *bench.Report) {
	if rep.Nodes > 1 {
		fmt.Fprintf(w, "nodes %d  connected first %s  failovers %d\n", rep.Nodes, joinInts(rep.NodeConnected), rep.Failovers)
	}
	if rep.ReconnectMS != nil {
		r := rep.ReconnectMS
		if rep.Nodes > 1 && rep.Disconnects == 0 {
			fmt.Fprintf(w, "reconnects %d  resets %d  incomplete subscribers %d\n", rep.Reconnects, rep.Resets, rep.Incomplete)
		} else {
			fmt.Fprintf(w, "chaos  disconnects %d  reconnects %d  resets %d  incomplete subscribers %d  seed %d\n",
				rep.Disconnects, rep.Reconnects, rep.Resets, rep.Incomplete, rep.Seed)
		}
		fmt.Fprintf(w, "reconnect ms  p50 %.2f  p99 %.2f  max %.2f\n", r.P50, r.P99, r.Max)
	} else if rep.Resets > 0 {
		fmt.Fprintf(w, "resets %d\n", rep.Resets)
	}
	if rep.Stalled > 0 {
		fmt.Fprintf(w, "stalled %d  closed by the server %d\n", rep.Stalled, rep.StalledDisconnected)
	}
}

// joinInts writes ns as "a/b/c".
func joinInts(ns []int) string {
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, "/")
}

// printWire writes the lines of the bytes on the wire, compression, deltas
// and the server's CPU time of a fan-out run.
func printWire(w io.Writer, rep *bench.Report) {
	if rep.WireConnections > 0 {
		fmt.Fprintf(w, "wire bytes/event %.1f  payload bytes/event %.1f  ratio %.4f  (kernel TCP_INFO, %d WebSocket connections, %d deliveries)\n",
			rep.WireBytesPerEvent, rep.PayloadBytesPerEvent, rep.CompressionRatio, rep.WireConnections, rep.WireDeliveries)
	}
	if rep.WSCompression || rep.Delta || rep.Primed > 0 {
		line := fmt.Sprintf("payload %s  key space %d", rep.PayloadShape, rep.KeySpace)
		if rep.Primed > 0 {
			line += fmt.Sprintf("  primed %d events", rep.Primed)
		}
		if rep.WSCompression {
			line += fmt.Sprintf("  deflate on %d of %d WebSocket connections", rep.DeflateConnections, rep.WSConnections)
		}
		if rep.Delta {
			line += fmt.Sprintf("  deltas %d of %d deliveries", rep.DeltaDeliveries, rep.Delivered)
		}
		fmt.Fprintln(w, line)
	}
	if rep.ServerCPUUSPerDelivery > 0 {
		fmt.Fprintf(w, "server cpu %.2fs  %.3f µs/delivery\n", rep.ServerCPUS, rep.ServerCPUUSPerDelivery)
	} else if rep.ServerCPUError != "" {
		fmt.Fprintf(w, "server cpu not measured: %s\n", rep.ServerCPUError)
	}
}

// printReport writes the human summary of rep, whose lines depend on the mode.
func printReport(w io.Writer, rep *bench.Report) {
	cm := rep.ConnectMS
	switch rep.Mode {
	case bench.ModeConnect:
		fmt.Fprintf(w, "mode connect  transport %s  subscribers %d (connected %d)  ramp %.2fs\n",
			rep.Transport, rep.Subscribers, rep.Connected, rep.DurationS)
		fmt.Fprintf(w, "connects/s %.0f\n", rep.ConnectsPerSec)
		fmt.Fprintf(w, "connect ms  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", cm.P50, cm.P90, cm.P99, cm.P999, cm.Max)
	case bench.ModeIdle:
		fmt.Fprintf(w, "mode idle  transport %s  subscribers %d (connected %d)  held %.1fs\n",
			rep.Transport, rep.Subscribers, rep.Connected, rep.DurationS)
		fmt.Fprintf(w, "connect ms  p50 %.2f  p99 %.2f  max %.2f\n", cm.P50, cm.P99, cm.Max)
		if rep.ServerRSSKBBefore > 0 {
			gc := ""
			if rep.RSSAfterGC {
				gc = " (after GC)"
			}
			fmt.Fprintf(w, "server rss%s  before %d kB  after %d kB  per connection %d bytes\n",
				gc, rep.ServerRSSKBBefore, rep.ServerRSSKBAfter, rep.RSSPerConnBytes)
		}
	case bench.ModeActions:
		a := rep.AcceptMS
		fmt.Fprintf(w, "mode actions  accepted %d in %.1fs  %.0f/s\n", rep.Accepted, rep.DurationS, rep.AcceptedPerSec)
		if a != nil {
			fmt.Fprintf(w, "202 ms  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", a.P50, a.P90, a.P99, a.P999, a.Max)
		}
		if rep.Subscribers > 0 {
			l := rep.LatencyMS
			fmt.Fprintf(w, "results: transport %s  subscribers %d (connected %d)  deliveries %d of %d  lost %d  duplicates %d  out of order %d\n",
				rep.Transport, rep.Subscribers, rep.Connected, rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder)
			fmt.Fprintf(w, "action to result ms  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", l.P50, l.P90, l.P99, l.P999, l.Max)
		}
	default:
		fmt.Fprintf(w, "transport %s  subscribers %d (connected %d)  published %d in %.1fs\n",
			rep.Transport, rep.Subscribers, rep.Connected, rep.Published, rep.DurationS)
		fmt.Fprintf(w, "deliveries %d of %d  offered %.0f/s  achieved %.0f/s\n", rep.Delivered, rep.Expected, rep.OfferedPerSec, rep.DeliveriesPerSec)
		fmt.Fprintf(w, "lost %d  duplicates %d  out of order %d\n", rep.Lost, rep.Duplicates, rep.OutOfOrder)
		printWire(w, rep)
		l := rep.LatencyMS
		fmt.Fprintf(w, "latency ms  p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", l.P50, l.P90, l.P99, l.P999, l.Max)
		fmt.Fprintf(w, "connect ms  p50 %.2f  p99 %.2f  max %.2f\n", cm.P50, cm.P99, cm.Max)
		if p := rep.PublishMS; p != nil {
			fmt.Fprintf(w, "publish ms  p50 %.2f  p99 %.2f  max %.2f\n", p.P50, p.P99, p.Max)
		}
	}
	if rep.Mode == bench.ModeFanout || rep.Mode == bench.ModeActions {
		printChaos(w, rep)
	}
}

// writeHTML writes rep's HTML page to path.
func writeHTML(path string, rep *bench.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := bench.WriteHTML(f, rep); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// writeReport writes v as indented JSON to path ("-": stdout), the --json
// of bench and of bench --merge; an empty path writes nothing.
func writeReport(stdout io.Writer, path string, v any) error {
	if path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	b = append(b, '\n')
	var err error
	if path == "-" {
		_, err = stdout.Write(b)
	} else {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("failed to write report: %w", err)
	}
	return nil
}

// startCPUProfile profiles the process's CPU into file until stop.
func startCPUProfile(file string) (stop func(), err error) {
	f, err := os.Create(file)
	if err != nil {
		return nil, fmt.Errorf("failed to create the CPU profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to start the CPU profile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
