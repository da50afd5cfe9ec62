package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// TestBenchAgainstServer runs a short mixed WS/SSE fan-out against a real
// server and checks the report a user would read: everything delivered,
// exactly once, in order, with a plausible latency distribution.
func TestBenchAgainstServer(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"--url", in.URL, "--transport", "mixed", "--subscribers", "40", "--topics", "4",
		"--publishers", "2", "--rate", "200", "--batch", "2", "--duration", "1s", "--quiet", "--json", out}
	began := time.Now()
	if err := runBench(ctx, args, io.Discard, io.Discard); err != nil {
		t.Fatalf("bench: %v", err)
	}
	took := time.Since(began)
	rep, _ := readReport(t, out)
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
	// Ordered, and no event took longer than the whole run (a bound that
	// holds however busy the machine is, unlike a fixed one).
	l := rep.LatencyMS
	if !(l.P50 > 0 && l.P50 <= l.P99 && l.P99 <= l.Max && l.Max <= float64(took.Milliseconds())) {
		t.Fatalf("implausible latency summary %+v for a run of %v", l, took)
	}
	_, m := readReport(t, out)
	for _, k := range []string{"mode", "transport", "subscribers", "duration_s", "offered_per_sec", "deliveries_per_sec", "lost", "duplicates", "out_of_order", "latency_ms", "errors"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
}

// benchJSON runs bench with args plus a JSON report and returns the report,
// its raw JSON, and runBench's error.
func benchJSON(t *testing.T, args ...string) (bench.Report, map[string]json.RawMessage, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runErr := runBench(ctx, append(args, "--quiet", "--json", out), io.Discard, io.Discard)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("no report (bench: %v): %v", runErr, err)
	}
	var rep bench.Report
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	_ = json.Unmarshal(b, &raw)
	return rep, raw, runErr
}

// TestBenchConnectMode ramps mixed connections and checks the connect
// report, and that every connection is closed afterwards.
func TestBenchConnectMode(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	rep, raw, err := benchJSON(t, "--url", in.URL, "--mode", "connect", "--transport", "mixed", "--subscribers", "50", "--topics", "5")
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if rep.Mode != "connect" || rep.Connected != 50 || len(rep.Errors) != 0 {
		t.Fatalf("mode %q connected %d errors %v, want connect 50 none", rep.Mode, rep.Connected, rep.Errors)
	}
	if rep.ConnectsPerSec <= 0 || rep.DurationS <= 0 {
		t.Fatalf("connects/s %v over %vs", rep.ConnectsPerSec, rep.DurationS)
	}
	c := rep.ConnectMS
	if !(c.P50 > 0 && c.P50 <= c.P99 && c.P99 <= c.Max && c.Max < 10000) {
		t.Fatalf("implausible connect latency %+v", c)
	}
	if rep.Published != 0 {
		t.Fatalf("connect mode published %d events", rep.Published)
	}
	if _, ok := raw["server_rss_kb_before"]; ok {
		t.Fatalf("connect mode reports server memory it did not measure")
	}
	wait.For(t, 10*time.Second, "server clients back to 0", func() bool { return in.Clients(t) == 0 })
}

// TestBenchConnectModeRamp limits the ramp rate and checks the run takes
// as long as the rate implies.
func TestBenchConnectModeRamp(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	rep, _, err := benchJSON(t, "--url", in.URL, "--mode", "connect", "--transport", "ws", "--subscribers", "20", "--ramp", "50")
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	// 20 connections at 50/s: the last is due 380 ms after the first.
	if rep.Connected != 20 || rep.DurationS < 0.38 || rep.ConnectsPerSec > 55 {
		t.Fatalf("connected %d in %.3fs (%.1f/s), want 20 no faster than 50/s", rep.Connected, rep.DurationS, rep.ConnectsPerSec)
	}
}

