package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The kernel's count of bytes received is the bytes the peer sent.
func TestTCPBytesReceived(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO byte counts are Linux's")
	}
	c, srv := framePair(t)
	before, ok := tcpBytesReceived(c.conn.Conn)
	if !ok {
		t.Fatal("no TCP_INFO")
	}
	const n = 300_000
	written := writeAsync(srv, make([]byte, n))
	if _, err := io.ReadFull(c.conn, make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	if err := <-written; err != nil {
		t.Fatal(err)
	}
	after, _ := tcpBytesReceived(c.conn.Conn)
	if after-before != n {
		t.Fatalf("the kernel counted %d bytes, %d were sent", after-before, n)
	}
	if _, ok := tcpBytesReceived(&net.UnixConn{}); ok {
		t.Fatal("a byte count from a connection that is not TCP")
	}
}

// The server's CPU time comes from /proc or from /metrics, in seconds.
func TestServerCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	// Burn some CPU so the count has moved past a tick.
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	proc, err := procCPU(os.Getpid())
	if err != nil || proc <= 0 {
		t.Fatalf("proc: %v %v", proc, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	r := &run{cfg: Config{URL: srv.URL}}
	got, err := r.serverCPU(context.Background())
	if err != nil || got < proc || got > proc+10 {
		t.Fatalf("metrics: %v %v, /proc said %v", got, err, proc)
	}
	r.cfg.URL = srv.URL + "/nowhere"
	if _, err := r.serverCPU(context.Background()); err == nil {
		t.Fatal("no error without /metrics")
	}
	r.cfg.ServerPID = os.Getpid()
	if got, err := r.serverCPU(context.Background()); err != nil || got < proc {
		t.Fatalf("pid: %v %v", got, err)
	}
}
