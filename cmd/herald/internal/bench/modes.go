package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The modes of a run (Config.Mode).
const (
	// ModeFanout connects the subscribers, publishes at a fixed rate and
	// measures deliveries.
	ModeFanout = "fanout"
	// ModeConnect measures how fast the server accepts connections: it
	// ramps them up, times each one from dial to subscribed, and closes them.
	ModeConnect = "connect"
	// ModeIdle measures what idle connections cost the server: it ramps
	// them up, holds them without publishing, and samples the server's
	// resident memory before and after.
	ModeIdle = "idle"
	// ModeActions posts actions at a fixed rate and measures the time to
	// their 202 answer; subscribers, if any, receive and check the result
	// events as fan-out mode checks published ones.
	ModeActions = "actions"
)

// ramp opens a connection for each of r.subs, at most
// cfg.DialWorkers at a time and, if cfg.Ramp is set, no faster than Ramp per
// second. Each connection's time from dial start to subscribed (the
// subscribe reply on WebSocket, the response headers on SSE) goes into
// r.connHist.
// Every open connection gets a reader goroutine counted in wg, which ends
// when ctx does or the connection fails (see hold). ramp returns once every attempt has finished, with
// ctx's error if ctx ended first; the caller ends ctx and waits on wg.
func (r *run) ramp(ctx context.Context, srcs []source, wg *sync.WaitGroup) error {
	cfg := r.cfg
	// Unbuffered: a subscriber leaves the feeder only when a worker is free,
	// so the pacing below is what the server sees.
	work := make(chan *subscriber)
	var dwg sync.WaitGroup
	for w := 0; w < cfg.DialWorkers; w++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for s := range work {
				kind := cfg.Transport
				if kind == "mixed" {
					kind = [2]string{"ws", "sse"}[s.idx%2]
				}
				t0 := time.Now()
				src := srcs[s.idx%len(srcs)]
				conn, err := r.connect(ctx, kind, s, src, "")
				if err != nil {
					if ctx.Err() == nil {
						r.fail(connectErrorKind(err))
					}
					continue
				}
				r.connHist.Lock()
				_ = r.connHist.h.RecordValue(time.Since(t0).Microseconds())
				r.nodeConnected[s.node]++
				r.connHist.Unlock()
				r.connected.Add(1)
				// Attached before ramp returns, so that what follows the
				// ramp (the wire counts, the chaos) finds every connection.
				s.attach(conn)
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.hold(ctx, kind, s, src, conn)
				}()
			}
		}()
	}
	dwg.Add(1)
	go func() {
		defer dwg.Done()
		defer close(work)
		var interval time.Duration
		if cfg.Ramp > 0 {
			interval = time.Duration(float64(time.Second) / cfg.Ramp)
		}
		// Each connection is due at a fixed offset from the start, so a
		// late tick is made up rather than lowering the rate.
		start := time.Now()
		timer := time.NewTimer(time.Hour)
		defer timer.Stop()
		for i, s := range r.subs {
			if interval > 0 {
				if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
					timer.Reset(d)
					select {
					case <-timer.C:
					case <-ctx.Done():
						return
					}
				}
			}
			select {
			case work <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	dwg.Wait()
	return ctx.Err()
}

// connectErrorKind names a failed connection attempt in the report.
func connectErrorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "connect_timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connect_refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connect_reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL), errors.Is(err, syscall.EADDRINUSE):
		return "connect_no_port"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "connect_no_fd"
	}
	return "connect"
}

// runConnect ramps up the connections, then closes them all, and reports
// connects per second over the ramp and the distribution of connect times.
func (r *run) runConnect(ctx context.Context) (*Report, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srcs := newSources(r.cfg.sourceBase, r.cfg.SourceIPs)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, which runs first

	r.phase.Store("ramp")
	r.start = time.Now()
	stopSampler := r.sample(ctx, r.connectMeter())
	err := r.ramp(ctx, srcs, &wg)
	rampDur := time.Since(r.start)
	stopSampler()
	if err != nil {
		return nil, err
	}
	hist := r.connHist.h // every dial worker has ended
	connected := int(hist.TotalCount())
	rep := &Report{
		Mode:        ModeConnect,
		Shard:       r.cfg.shardName(),
		Transport:   r.cfg.Transport,
		Subscribers: r.cfg.Subscribers,
		Connected:   connected,
		DurationS:   rampDur.Seconds(),
		ConnectMS:   summarize(hist),
		Timeline:    r.timeline,
		Histogram:   buckets(hist),
	}
	if rampDur > 0 {
		rep.ConnectsPerSec = float64(connected) / rampDur.Seconds()
	}
	cancel()
	wg.Wait()
	rep.Errors = r.errorsSnapshot()
	return rep, nil
}

