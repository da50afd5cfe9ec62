package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
)

// TestServeEnv checks that runServe reads its environment variables, and
// that a flag on the command line wins over them.
func TestServeEnv(t *testing.T) {
	t.Setenv("HERALD_ADDR", "127.0.0.1:0") // the default, :8080, would not be a free port
	t.Setenv("HERALD_HISTORY_SIZE", "2")
	t.Setenv("HERALD_LOG_FORMAT", "json")

	publish3 := func(in *heraldtest.Node) {
		for _, d := range []string{"1", "2", "3"} {
			if status, body := in.Post(t, "/v1/publish", `{"topic":"t","data":`+d+`}`); status != http.StatusOK {
				t.Fatalf("publish: status %d, body %s", status, body)
			}
		}
	}

	in := startServe(t)
	publish3(in)
	if got := strings.Join(in.HistoryData(t, "t"), ","); got != "2,3" {
		t.Errorf("with HERALD_HISTORY_SIZE=2, history = %s, want 2,3", got)
	}
	if !strings.Contains(in.Logs.String(), `"msg":"listening"`) {
		t.Errorf("HERALD_LOG_FORMAT=json not applied:\n%s", in.Logs)
	}

	in = startServe(t, "--history-size", "3")
	publish3(in)
	if got := strings.Join(in.HistoryData(t, "t"), ","); got != "1,2,3" {
		t.Errorf("with --history-size 3 over HERALD_HISTORY_SIZE=2, history = %s, want 1,2,3", got)
	}
}

// TestServeCORSOrigins checks that --cors-origins lets those origins use
// the HTTP API and open WebSockets, and no other origin, and that the
// server also serves its browser files. It is the flag's test: the flag
// layer parses the origins and adds them to the WebSocket's allowed
// origins as well.
func TestServeCORSOrigins(t *testing.T) {
	in := startServe(t, "--addr", "127.0.0.1:0", "--cors-origins", "https://app.example.com, https://*.example.org")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	preflight := func(origin string) string {
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, in.URL+"/v1/publish", nil)
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
		c, _, err := websocket.Dial(ctx, "ws"+in.URL[len("http"):]+"/v1/ws", &websocket.DialOptions{
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
		resp, err := http.Get(in.URL + path)
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
		req, _ := http.NewRequest(http.MethodPost, in.URL+"/v1/publish", strings.NewReader(`{"topic":"`+topic+`","data":1}`))
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
