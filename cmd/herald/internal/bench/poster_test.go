package bench

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestPosterAnswers sends requests through one poster to a server that
// answers in every framing HTTP/1.1 allows, and checks that each status is
// read, each body consumed, and the connection reused unless the server
// closes it.
func TestPosterAnswers(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "want a JSON POST", http.StatusBadRequest)
			return
		}
		switch string(body) {
		case `"plain"`:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id":"1-1"}`)
		case `"chunked"`:
			_, _ = io.WriteString(w, "a")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, strings.Repeat("b", 10000))
		case `"big-head"`:
			w.Header().Set("X-Padding", strings.Repeat("p", 8<<10))
			w.WriteHeader(http.StatusAccepted)
		case `"close"`:
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusServiceUnavailable)
		case `"empty"`:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	ep, err := newEndpoint(srv.URL, "/v1/publish", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &poster{e: ep}
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	steps := []struct {
		body      string
		code      int
		wantConns int64 // connections opened so far, after the step
	}{
		{`"plain"`, 200, 1},
		{`"plain"`, 200, 1},
		{`"chunked"`, 200, 1},
		{`"big-head"`, 202, 1},
		{`"empty"`, 204, 1},
		{`"other"`, 418, 1},
		{`"close"`, 503, 1},
		{`"plain"`, 200, 2}, // the server closed the last one
		{`"plain"`, 200, 2},
	}
	for i, s := range steps {
		code, err := p.post(ctx, []byte(s.body))
		if err != nil {
			t.Fatalf("step %d (%s): %v", i, s.body, err)
		}
		if code != s.code {
			t.Errorf("step %d (%s): status %d, want %d", i, s.body, code, s.code)
		}
		if n := conns.Load(); n != s.wantConns {
			t.Errorf("step %d (%s): %d connections opened, want %d", i, s.body, n, s.wantConns)
		}
	}
}

// TestPosterServerGone checks that a request to a server that has gone
// fails with an error rather than a status, and that the poster dials
// again once the server is back.
func TestPosterServerGone(t *testing.T) {
	ts := newTestServer(t, serverOptions{})
	ep, err := newEndpoint(ts.url, "/v1/publish", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := &posterPool{e: ep}
	defer pool.closeAll()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pool.postWant(ctx, []byte(`{"topic":"a","data":1}`), http.StatusOK); err != nil {
		t.Fatalf("publish: %v", err)
	}
	var se statusError
	if err := pool.postWant(ctx, []byte(`{"topic":"bad topic"}`), http.StatusOK); !errors.As(err, &se) || se.code != http.StatusBadRequest {
		t.Fatalf("bad publish: %v, want status 400", err)
	}
	ts.srv.CloseClientConnections()
	// The pooled connection is dead; the next request fails on it or, if
	// the close was seen first, succeeds on a new one. Either way the one
	// after succeeds.
	_ = pool.postWant(ctx, []byte(`{"topic":"a","data":2}`), http.StatusOK)
	if err := pool.postWant(ctx, []byte(`{"topic":"a","data":3}`), http.StatusOK); err != nil {
		t.Fatalf("publish after the server closed the connection: %v", err)
	}
	ts.srv.Close()
	if err := pool.postWant(ctx, []byte(`{"topic":"a","data":4}`), http.StatusOK); err == nil {
		t.Fatal("publish to a closed server succeeded")
	} else if errors.As(err, &se) {
		t.Fatalf("publish to a closed server: %v, want a connection error", err)
	}
}

// TestReadSimple pins which answers are read without http.ReadResponse,
// and that an answer it declines is left whole for http.ReadResponse.
func TestReadSimple(t *testing.T) {
	const next = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	cases := []struct {
		resp string
		ok   bool
		code int
	}{
		{"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"id\":\"1-1\"}", true, 200},
		{"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nDate: x\r\n\r\n{}", true, 400},
		{"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", true, 204},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false, 0},
		{"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false, 0},
		{"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", false, 0},
		{"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", false, 0},
		{"HTTP/1.1 204 No Content\r\n\r\n", false, 0},
		{"HTTP/1.1 200 OK\r\nX-Pad: " + strings.Repeat("p", 5000) + "\r\nContent-Length: 0\r\n\r\n", false, 0},
	}
	for _, c := range cases {
		p := &poster{br: bufio.NewReaderSize(strings.NewReader(c.resp+next), posterBufferSize)}
		code, ok, err := p.readSimple()
		if err != nil || ok != c.ok || code != c.code {
			t.Errorf("%.40q: readSimple %d, %v, %v; want %d, %v", c.resp, code, ok, err, c.code, c.ok)
			continue
		}
		if !ok {
			resp, err := http.ReadResponse(p.br, nil)
			if err != nil {
				t.Errorf("%.40q: declined, then http.ReadResponse: %v", c.resp, err)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		// The following answer starts where this one ended.
		if code, ok, err := p.readSimple(); !ok || err != nil || code != 200 {
			t.Errorf("%.40q: the next answer read as %d, %v, %v", c.resp, code, ok, err)
		}
	}
}
