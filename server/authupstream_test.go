package server_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/authapp"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// upstreamNode runs a node that asks app for the grants of requests
// without a token.
func upstreamNode(t *testing.T, app *authapp.App, timeout time.Duration) *heraldtest.Node {
	t.Helper()
	return start(t, server.Config{Auth: "upstream", AuthUpstream: app.URL, AuthUpstreamTimeout: timeout,
		AllowedOrigins: []string{"https://app.example"}})
}

// sse opens a stream of topic with the header pairs kv; the caller closes
// the body of a 200.
func sse(ctx context.Context, t *testing.T, n *heraldtest.Node, topic string, kv ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL+"/v1/events?topic="+topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := n.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
	}
	return resp
}

// dataLines sends the data: lines of a stream, until it ends.
func dataLines(resp *http.Response) <-chan string {
	out := make(chan string, 16)
	go func() { // ends with the body
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if l := sc.Text(); strings.HasPrefix(l, "data:") {
				out <- l
			}
		}
	}()
	return out
}

func wsDial(ctx context.Context, t *testing.T, n *heraldtest.Node, kv ...string) *websocket.Conn {
	t.Helper()
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.URL, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"}, HTTPClient: n.Client, HTTPHeader: h,
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// wsOp sends op and returns the reply with its ref.
func wsOp(ctx context.Context, t *testing.T, c *websocket.Conn, op string) string {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(op)); err != nil {
		t.Fatal(err)
	}
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if strings.Contains(string(b), `"ref":"r"`) {
			return string(b)
		}
	}
}

