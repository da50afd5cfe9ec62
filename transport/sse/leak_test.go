package sse_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"go.uber.org/goleak"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// Connections that come and go, with and without a replay running, leave
// no goroutine behind and no client in the hub.
func TestConnectDisconnectLeavesNothing(t *testing.T) {
	const cycles, parallel = 1000, 10
	ignore := goleak.IgnoreCurrent()
	f := newFixture(t, hub.Options{}, sse.Options{})
	var old []*hub.Message
	for i := range 300 {
		old = append(old, publish(t, f.hub, fmt.Sprintf("leak.%d", i%3), "", "null"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	errs := make(chan error, cycles)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range cycles {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- cycle(ctx, f, i, old[i%len(old)].ID.String())
		}()
		if i%100 == 0 {
			publish(t, f.hub, "leak.live", "", "1")
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Handlers end when their client goes away, not only at shutdown.
	wait.For(t, 10*time.Second, "every handler to return", func() bool { return sseClients(f.hub) == 0 })

	f.close()
	goleak.VerifyNone(t, ignore)
}

// cycle opens one stream and leaves in one of several ways.
func cycle(ctx context.Context, f *fixture, i int, cursor string) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hdr := http.Header{}
	if i%2 == 1 {
		hdr.Set("Last-Event-ID", cursor) // a replay goroutine may still run when we leave
	}
	resp, err := f.get(ctx, f.url([]string{"leak.*"}), hdr)
	if err != nil {
		return fmt.Errorf("cycle %d: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("cycle %d: status %d", i, resp.StatusCode)
	}
	if i%4 == 0 {
		return nil // leave before reading anything
	}
	// The retry hint, then for i%4 == 1 one replayed event. Heartbeats are
	// 15 s apart, so only the request's context tells the handler we left.
	frames := 1
	if i%4 == 1 {
		frames = 2
	}
	br := bufio.NewReader(resp.Body)
	for n := range frames {
		if _, err := readFrame(br); err != nil {
			return fmt.Errorf("cycle %d frame %d: %w", i, n, err)
		}
	}
	return nil
}
