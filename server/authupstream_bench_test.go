package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/authapp"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// BenchmarkAuthUpstreamConnections opens SSE streams, each a new
// connection, from 100 cookie sessions of an application that counts its
// calls (expires_in 2 s). However fast connections come, the application
// is asked at most once per session per expires_in: 100 calls per window
// of 2 s, which the benchmark checks and reports (calls/window), with the
// connections per second it reached.
func BenchmarkAuthUpstreamConnections(b *testing.B) {
	const sessions, expiresIn = 100, 2 * time.Second
	app := authapp.Start(b, expiresIn.Seconds())
	n := heraldtest.Start(b, server.Config{Auth: "upstream", AuthUpstream: app.URL, Logger: slog.New(slog.DiscardHandler)})
	var next atomic.Int64
	ctx := context.Background()
	b.SetParallelism(8) // connections under way at once: 8 per CPU
	b.ResetTimer()
	begin := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		// A client of its own, without keep-alive: every stream is a new
		// connection, as a page's would be.
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		defer client.CloseIdleConnections()
		for pb.Next() {
			i := next.Add(1)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/v1/events?topic=chat.room", nil)
			req.Header.Set("Cookie", fmt.Sprintf("sid=user-%d", i%sessions))
			resp, err := client.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("stream %d: %d", i, resp.StatusCode)
				return
			}
		}
	})
	elapsed := time.Since(begin)
	b.StopTimer()
	calls := len(app.Calls(b))
	windows := int(elapsed/expiresIn) + 1
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "conns/s")
	b.ReportMetric(float64(calls)/float64(windows), "calls/window")
	if calls > sessions*windows {
		b.Fatalf("%d calls for %d connections in %v: more than %d sessions × %d windows of %v", calls, b.N, elapsed, sessions, windows, expiresIn)
	}
}
