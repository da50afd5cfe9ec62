package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestServeFlow(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", "5s")

	status, body := in.post(t, "/v1/publish", `{"topic":"orders.42","type":"order.created","data":{"total":12.5}}`)
	if status != http.StatusOK {
		t.Fatalf("publish: status %d, body %s", status, body)
	}
	var one struct{ ID string }
	if err := json.Unmarshal(body, &one); err != nil || one.ID == "" {
		t.Fatalf("publish body %s: %v", body, err)
	}
	status, body = in.post(t, "/v1/publish", `{"events":[{"topic":"orders.42","data":1},{"topic":"orders.7","data":2}]}`)
	if status != http.StatusOK {
		t.Fatalf("batch publish: status %d, body %s", status, body)
	}

	if got := strings.Join(historyData(t, in, "orders.42"), " "); got != `{"total":12.5} 1` {
		t.Errorf("orders.42 history data = %s", got)
	}
	status, body = in.get(t, "/v1/topics/orders.42/history?after="+one.ID)
	if status != http.StatusOK || !strings.Contains(string(body), `"data":1`) || strings.Contains(string(body), "12.5") {
		t.Errorf("history after %s: status %d, body %s", one.ID, status, body)
	}
	status, body = in.get(t, "/v1/topics")
	if status != http.StatusOK || !strings.Contains(string(body), `{"topic":"orders.7","subscribers":0,"events":1}`) {
		t.Errorf("topics: status %d, body %s", status, body)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if status, body := in.get(t, p); status != http.StatusOK {
			t.Errorf("%s: status %d, body %s", p, status, body)
		}
	}
	if !strings.Contains(in.logs.String(), "msg=listening") || !strings.Contains(in.logs.String(), in.url[len("http://"):]) {
		t.Errorf("the listening address is not logged:\n%s", in.logs)
	}

	err, took := in.stop(t, 5*time.Second+2*time.Second)
	if err != nil {
		t.Errorf("runServe after cancel: %v", err)
	}
	t.Logf("shutdown took %v", took)
	if _, err := net.DialTimeout("tcp", in.url[len("http://"):], time.Second); err == nil {
		t.Errorf("the server still accepts connections after runServe returned")
	}
}

// TestServeEnv checks that runServe reads its environment variables, and
// that a flag on the command line wins over them.
func TestServeEnv(t *testing.T) {
	t.Setenv("HERALD_ADDR", "127.0.0.1:0") // the default, :8080, would not be a free port
	t.Setenv("HERALD_HISTORY_SIZE", "2")
	t.Setenv("HERALD_LOG_FORMAT", "json")

	publish3 := func(in *instance) {
		for _, d := range []string{"1", "2", "3"} {
			if status, body := in.post(t, "/v1/publish", `{"topic":"t","data":`+d+`}`); status != http.StatusOK {
				t.Fatalf("publish: status %d, body %s", status, body)
			}
		}
	}

	in := startServe(t)
	publish3(in)
	if got := strings.Join(historyData(t, in, "t"), ","); got != "2,3" {
		t.Errorf("with HERALD_HISTORY_SIZE=2, history = %s, want 2,3", got)
	}
	if !strings.Contains(in.logs.String(), `"msg":"listening"`) {
		t.Errorf("HERALD_LOG_FORMAT=json not applied:\n%s", in.logs)
	}

	in = startServe(t, "--history-size", "3")
	publish3(in)
	if got := strings.Join(historyData(t, in, "t"), ","); got != "1,2,3" {
		t.Errorf("with --history-size 3 over HERALD_HISTORY_SIZE=2, history = %s, want 1,2,3", got)
	}
}

