package sse_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/transport/sse"
)

// Over TLS an HTTP/1.1 stream is hijacked as on plain TCP. A client that
// stops reading is dropped as a slow consumer when its write deadline
// passes, and its stream ends at once: the socket is reset under the
// tls.Conn, whose own Close would first wait up to 5 s to queue a
// close_notify alert behind the backlog the client never read.
func TestSlowConsumerTLS(t *testing.T) {
	const writeTimeout = time.Second
	h, err := hub.New(hub.Options{QueueBytes: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	sh := sse.New(sse.Options{Hub: h, WriteTimeout: writeTimeout})
	mux := http.NewServeMux()
	mux.Handle("/v1/events", sh)
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = smallSendBuffers{srv.Listener}
	srv.StartTLS() // without EnableHTTP2: HTTP/1.1 over TLS
	t.Cleanup(func() {
		h.Shutdown()
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sh.Wait(ctx); err != nil {
			t.Errorf("streams did not end: %v", err)
		}
		_ = h.Close(ctx)
	})

	raw, err := net.DialTimeout("tcp", srv.Listener.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	conn := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("GET /v1/events?topic=slow.tls HTTP/1.1\r\nHost: herald\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	// The head says whose path serves the stream: only the hijacked one
	// sends Connection: close.
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !resp.Close || resp.Proto != "HTTP/1.1" {
		t.Fatalf("status %d over %s, Connection: close %v: not a hijacked HTTP/1.1 stream", resp.StatusCode, resp.Proto, resp.Close)
	}
	wait.For(t, 10*time.Second, "the subscriber", func() bool { return sseClients(h) == 1 })

	// The client reads no more. Far more than the socket buffers hold, and
	// less than the hub queues: the writer blocks in a write, and the client
	// is kicked when its deadline passes, with the socket full.
	data, _ := json.Marshal(strings.Repeat("x", 4<<10))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 100 {
		if _, err := h.Publish(ctx, hub.Draft{Topic: "slow.tls", Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	wait.For(t, 10*time.Second, "the slow consumer to be kicked", func() bool { return h.Stats().SlowKicked > 0 })
	kicked := time.Now()
	if err := sh.Wait(ctx); err != nil {
		t.Fatalf("the stalled stream did not end: %v", err)
	}
	took := time.Since(kicked)
	t.Logf("the stalled stream ended %v after it was kicked", took)
	// At once, but for the scheduler of a busy machine; a close through
	// tls.Conn takes the 5 s it allows the close_notify alert.
	if took > 3*time.Second {
		t.Errorf("the stalled stream ended %v after it was kicked, want at once", took)
	}
}
