package main

import (
	"context"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/heraldpush/herald/cmd/herald/internal/bench"
)

// The reliability checks (chaos_test.go, stall_test.go, soak_test.go,
// drain_test.go) each have two sizes: a short one that `make test` runs
// under -race, which checks the functional property only, and the full one
// of docs/reliability.md, which `make soak` runs without -race when
// HERALD_SOAK=1. Timing is asserted only at full size.
//
// They live with the command, not with the server package: their load is
// the engine of "herald bench" (cmd/herald/internal/bench), and their full
// sizes run the built binary in a process of its own (startProcess), which
// the shutdown check signals and the soak samples.

// soak reports whether the full-size checks were asked for.
func soak() bool { return os.Getenv("HERALD_SOAK") == "1" }

// pick returns full under HERALD_SOAK=1, else short.
func pick[T any](short, full T) T {
	if soak() {
		return full
	}
	return short
}

// testSeed returns the seed of the test's random choices: HERALD_SEED if
// set, so that a failure can be replayed, else one drawn from the clock.
// Either way it is logged.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano()) | 1
	if s := os.Getenv("HERALD_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil || seed == 0 {
			t.Fatalf("HERALD_SEED=%q: want a positive integer", s)
		}
	}
	t.Logf("seed %d (replay with HERALD_SEED=%d)", seed, seed)
	return seed
}

// runLoad runs the bench engine with cfg (see load), and fails t if the
// run cannot start or finish.
func runLoad(t *testing.T, cfg bench.Config, bound time.Duration) *bench.Report {
	t.Helper()
	rep, err := load(t, cfg, bound)
	if err != nil {
		t.Fatalf("bench run: %v", err)
	}
	return rep
}

// load runs the bench engine with cfg within bound, logging its status
// line every 10 s at full size. It may run on any goroutine.
func load(t *testing.T, cfg bench.Config, bound time.Duration) (*bench.Report, error) {
	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	if soak() {
		var n int
		cfg.Progress = func(s bench.Status) {
			if n++; n%10 == 0 {
				t.Logf("%s %s", cfg.Prefix, bench.FormatStatus(s))
			}
		}
	}
	return bench.Run(ctx, cfg)
}

// logReport logs the figures of a fan-out run that the checks are about.
func logReport(t *testing.T, name string, rep *bench.Report) {
	t.Helper()
	l := rep.LatencyMS
	t.Logf("%s: subscribers %d (connected %d), published %d in %.1fs, delivered %d of %d (%.0f/s); "+
		"lost %d, duplicates %d, out of order %d, incomplete %d, resets %d; "+
		"chaos disconnects %d, reconnects %d; stalled %d (closed by the server %d); "+
		"latency ms p50 %.2f p90 %.2f p99 %.2f p99.9 %.2f max %.2f; errors %v; seed %d",
		name, rep.Subscribers, rep.Connected, rep.Published, rep.DurationS, rep.Delivered, rep.Expected, rep.DeliveriesPerSec,
		rep.Lost, rep.Duplicates, rep.OutOfOrder, rep.Incomplete, rep.Resets,
		rep.Disconnects, rep.Reconnects, rep.Stalled, rep.StalledDisconnected,
		l.P50, l.P90, l.P99, l.P999, l.Max, rep.Errors, rep.Seed)
	if r := rep.ReconnectMS; r != nil {
		t.Logf("%s: reconnect (dial to subscribed) ms p50 %.2f p99 %.2f max %.2f", name, r.P50, r.P99, r.Max)
	}
}

// checkExactDelivery fails t unless every one of the run's subscribers
// connected and ended with every event of its topic, once and in order,
// without a reset or an error.
func checkExactDelivery(t *testing.T, rep *bench.Report) {
	t.Helper()
	if rep.Connected != rep.Subscribers || rep.Published == 0 || len(rep.Errors) != 0 {
		t.Errorf("connected %d of %d, published %d, errors %v", rep.Connected, rep.Subscribers, rep.Published, rep.Errors)
	}
	if rep.Lost != 0 || rep.Duplicates != 0 || rep.OutOfOrder != 0 || rep.Incomplete != 0 || rep.Resets != 0 ||
		rep.Delivered != rep.Expected {
		t.Errorf("delivered %d of %d: lost %d, duplicates %d, out of order %d, incomplete subscribers %d, resets %d",
			rep.Delivered, rep.Expected, rep.Lost, rep.Duplicates, rep.OutOfOrder, rep.Incomplete, rep.Resets)
	}
}

// terminate sends the process SIGTERM, as an orchestrator does, and waits
// up to bound for it to exit; it returns the exit code.
func (p *process) terminate(t *testing.T, bound time.Duration) int {
	t.Helper()
	p.sigterm(t)
	return p.exit(t, bound)
}

// sigterm sends the process SIGTERM.
func (p *process) sigterm(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// exit waits up to bound for the process, told to stop, to exit; it
// returns the exit code.
func (p *process) exit(t *testing.T, bound time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(bound):
		_ = p.cmd.Process.Kill()
		<-done
		t.Fatalf("the node did not exit within %v of SIGTERM", bound)
	}
	return p.cmd.ProcessState.ExitCode()
}