// runIdle ramps up the connections, holds them for cfg.Duration without
// publishing, and, given cfg.ServerPID, reports the server's resident
// memory before the first connection and at the end of the hold. A
// connection lost during the hold counts as an error.
func (r *run) runIdle(ctx context.Context) (*Report, error) {
	var before int64
	if pid := r.cfg.ServerPID; pid > 0 {
		if err := r.freeServerMemory(ctx); err != nil {
			return nil, err
		}
		var err error
		if before, err = readRSS(pid); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srcs := newSources(r.cfg.sourceBase, r.cfg.SourceIPs)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel, which runs first

	r.phase.Store("ramp")
	r.start = time.Now()
	stopSampler := r.sample(ctx, r.connectMeter())
	defer stopSampler()
	if err := r.ramp(ctx, srcs, &wg); err != nil {
		return nil, err
	}
	hist := r.connHist.h // every dial worker has ended
	connected := int(hist.TotalCount())

	r.phase.Store("hold")
	holdStart := time.Now()
	hold := time.NewTimer(r.cfg.Duration)
	defer hold.Stop()
	select {
	case <-hold.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	rep := &Report{
		Mode:        ModeIdle,
		Shard:       r.cfg.shardName(),
		Transport:   r.cfg.Transport,
		Subscribers: r.cfg.Subscribers,
		Connected:   connected,
		DurationS:   time.Since(holdStart).Seconds(),
		ConnectMS:   summarize(hist),
	}
	// Sampled while every connection is still open.
	if pid := r.cfg.ServerPID; pid > 0 {
		if err := r.freeServerMemory(ctx); err != nil {
			r.fail("server_debug")
		}
		rep.RSSAfterGC = r.cfg.ServerDebug != ""
		after, err := readRSS(pid)
		if err != nil {
			r.fail("rss")
		} else {
			rep.ServerRSSKBBefore, rep.ServerRSSKBAfter = before, after
			if connected > 0 {
				rep.RSSPerConnBytes = (after - before) * 1024 / int64(connected)
			}
		}
	}
	// Losses during the hold are recorded before the readers end.
	rep.Errors = r.errorsSnapshot()
	stopSampler()
	rep.Timeline, rep.Histogram = r.timeline, buckets(hist)
	cancel()
	wg.Wait()
	return rep, nil
}

// connectMeter counts connections made and their connect times.
func (r *run) connectMeter() meter {
	return meter{
		count: func() int64 {
			r.connHist.Lock()
			defer r.connHist.Unlock()
			return r.connHist.h.TotalCount()
		},
		latency: func() *hdrhistogram.Histogram { return mergedCopy(&r.connHist) },
	}
}

func (r *run) errSamplesSnapshot() map[string]string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	if len(r.errSamples) == 0 {
		return nil
	}
	out := make(map[string]string, len(r.errSamples))
	for k, v := range r.errSamples {
		out[k] = v
	}
	return out
}

func (r *run) errorsSnapshot() map[string]int64 {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	out := make(map[string]int64, len(r.errs))
	for k, n := range r.errs {
		out[k] = n
	}
	return out
}

// freeServerMemory asks the server to collect garbage and return free
// memory to the system (POST /debug/free-memory), if cfg.ServerDebug is set.
func (r *run) freeServerMemory(ctx context.Context) error {
	if r.cfg.ServerDebug == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	if err := post(ctx, client, strings.TrimRight(r.cfg.ServerDebug, "/")+"/debug/free-memory", http.StatusOK, nil); err != nil {
		return fmt.Errorf("failed to free the server's memory: %w", err)
	}
	return nil
}

// readRSS returns the VmRSS of process pid in kB, from /proc/PID/status.
func readRSS(pid int) (int64, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("failed to read server memory: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		num, _ := strings.CutSuffix(strings.TrimSpace(rest), " kB")
		kb, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("failed to read server memory: bad VmRSS line %q", sc.Text())
		}
		return kb, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("failed to read server memory: %w", err)
	}
	return 0, fmt.Errorf("failed to read server memory: no VmRSS in /proc/%d/status", pid)
}
