package server_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// TestServeShutdownBound holds a request that never completes and checks
// that Serve still returns within ShutdownTimeout, cutting it.
func TestServeShutdownBound(t *testing.T) {
	const timeout = time.Second
	in := start(t, server.Config{ShutdownTimeout: timeout})

	conn, err := net.Dial("tcp", in.URL[len("http://"):])
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	// Headers never finished: the request stays active for the whole
	// ReadHeaderTimeout (10 s), far beyond the shutdown timeout.
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: herald\r\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	// The server must have accepted that connection before the shutdown
	// closes the listener; otherwise nothing is hung and the shutdown is
	// instant. It accepts in order, so an answer on a connection dialled
	// after it proves it.
	later := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := later.Get(in.URL + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz on a later connection: %v", err)
	}
	resp.Body.Close()

	err, took := in.Stop(t, timeout+5*time.Second)
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	if took > timeout+2*time.Second {
		t.Errorf("shutdown took %v, want about the %v bound", took, timeout)
	}
	t.Logf("shutdown with a hung request took %v", took)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Errorf("the hung connection was not closed by the shutdown: %v", err)
	}
	if !strings.Contains(in.Logs.String(), "cutting HTTP connections") {
		t.Errorf("a forced shutdown should be logged:\n%s", in.Logs)
	}
}

// TestServeShutdownEndsSSE checks that open SSE streams end as soon as
// shutdown starts, instead of holding http.Server.Shutdown until the bound.
func TestServeShutdownEndsSSE(t *testing.T) {
	in := start(t, server.Config{ShutdownTimeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v1/events?topic=orders.*", nil)
	resp, err := (&http.Client{Transport: in.Client.Transport}).Do(req)
	if err != nil {
		t.Fatalf("GET /v1/events: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotImplemented {
		t.Skip("the SSE handler answers 501 Not Implemented: transport/sse is not implemented yet")
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
		t.Fatalf("first line %q, %v; want the retry: line", line, err)
	}

	err, took := in.Stop(t, 25*time.Second)
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	if took > 5*time.Second {
		t.Errorf("shutdown with an open SSE stream took %v; the stream should end at once", took)
	}
	if _, err := io.ReadAll(br); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("stream ended with %v", err)
	}
}

// TestServeShutdownClosesWebSocket checks that a WebSocket client sees close
// code 1001 (going away) when the server shuts down.
func TestServeShutdownClosesWebSocket(t *testing.T) {
	in := start(t, server.Config{ShutdownTimeout: 20 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: in.Client.Transport},
	})
	if err != nil {
		if resp != nil && resp.StatusCode == http.StatusNotImplemented {
			t.Skip("the WebSocket handler answers 501 Not Implemented: transport/ws is not implemented yet")
		}
		t.Fatalf("dial: %v", err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"1","topics":["orders.*"]}`)); err != nil {
		t.Fatalf("write: %v", err)
	}
	_, msg, err := c.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"ok"`) {
		t.Fatalf("subscribe reply %s, %v", msg, err)
	}

	in.Cancel()
	for {
		_, msg, err = c.Read(ctx)
		if err != nil {
			break
		}
		t.Logf("message before close: %s", msg)
	}
	if got := websocket.CloseStatus(err); got != websocket.StatusGoingAway {
		t.Errorf("close status %v (%v), want 1001 going away", got, err)
	}
	if err, _ := in.Stop(t, 25*time.Second); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestServeShutdownFinishesActions checks that a shutdown waits for an
// action in progress, and that its result is still published: the hub is
// closed only after the actions.
func TestServeShutdownFinishesActions(t *testing.T) {
	started := make(chan struct{}, 1)
	var (
		mu         sync.Mutex
		answeredAt time.Time
		cancelled  bool
	)
	up := heraldtest.NewBackend(t, func(w http.ResponseWriter, r *http.Request, _ heraldtest.UpstreamCall) {
		started <- struct{}{}
		select {
		case <-time.After(300 * time.Millisecond): // the work the action does
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"done":true}`)
			http.NewResponseController(w).Flush()
			mu.Lock()
			answeredAt = time.Now()
			mu.Unlock()
		case <-r.Context().Done():
			mu.Lock()
			cancelled = true
			mu.Unlock()
		}
	})
	in := start(t, server.Config{ShutdownTimeout: 5 * time.Second, ActionUpstreams: []server.Upstream{{URL: up.URL}}})
	in.Submit(t, `{"type":"report.build","topic":"reports"}`, "")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not called")
	}

	err, took := in.Stop(t, 10*time.Second)
	returned := time.Now()
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if cancelled || answeredAt.IsZero() {
		t.Fatalf("the upstream call was cut short by the shutdown (cancelled %v)", cancelled)
	}
	if returned.Before(answeredAt) {
		t.Errorf("Serve returned before the upstream answered")
	}
	logs := in.Logs.String()
	for _, bad := range []string{"failed to publish", "did not finish in time", "did not stop in time"} {
		if strings.Contains(logs, bad) {
			t.Errorf("logs mention %q: the result was not published before the hub closed:\n%s", bad, logs)
		}
	}
	t.Logf("shutdown with an action in progress took %v", took)
}

// TestServeShutdownBoundsActions checks that an action that does not finish
// cannot hold the shutdown beyond its bound: it fails with code shutdown
// and its upstream request is cancelled.
func TestServeShutdownBoundsActions(t *testing.T) {
	started := make(chan struct{}, 1)
	quit := make(chan struct{})
	cancelled := make(chan struct{})
	up := heraldtest.NewBackend(t, func(w http.ResponseWriter, r *http.Request, _ heraldtest.UpstreamCall) {
		started <- struct{}{}
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-quit:
		}
	})
	t.Cleanup(func() { close(quit) }) // runs before the backend's Close
	const timeout = time.Second
	in := start(t, server.Config{ShutdownTimeout: timeout,
		ActionUpstreams: []server.Upstream{{URL: up.URL}}, ActionTimeout: time.Minute})
	in.Submit(t, `{"type":"forever","topic":"jobs"}`, "")
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not called")
	}

	err, took := in.Stop(t, timeout+10*time.Second)
	if err != nil {
		t.Errorf("Serve: %v", err)
	}
	// The bound, plus the moment cancelled handlers get to return.
	if took < timeout || took > timeout+3*time.Second {
		t.Errorf("shutdown took %v, want the %v bound (and at most a few seconds more)", took, timeout)
	}
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Error("the upstream request was not cancelled by the shutdown")
	}
	logs := in.Logs.String()
	if !strings.Contains(logs, "actions did not finish in time") {
		t.Errorf("the cut action is not logged:\n%s", logs)
	}
	if strings.Contains(logs, "failed to publish") {
		t.Errorf("the shutdown failure was not published:\n%s", logs)
	}
}