// A cookie session of the application subscribes over SSE and WebSocket
// and publishes, within what the application grants; other sessions are
// refused as it says, and a page of another origin gets nothing of the
// session. One session costs one call however many requests it makes.
func TestAuthUpstreamSessions(t *testing.T) {
	app := authapp.Start(t, 300)
	n := upstreamNode(t, app, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	stream := sse(ctx, t, n, "chat.room", "Cookie", "sid=alice")
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("alice's stream: %d", stream.StatusCode)
	}
	defer stream.Body.Close()
	lines := dataLines(stream)

	ws := wsDial(ctx, t, n, "Cookie", "sid=alice", "Origin", "https://app.example")
	if r := wsOp(ctx, t, ws, `{"op":"subscribe","ref":"r","topics":["chat.room"]}`); !strings.Contains(r, `"op":"subscribed"`) && !strings.Contains(r, `"op":"ok"`) {
		t.Fatalf("subscribe chat.room: %s", r)
	}
	if r := wsOp(ctx, t, ws, `{"op":"subscribe","ref":"r","topics":["news.x"]}`); !strings.Contains(r, `"forbidden"`) {
		t.Fatalf("subscribe news.x, not granted: %s, want forbidden", r)
	}
	if r := wsOp(ctx, t, ws, `{"op":"publish","ref":"r","topic":"chat.room","type":"msg","data":"hi from alice"}`); strings.Contains(r, "error") {
		t.Fatalf("publish: %s", r)
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "hi from alice") {
			t.Fatalf("SSE got %s", l)
		}
	case <-ctx.Done():
		t.Fatal("the SSE stream got no event")
	}

	for _, tc := range []struct {
		name, topic string
		kv          []string
		want        int
	}{
		{"alice, not granted", "news.x", []string{"Cookie", "sid=alice"}, http.StatusForbidden},
		{"bob, not granted", "chat.room", []string{"Cookie", "sid=bob"}, http.StatusForbidden},
		{"the application's 403", "chat.room", []string{"Cookie", "sid=nobody"}, http.StatusForbidden},
		{"the application's 401", "chat.room", []string{"Cookie", "sid=mallory"}, http.StatusUnauthorized},
		{"no credentials", "chat.room", nil, http.StatusUnauthorized},
		{"alice's cookie from a page of another origin", "chat.room",
			[]string{"Cookie", "sid=alice", "Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, http.StatusUnauthorized},
	} {
		if resp := sse(ctx, t, n, tc.topic, tc.kv...); resp.StatusCode != tc.want {
			resp.Body.Close()
			t.Errorf("%s: %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	// Publishing over HTTP with the session.
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL+"/v1/publish",
		strings.NewReader(`{"topic":"chat.room","type":"msg","data":"over http"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Cookie", "sid=alice")
	resp, err := n.Client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish over HTTP: %d", resp.StatusCode)
	}
	// A WebSocket from a foreign page: the handshake is refused, and its
	// cookies never reach the application.
	if c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.URL, "http")+"/v1/ws", &websocket.DialOptions{
		HTTPClient: n.Client, HTTPHeader: http.Header{"Cookie": {"sid=evil-ws"}, "Origin": {"https://evil.example"}},
	}); err == nil {
		c.CloseNow()
		t.Fatal("a WebSocket from a foreign origin was accepted")
	}

	perSession := map[string]int{}
	for _, c := range app.Calls(t) {
		if strings.Contains(c.Cookie, "evil") {
			t.Fatalf("the application got the cookies of a foreign page: %q", c.Cookie)
		}
		perSession[c.Cookie]++
	}
	if perSession["sid=alice"] != 1 {
		t.Fatalf("calls per session %v: want 1 for alice's many requests", perSession)
	}
}

// When the application is slow, its session gets 503 within the timeout
// while another session is served; when it is down, a new session gets
// 503 with Retry-After: never access.
func TestAuthUpstreamDownOrSlow(t *testing.T) {
	app := authapp.Start(t, 300)
	const timeout = 3 * time.Second
	n := upstreamNode(t, app, timeout)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	slow := make(chan *http.Response, 1)
	start := time.Now()
	go func() { slow <- sse(ctx, t, n, "chat.room", "Cookie", "sid=slow") }()
	wait.For(t, 10*time.Second, "the slow call", func() bool { return len(app.Calls(t)) > 0 })
	aliceStart := time.Now()
	alice := sse(ctx, t, n, "chat.room", "Cookie", "sid=alice")
	if alice.StatusCode != http.StatusOK {
		t.Fatalf("alice: %d", alice.StatusCode)
	}
	alice.Body.Close()
	if d := time.Since(aliceStart); d > timeout/2 {
		t.Fatalf("alice waited %v behind the slow session", d)
	}
	resp := <-slow
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("slow session: %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d > timeout+2*time.Second {
		t.Fatalf("slow session answered after %v, timeout %v", d, timeout)
	}

	for _, mode := range []string{"error", "garbage"} {
		app.SetMode(t, mode)
		if resp := sse(ctx, t, n, "chat.room", "Cookie", "sid=bob-"+mode); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("application answering %s: %d, want 503", mode, resp.StatusCode)
		}
	}
	app.Stop()
	for _, sid := range []string{"bob", "carol"} {
		if resp := sse(ctx, t, n, "chat.room", "Cookie", "sid="+sid); resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("application down, %s: %d, want 503", sid, resp.StatusCode)
		}
	}
	ws := wsDial(ctx, t, n, "Cookie", "sid=bob", "Origin", "https://app.example")
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusTryAgainLater || !strings.Contains(err.Error(), "auth upstream") {
		t.Fatalf("WebSocket while the application is down: %v, want closed with 1013 naming the auth upstream", err)
	}
}

// Connections outlive their grants' expiry while the application still
// grants them, and end when it stops: refused (1008) or down (1013).
func TestAuthUpstreamExpiry(t *testing.T) {
	app := authapp.Start(t, 1)
	n := upstreamNode(t, app, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	ws := wsDial(ctx, t, n, "Cookie", "sid=alice", "Origin", "https://app.example")
	wsOp(ctx, t, ws, `{"op":"subscribe","ref":"r","topics":["chat.room"]}`)
	stream := sse(ctx, t, n, "chat.room", "Cookie", "sid=alice")
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", stream.StatusCode)
	}
	defer stream.Body.Close()
	lines := dataLines(stream)
	// Asked again past the expiry, and still granted.
	wait.For(t, 10*time.Second, "the grants to be asked again", func() bool { return len(app.Calls(t)) >= 2 })
	if r := wsOp(ctx, t, ws, `{"op":"publish","ref":"r","topic":"chat.room","type":"msg","data":"still here"}`); strings.Contains(r, "error") {
		t.Fatalf("publish after renewal: %s", r)
	}
	select {
	case l := <-lines:
		if !strings.Contains(l, "still here") {
			t.Fatalf("SSE: %s", l)
		}
	case <-ctx.Done():
		t.Fatal("the SSE stream ended or got nothing after the renewal")
	}

	app.SetMode(t, "deny")
	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusPolicyViolation {
			t.Fatalf("after the application refused: %v, want 1008", err)
		}
		break
	}
	select {
	case _, ok := <-lines:
		for ok {
			_, ok = <-lines
		}
	case <-ctx.Done():
		t.Fatal("the SSE stream did not end when the application refused")
	}

	app.SetMode(t, "grant")
	ws2 := wsDial(ctx, t, n, "Cookie", "sid=bob", "Origin", "https://app.example")
	wsOp(ctx, t, ws2, `{"op":"subscribe","ref":"r","topics":["news.x"]}`)
	app.Stop()
	for {
		_, _, err := ws2.Read(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusTryAgainLater {
			t.Fatalf("after the application went down: %v, want 1013", err)
		}
		break
	}
}

// A connection whose session headers are too large to keep for hours is
// closed at its grants' expiry with 1013, to reconnect and send them again,
// instead of holding them; one with ordinary headers goes on.
func TestAuthUpstreamLargeSessionReconnects(t *testing.T) {
	app := authapp.Start(t, 1)
	n := upstreamNode(t, app, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	large := "sid=alice; pad=" + strings.Repeat("x", 9<<10)
	ws := wsDial(ctx, t, n, "Cookie", large, "Origin", "https://app.example")
	wsOp(ctx, t, ws, `{"op":"subscribe","ref":"r","topics":["chat.room"]}`)
	stream := sse(ctx, t, n, "chat.room", "Cookie", large)
	if stream.StatusCode != http.StatusOK {
		t.Fatalf("stream: %d", stream.StatusCode)
	}
	defer stream.Body.Close()
	small := wsDial(ctx, t, n, "Cookie", "sid=alice", "Origin", "https://app.example")
	wsOp(ctx, t, small, `{"op":"subscribe","ref":"r","topics":["chat.room"]}`)

	for {
		_, _, err := ws.Read(ctx)
		if err == nil {
			continue
		}
		if websocket.CloseStatus(err) != websocket.StatusTryAgainLater || !strings.Contains(err.Error(), "session expired: reconnect") {
			t.Fatalf("at expiry: %v, want 1013 session expired: reconnect", err)
		}
		break
	}
	for range dataLines(stream) {
	}
	if ctx.Err() != nil {
		t.Fatal("the SSE stream did not end at expiry")
	}
	// Past the expiry the ordinary session was asked again and goes on.
	wait.For(t, 10*time.Second, "the small session to be asked again", func() bool {
		n := 0
		for _, c := range app.Calls(t) {
			if c.Cookie == "sid=alice" {
				n++
			}
		}
		return n >= 2
	})
	if r := wsOp(ctx, t, small, `{"op":"publish","ref":"r","topic":"chat.room","type":"msg","data":"still here"}`); strings.Contains(r, "error") {
		t.Fatalf("publish after renewal: %s", r)
	}
}

// Request headers past --max-header-bytes are refused before any handler
// runs: 431, and the connection closed.
func TestMaxHeaderBytes(t *testing.T) {
	n := start(t, server.Config{MaxHeaderBytes: 8 << 10})
	get := func(cookie string) int {
		req, err := http.NewRequest(http.MethodGet, n.URL+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Cookie", cookie)
		resp, err := n.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(strings.Repeat("x", 4<<10)); s != http.StatusOK {
		t.Fatalf("4 KiB of headers: %d, want 200", s)
	}
	// net/http allows 4 KiB over the bound.
	if s := get(strings.Repeat("x", 16<<10)); s != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB of headers: %d, want 431", s)
	}
	if s := get("a=b"); s != http.StatusOK {
		t.Fatalf("after a refused request: %d, want 200", s)
	}
}