// TestBenchIdleMode holds idle connections and samples this process's
// memory (the server runs in it), checking the memory fields are reported.
func TestBenchIdleMode(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	rep, raw, err := benchJSON(t, "--url", in.URL, "--mode", "idle", "--transport", "mixed", "--subscribers", "40",
		"--duration", "300ms", "--server-pid", strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if rep.Mode != "idle" || rep.Connected != 40 || len(rep.Errors) != 0 {
		t.Fatalf("mode %q connected %d errors %v, want idle 40 none", rep.Mode, rep.Connected, rep.Errors)
	}
	if rep.DurationS < 0.3 {
		t.Fatalf("held %.3fs, want at least 0.3", rep.DurationS)
	}
	if rep.ServerRSSKBBefore <= 0 || rep.ServerRSSKBAfter <= 0 {
		t.Fatalf("server rss before %d after %d kB", rep.ServerRSSKBBefore, rep.ServerRSSKBAfter)
	}
	for _, k := range []string{"server_rss_kb_before", "server_rss_kb_after"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("report lacks %q", k)
		}
	}
	if want := (rep.ServerRSSKBAfter - rep.ServerRSSKBBefore) * 1024 / 40; rep.RSSPerConnBytes != want {
		t.Fatalf("rss per connection %d, want %d", rep.RSSPerConnBytes, want)
	}
	wait.For(t, 10*time.Second, "server clients back to 0", func() bool { return in.Clients(t) == 0 })
}

// TestBenchIdleModeLostConnections stops the server during the hold: the
// lost connections are errors and the exit status says so.
func TestBenchIdleModeLostConnections(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	out := filepath.Join(t.TempDir(), "report.json")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var progress heraldtest.Log
	errc := make(chan error, 1)
	go func() {
		errc <- runBench(ctx, []string{"--url", in.URL, "--mode", "idle", "--transport", "ws", "--subscribers", "10",
			"--duration", "8s", "--json", out}, io.Discard, &progress)
	}()
	wait.For(t, 20*time.Second, "the hold to start", func() bool { return strings.Contains(progress.String(), "hold") })
	in.Cancel()
	err := <-errc
	if err == nil || exitStatus(err, io.Discard) != 1 {
		t.Fatalf("bench returned %v, want a run-time failure", err)
	}
	rep, _ := readReport(t, out)
	if rep.Connected != 10 || rep.Errors["ws_close_1001"] != 10 {
		t.Fatalf("connected %d errors %v, want 10 and 10 closed with 1001", rep.Connected, rep.Errors)
	}
}

// TestBenchBadCommandLine: a command line bench cannot run is refused with
// exit status 2 before it connects to anything (an argument it would
// ignore included: "herald bench 1000" is not --subscribers 1000).
func TestBenchBadCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"--mode", "storm"}, `unknown --mode "storm"`},
		{[]string{"1000"}, `bench takes no arguments, got "1000" (see "herald bench -h")`},
		{[]string{"--delta"}, `--delta needs --key-space N and --transport ws`},
		{[]string{"--delta", "--keys", "5", "--transport", "sse"}, `--delta needs --key-space N and --transport ws`},
		{[]string{"--ws-compression", "--transport", "sse"}, `--ws-compression needs --transport ws or mixed`},
		{[]string{"--payload-shape", "huge"}, `unknown --payload-shape "huge"`},
		{[]string{"--prime"}, `--prime needs --key-space N`},
	} {
		var stdout, stderr bytes.Buffer
		if got := run(append([]string{"bench"}, tc.args...), &stdout, &stderr); got != 2 {
			t.Fatalf("%q: exit status %d, want 2 (stderr %q)", tc.args, got, &stderr)
		}
		if !strings.Contains(stderr.String(), tc.stderr) || stdout.Len() > 0 {
			t.Fatalf("%q: stdout %q stderr %q", tc.args, &stdout, &stderr)
		}
	}
}

