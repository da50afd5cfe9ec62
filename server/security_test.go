package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// TestServeCookieNotFromOtherSites is cross-site WebSocket hijacking: a
// page on another site opens a WebSocket to Herald, and the browser
// attaches the visitor's herald_token cookie. With CORSOrigins "*" the
// handshake is allowed, but the cookie must not make the page its visitor:
// it subscribes, publishes and runs actions as nobody. A page of an origin
// named in AllowedOrigins is the operator's own, and its cookie counts.
func TestServeCookieNotFromOtherSites(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdef"
	in := start(t, server.Config{Auth: "jwt", JWTSecret: secret,
		CORSOrigins: []string{"*"}, AllowedOrigins: []string{"app.example.com", "*"}})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": "victim", "exp": time.Now().Add(time.Hour).Unix(),
		"herald": map[string][]string{"subscribe": {"orders.>"}, "publish": {"orders.*"}, "actions": {"echo"}},
	}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	for origin, want := range map[string]string{"https://evil.example": "unauthorized", "https://app.example.com": ""} {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws", &websocket.DialOptions{
			Subprotocols: []string{"herald.v1"},
			HTTPClient:   in.Client,
			HTTPHeader:   http.Header{"Origin": {origin}, "Cookie": {"herald_token=" + tok}},
		})
		if err != nil {
			t.Fatalf("%s: dial: %v", origin, err)
		}
		for _, op := range []string{
			`{"op":"subscribe","ref":"1","topics":["orders.>"]}`,
			`{"op":"publish","ref":"2","topic":"orders.1","data":"forged"}`,
			`{"op":"action","ref":"3","type":"echo","topic":"orders.1","payload":"forged"}`,
		} {
			if err := c.Write(ctx, websocket.MessageText, []byte(op)); err != nil {
				t.Fatalf("%s: write: %v", origin, err)
			}
			var reply struct {
				Op    string
				Error struct{ Code string }
			}
			for reply.Op == "" || reply.Op == "event" {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Fatalf("%s: read: %v", origin, err)
				}
				if err := json.Unmarshal(b, &reply); err != nil {
					t.Fatalf("%s: %s: %v", origin, b, err)
				}
			}
			if reply.Error.Code != want {
				t.Errorf("%s with the cookie: %s got %+v, want error code %q", origin, op, reply, want)
			}
		}
		c.CloseNow()
	}
}

// TestServeReadTimeout announces a request body and sends one byte of it:
// with ReadTimeout, the server answers 408 rather than waiting for ever,
// over HTTP/1.1 (and closes the connection) and over HTTP/2 (the stream).
func TestServeReadTimeout(t *testing.T) {
	in := start(t, server.Config{ReadTimeout: 200 * time.Millisecond, H2C: true})

	t.Run("HTTP/1.1", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(in.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "POST /v1/publish HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n"+
			"Content-Length: 1048576\r\n\r\n{"); err != nil {
			t.Fatal(err)
		}
		if err := conn.SetReadDeadline(time.Now().Add(15 * time.Second)); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(conn) // to the end: the server closes the connection
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		if !strings.HasPrefix(string(got), "HTTP/1.1 408 ") || !strings.Contains(string(got), `"request_timeout"`) {
			t.Errorf("the server answered %q, want 408 request_timeout", got)
		}
	})

	t.Run("HTTP/2", func(t *testing.T) {
		client, _ := newClient(t, nil, h2c)
		client.Timeout = 15 * time.Second
		body, more := io.Pipe()
		defer more.Close()
		go func() { _, _ = io.WriteString(more, "{") }() // and nothing more
		req, err := http.NewRequest(http.MethodPost, in.URL+"/v1/publish", body)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = 1 << 20
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(got), `"request_timeout"`) {
			t.Errorf("%s %d %s, want HTTP/2 408 request_timeout", resp.Proto, resp.StatusCode, got)
		}
	})
}

// TestServeWarnsWhenOpen checks the warning of a server without
// authentication on an address other machines can reach, and its absence
// on loopback or with Auth "jwt".
func TestServeWarnsWhenOpen(t *testing.T) {
	const warning = "AUTHENTICATION IS OFF"
	open := start(t, server.Config{Addr: "0.0.0.0:0"})
	if !strings.Contains(open.Logs.String(), warning) {
		t.Errorf("no warning on 0.0.0.0 without auth:\n%s", open.Logs)
	}
	local := start(t, server.Config{})
	closed := start(t, server.Config{Addr: "0.0.0.0:0", Auth: "jwt", JWTSecret: "0123456789abcdef0123456789abcdef"})
	for _, in := range []*heraldtest.Node{local, closed} {
		if strings.Contains(in.Logs.String(), warning) {
			t.Errorf("a warning where none is due:\n%s", in.Logs)
		}
	}
}

// TestServeSlowBodyOverHTTP2: a request body that takes longer than
// --write-timeout to arrive (but within --read-timeout) is answered, over
// HTTP/2 as over HTTP/1.1: on HTTP/2 a write deadline resets the stream
// when it passes, written to or not, so it is set only when the response
// begins.
func TestServeSlowBodyOverHTTP2(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	in := start(t, server.Config{ReadTimeout: 10 * time.Second, WriteTimeout: writeTimeout, H2C: true})
	client, _ := newClient(t, nil, h2c)
	client.Timeout = 15 * time.Second
	body, more := io.Pipe()
	go func() {
		_, _ = io.WriteString(more, `{"topic":"slow.a",`)
		// A slow client, not synchronisation: the rest comes after three
		// write timeouts.
		time.Sleep(3 * writeTimeout)
		_, _ = io.WriteString(more, `"data":1}`)
		more.Close()
	}()
	req, err := http.NewRequest(http.MethodPost, in.URL+"/v1/publish", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || time.Since(start) < 3*writeTimeout {
		t.Errorf("%s %d %s after %v, want HTTP/2 200 after %v", resp.Proto, resp.StatusCode, got, time.Since(start), 3*writeTimeout)
	}
}