// TestServeShutdownBound holds a request that never completes and checks
// that runServe still returns within --shutdown-timeout, cutting it.
func TestServeShutdownBound(t *testing.T) {
	const timeout = time.Second
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", timeout.String())

	conn, err := net.Dial("tcp", in.url[len("http://"):])
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
	resp, err := later.Get(in.url + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz on a later connection: %v", err)
	}
	resp.Body.Close()

	err, took := in.stop(t, timeout+5*time.Second)
	if err != nil {
		t.Errorf("runServe: %v", err)
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
	if !strings.Contains(in.logs.String(), "cutting HTTP connections") {
		t.Errorf("a forced shutdown should be logged:\n%s", in.logs)
	}
}

// TestServeShutdownEndsSSE checks that open SSE streams end as soon as
// shutdown starts, instead of holding http.Server.Shutdown until the bound.
func TestServeShutdownEndsSSE(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.url+"/v1/events?topic=orders.*", nil)
	resp, err := (&http.Client{Transport: in.client.Transport}).Do(req)
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

	err, took := in.stop(t, 25*time.Second)
	if err != nil {
		t.Errorf("runServe: %v", err)
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
	in := startServe(t, "--addr", "127.0.0.1:0", "--shutdown-timeout", "20s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.url, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: in.client.Transport},
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

	in.cancel()
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
	if err, _ := in.stop(t, 25*time.Second); err != nil {
		t.Errorf("runServe: %v", err)
	}
}

// TestServeCORSOrigins checks that --cors-origins lets those origins use
// the HTTP API and open WebSockets, and no other origin, and that the
// server also serves its browser files.
func TestServeCORSOrigins(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--cors-origins", "https://app.example.com, https://*.example.org")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	preflight := func(origin string) string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, in.url+"/v1/publish", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header.Set("Access-Control-Request-Headers", "content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Access-Control-Allow-Origin")
	}
	dialWS := func(origin string) error {
		c, _, err := websocket.Dial(ctx, "ws"+in.url[len("http"):]+"/v1/ws", &websocket.DialOptions{
			HTTPHeader: http.Header{"Origin": {origin}},
		})
		if err == nil {
			c.CloseNow()
		}
		return err
	}
	for _, origin := range []string{"https://app.example.com", "https://eu.example.org"} {
		if got := preflight(origin); got != origin {
			t.Errorf("preflight from %s: Access-Control-Allow-Origin %q", origin, got)
		}
		if err := dialWS(origin); err != nil {
			t.Errorf("WebSocket from %s: %v", origin, err)
		}
	}
	for _, origin := range []string{"https://evil.example.com", "http://app.example.com"} {
		if got := preflight(origin); got != "" {
			t.Errorf("preflight from %s granted %q", origin, got)
		}
		if err := dialWS(origin); err == nil || !strings.Contains(err.Error(), "403") {
			t.Errorf("WebSocket from %s: %v, want 403", origin, err)
		}
	}
	for path, ctype := range map[string]string{"/": "text/html", "/herald.js": "text/javascript", "/dashboard.js": "text/javascript"} {
		resp, err := http.Get(in.url + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || len(body) < 100 {
			t.Errorf("GET %s: %d %s, %d bytes", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
		}
	}
}

// TestTokenCommand signs a token with herald token and has a server with
// --auth jwt accept it for exactly its grants.
func TestTokenCommand(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	var stdout, stderr strings.Builder
	if code := run([]string{"token", "--secret", secret, "--sub", "alice", "--publish", "orders.*", "--ttl", "10m"}, &stdout, &stderr); code != 0 {
		t.Fatalf("herald token: exit %d, %s", code, &stderr)
	}
	tok := strings.TrimSpace(stdout.String())
	in := startServe(t, "--addr", "127.0.0.1:0", "--auth", "jwt", "--jwt-secret", secret)
	publish := func(topic, token string) int {
		req, _ := http.NewRequest(http.MethodPost, in.url+"/v1/publish", strings.NewReader(`{"topic":"`+topic+`","data":1}`))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := publish("orders.1", tok); got != http.StatusOK {
		t.Errorf("publish within the grant: %d", got)
	}
	if got := publish("billing.1", tok); got != http.StatusForbidden {
		t.Errorf("publish outside the grant: %d, want 403", got)
	}
	if got := publish("orders.1", ""); got != http.StatusUnauthorized {
		t.Errorf("publish without a token: %d, want 401", got)
	}
	for _, args := range [][]string{
		{"token", "--sub", "alice"},
		{"token", "--secret", secret},
		{"token", "--secret", secret, "--sub", "a", "--subscribe", "a..b"},
	} {
		stderr.Reset()
		if code := run(args, io.Discard, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, &stderr)
		}
	}
}

// TestServeWarnsWhenOpen checks the warning of a server without
// authentication on an address other machines can reach, and its absence
// on loopback or with --auth jwt.
func TestServeWarnsWhenOpen(t *testing.T) {
	const warning = "AUTHENTICATION IS OFF"
	open := startServe(t, "--addr", "0.0.0.0:0")
	if !strings.Contains(open.logs.String(), warning) {
		t.Errorf("no warning on 0.0.0.0 without auth:\n%s", open.logs)
	}
	local := startServe(t, "--addr", "127.0.0.1:0")
	closed := startServe(t, "--addr", "0.0.0.0:0", "--auth", "jwt", "--jwt-secret", "0123456789abcdef0123456789abcdef")
	for _, in := range []*instance{local, closed} {
		if strings.Contains(in.logs.String(), warning) {
			t.Errorf("a warning where none is due:\n%s", in.logs)
		}
	}
}