// TestBenchDetectsLoss runs bench through a proxy that cuts every
// subscriber's connection after a few events while publishing goes on: the
// events those subscribers never got must be reported as lost, and the run
// must fail.
func TestBenchDetectsLoss(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	proxy := relay.Start(t, strings.TrimPrefix(in.URL, "http://"), relay.Options{CutAfter: 3000})
	for _, transport := range []string{"ws", "sse"} {
		t.Run(transport, func(t *testing.T) {
			before := proxy.Cuts()
			rep, _, err := benchJSON(t, "--url", proxy.URL(), "--transport", transport,
				"--subscribers", "8", "--topics", "2", "--publishers", "2", "--rate", "400", "--duration", "1500ms", "--drain", "1s")
			if err == nil || exitStatus(err, io.Discard) != 1 || !strings.Contains(err.Error(), "lost") {
				t.Fatalf("bench returned %v, want a failure naming the loss", err)
			}
			if got := proxy.Cuts() - before; got != 8 {
				t.Fatalf("proxy cut %d subscriber connections, want 8", got)
			}
			if rep.Published < 400 || rep.Lost == 0 || rep.Delivered+rep.Lost != rep.Expected {
				t.Fatalf("published %d, delivered %d + lost %d, expected %d: the loss is not accounted",
					rep.Published, rep.Delivered, rep.Lost, rep.Expected)
			}
			var lostConns int64
			for _, n := range rep.Errors {
				lostConns += n
			}
			if lostConns < 8 {
				t.Fatalf("errors %v, want the 8 lost connections among them", rep.Errors)
			}
		})
	}
}

// TestBenchActionsMode posts echo actions with subscribers on their
// topics: every 202 is timed, and every result event arrives exactly once.
func TestBenchActionsMode(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	htmlOut := filepath.Join(t.TempDir(), "report.html")
	rep, raw, err := benchJSON(t, "--url", in.URL, "--mode", "actions", "--transport", "mixed", "--subscribers", "10",
		"--topics", "2", "--publishers", "2", "--rate", "200", "--duration", "1s", "--html", htmlOut)
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if rep.Mode != "actions" || rep.Accepted < 150 || rep.AcceptedPerSec <= 0 || len(rep.Errors) != 0 {
		t.Fatalf("mode %q accepted %d (%.0f/s) errors %v", rep.Mode, rep.Accepted, rep.AcceptedPerSec, rep.Errors)
	}
	a := rep.AcceptMS
	if a == nil || !(a.P50 > 0 && a.P50 <= a.P99 && a.P99 <= a.Max && a.Max < 5000) {
		t.Fatalf("implausible 202 latency %+v", a)
	}
	if rep.Expected != rep.Accepted*5 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 {
		t.Fatalf("result events: delivered %d of %d (accepted %d to 5 subscribers each), lost %d, dup %d",
			rep.Delivered, rep.Expected, rep.Accepted, rep.Lost, rep.Duplicates)
	}
	if _, ok := raw["accept_ms"]; !ok {
		t.Fatalf("report lacks accept_ms")
	}
	if len(rep.Timeline) == 0 || len(rep.Histogram) == 0 {
		t.Fatalf("timeline %d samples, histogram %d buckets", len(rep.Timeline), len(rep.Histogram))
	}
	page, err := os.ReadFile(htmlOut)
	if err != nil || !bytes.Contains(page, []byte("<svg")) {
		t.Fatalf("html report: %v, %d bytes without a plot", err, len(page))
	}
}

// TestBenchActionsModeUnknownType fails the run when the server has no
// handler for the action type, and says why.
func TestBenchActionsModeUnknownType(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	rep, _, err := benchJSON(t, "--url", in.URL, "--mode", "actions", "--action-type", "no.such", "--subscribers", "0",
		"--rate", "50", "--duration", "300ms")
	if err == nil || !strings.Contains(err.Error(), "action_422") {
		t.Fatalf("bench returned %v, want a failure naming action_422", err)
	}
	if rep.Accepted != 0 || rep.Errors["action_422"] == 0 {
		t.Fatalf("accepted %d errors %v", rep.Accepted, rep.Errors)
	}
}

