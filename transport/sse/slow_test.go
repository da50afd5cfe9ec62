package sse_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// A client that never reads is dropped without holding back the publisher or
// the hundred clients that keep up, and its connection is closed.
func TestSlowConsumer(t *testing.T) {
	const (
		normal    = 100
		minEvents = 300
		maxEvents = 20000 // a guard: the stalled client is gone long before
		window    = 4     // events the publisher may run ahead of the slowest normal client
		payload   = 4 << 10
		// Generous, so that a normal client starved of CPU on a loaded
		// machine is not mistaken for a stalled one.
		writeTimeout = 5 * time.Second
	)
	var logs syncBuffer // the handler's debug log says why each stream ended
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f := newFixtureOn(t, hub.Options{QueueBytes: 64 << 10}, sse.Options{WriteTimeout: writeTimeout, Logger: logger},
		func(l net.Listener) net.Listener { return smallSendBuffers{l} })

	stalled := rawGet(t, f.srv.Listener.Addr().String(), "/v1/events?topic=slow.>")

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	progress := make([]atomic.Uint64, normal) // last seq seen per client
	got := make([][]string, normal)
	errs := make(chan error, normal)
	var wg sync.WaitGroup
	for i := range normal {
		resp, err := f.get(ctx, f.url([]string{"slow.>"}), nil)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			br := bufio.NewReaderSize(resp.Body, 64<<10)
			for {
				fr, err := readFrame(br)
				if err != nil {
					errs <- fmt.Errorf("client %d after %d events: %w", i, len(got[i]), err)
					return
				}
				if fr.Event == "" {
					continue
				}
				got[i] = append(got[i], fr.ID)
				if fr.Event == "end" {
					return
				}
				c, _ := hub.ParseCursor(fr.ID)
				progress[i].Store(c.Seq)
			}
		}()
	}
	wait.For(t, 10*time.Second, "101 subscribers", func() bool { return sseClients(f.hub) == normal+1 })

	// Publish until the stalled client has been kicked, and at least
	// minEvents. How much the kernel buffers for the stalled socket differs a
	// little between machines, hence a condition rather than a count.
	data, _ := json.Marshal(strings.Repeat("x", payload))
	var want []string
	var slowest time.Duration
	kickedAt := 0
	start := time.Now()
	for n := 0; n < minEvents || kickedAt == 0; n++ {
		if n == maxEvents {
			t.Fatalf("no slow consumer after %d events: %+v", n, f.hub.Stats())
		}
		if kickedAt == 0 && f.hub.Stats().SlowKicked > 0 {
			kickedAt = n
		}
		// Test-side flow control keeps the normal clients within their queue;
		// the stalled one gets no such courtesy.
		if lag := waitProgress(progress, uint64(max(0, n-window)), 20*time.Second); lag >= 0 {
			t.Fatalf("normal client %d stuck at %d of %d published (%d failed): %+v\nhandler log:\n%s",
				lag, progress[lag].Load(), n, len(errs), f.hub.Stats(), logs.String())
		}
		t0 := time.Now()
		ms, err := f.hub.Publish(ctx, hub.Draft{Topic: "slow.data", Data: data})
		if err != nil {
			t.Fatal(err)
		}
		slowest = max(slowest, time.Since(t0))
		want = append(want, ms[0].ID.String())
	}
	t.Logf("%d events of %d B in %v, the stalled client kicked after %d; slowest Publish %v",
		len(want), payload, time.Since(start), kickedAt, slowest)
	if slowest > time.Second {
		t.Errorf("a Publish call took %v: the publisher was held back", slowest)
	}
	// The stalled handler ends at the latest when its blocked write reaches
	// the deadline; the others stay.
	wait.For(t, writeTimeout+10*time.Second, "the stalled stream to end", func() bool { return sseClients(f.hub) == normal })
	t.Logf("stalled stream ended %v after publishing began", time.Since(start))

	end := publish(t, f.hub, "slow.end", "end", "null")
	want = append(want, end.ID.String())
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("normal client failed: %v", err)
	}
	for i := range got {
		if strings.Join(got[i], ",") != strings.Join(want, ",") {
			t.Fatalf("client %d got %d events, not the %d published, in order", i, len(got[i]), len(want))
		}
	}
	if k := f.hub.Stats().SlowKicked; k != 1 {
		t.Errorf("SlowKicked = %d, want exactly the stalled client", k)
	}
	// The server closed the stalled connection: after what the kernel
	// buffered, the client reads EOF (or a reset), never a timeout.
	if err := stalled.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, stalled)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("stalled connection still open after %d bytes: %v", n, err)
	}
	t.Logf("stalled client drained %d bytes, then %v", n, err)
}

// waitProgress polls until every client has seen seq at, returning -1, or
// the index of a client still behind when the timeout passes.
func waitProgress(progress []atomic.Uint64, at uint64, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	for {
		lag := -1
		for i := range progress {
			if progress[i].Load() < at {
				lag = i
				break
			}
		}
		if lag < 0 || time.Now().After(deadline) {
			return lag
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// syncBuffer is a bytes.Buffer safe for the handlers' concurrent logging.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