// TestBenchIdleModeAfterGC samples memory after the server has collected
// garbage, through its debug endpoint.
func TestBenchIdleModeAfterGC(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--pprof")
	rep, _, err := benchJSON(t, "--url", in.URL, "--mode", "idle", "--transport", "mixed", "--subscribers", "20",
		"--duration", "100ms", "--server-pid", strconv.Itoa(os.Getpid()), "--server-debug", in.InternalURL(t))
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if !rep.RSSAfterGC || rep.ServerRSSKBBefore <= 0 || rep.ServerRSSKBAfter <= 0 || len(rep.Errors) != 0 {
		t.Fatalf("after gc %v, rss %d → %d kB, errors %v", rep.RSSAfterGC, rep.ServerRSSKBBefore, rep.ServerRSSKBAfter, rep.Errors)
	}
	// A debug URL that answers nothing fails the run.
	err = runBench(context.Background(), []string{"--url", in.URL, "--mode", "idle", "--subscribers", "2", "--duration", "50ms",
		"--server-pid", strconv.Itoa(os.Getpid()), "--server-debug", in.URL, "--quiet"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "free the server's memory") {
		t.Fatalf("bench with a wrong --server-debug: %v", err)
	}
}

// TestBenchAcrossNodes runs herald bench with its subscribers on one node
// and its publishers on another, on one log: every delivery crosses the
// broker, and none is lost, repeated or out of order.
func TestBenchAcrossNodes(t *testing.T) { heraldtest.ForEachBroker(t, testBenchAcrossNodes) }

func testBenchAcrossNodes(t *testing.T, broker string) {
	a := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	b := startServe(t, "--addr", "127.0.0.1:0", "--broker", broker)
	rep, _, err := benchJSON(t, "--url", a.URL, "--publish-url", b.URL, "--transport", "mixed",
		"--subscribers", "20", "--topics", "2", "--rate", "200", "--duration", "1s")
	if err != nil {
		t.Fatalf("bench: %v", err)
	}
	if rep.Published == 0 || rep.Delivered != rep.Expected || rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 {
		t.Fatalf("published %d; delivered %d of %d, lost %d, dup %d, ooo %d",
			rep.Published, rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder)
	}
}

// --key-space and its older name --keys set the same thing, and a run with
// compression and deltas asked for reports the bytes on the wire, from the
// kernel, in JSON and on stdout.
func TestBenchWireFlags(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0")
	for _, keys := range []string{"--key-space", "--keys"} {
		out := filepath.Join(t.TempDir(), "report.json")
		var stdout bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err := runBench(ctx, []string{"--url", in.URL, "--subscribers", "4", "--topics", "2", "--rate", "100",
			"--duration", "500ms", keys, "7", "--payload-shape", "dashboard", "--delta", "--ws-compression",
			"--quiet", "--json", out}, &stdout, io.Discard)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v\n%s", keys, err, &stdout)
		}
		rep, _ := readReport(t, out)
		if rep.KeySpace != 7 || rep.PayloadShape != "dashboard" || !rep.Delta || !rep.WSCompression || rep.Lost != 0 {
			t.Fatalf("%s: key space %d, shape %q, delta %v, compression %v, lost %d", keys, rep.KeySpace, rep.PayloadShape, rep.Delta, rep.WSCompression, rep.Lost)
		}
		if rep.DeflateConnections != 4 || rep.DeltaDeliveries == 0 || rep.Errors["delta_mismatch"] != 0 {
			t.Fatalf("%s: deflate on %d of 4 connections, %d deltas, errors %v", keys, rep.DeflateConnections, rep.DeltaDeliveries, rep.Errors)
		}
		if rep.WireBytesPerEvent <= 0 || rep.PayloadBytesPerEvent < 2048 || rep.CompressionRatio <= 0 || rep.CompressionRatio >= 1 {
			t.Fatalf("%s: wire %v payload %v ratio %v", keys, rep.WireBytesPerEvent, rep.PayloadBytesPerEvent, rep.CompressionRatio)
		}
		// The server's CPU comes from its /metrics, on --addr by default.
		if rep.ServerCPUError != "" {
			t.Fatalf("%s: no server CPU: %s", keys, rep.ServerCPUError)
		}
		_, raw := readReport(t, out)
		for _, k := range []string{"wire_bytes_per_event", "payload_bytes_per_event", "compression_ratio"} {
			if _, ok := raw[k]; !ok {
				t.Fatalf("%s: report lacks %q", keys, k)
			}
		}
		for _, line := range []string{"wire bytes/event ", "payload dashboard  key space 7  deflate on "} {
			if !strings.Contains(stdout.String(), line) {
				t.Fatalf("%s: stdout lacks %q:\n%s", keys, line, &stdout)
			}
		}
	}
}

// readReport reads the --json report of a bench run, as a Report and as
// its raw fields (for the names of the stable output).
func readReport(t *testing.T, path string) (bench.Report, map[string]json.RawMessage) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &rep); err != nil || json.Unmarshal(b, &raw) != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	return rep, raw
}
