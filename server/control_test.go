package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/natstest"
	"github.com/heraldpush/herald/internal/testkit/redistest"
	"github.com/heraldpush/herald/internal/testkit/relay"
	"github.com/heraldpush/herald/server"
)

const controlSecret = "a secret for HS256 of 32 bytes!!"

func userToken(t *testing.T, sub string) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub": sub, "exp": time.Now().Add(time.Hour).Unix(), "herald": map[string]any{"subscribe": []string{">"}},
	}).SignedString([]byte(controlSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// controlPost calls the control API of n with the API key.
func controlPost(t *testing.T, n *heraldtest.Node, path, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, n.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", "ops-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s %s: %d %s", path, body, resp.StatusCode, b)
	}
	return strings.TrimSpace(string(b))
}

// wsAs dials n's WebSocket with tok, subscribes to topics and returns the
// connection and its ID.
func wsAs(ctx context.Context, t *testing.T, n *heraldtest.Node, tok string, topics ...string) (*websocket.Conn, string) {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(n.URL, "http")+"/v1/ws?access_token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	b, _ := json.Marshal(map[string]any{"op": "subscribe", "ref": 1, "topics": topics})
	if err := c.Write(ctx, websocket.MessageText, b); err != nil {
		t.Fatal(err)
	}
	var ok struct{ Op, Client string }
	if _, m, err := c.Read(ctx); err != nil || json.Unmarshal(m, &ok) != nil || ok.Op != "ok" || ok.Client == "" {
		t.Fatalf("subscribe: %s %v", m, err)
	}
	return c, ok.Client
}

func wsClose(ctx context.Context, t *testing.T, c *websocket.Conn) websocket.CloseError {
	t.Helper()
	for {
		_, _, err := c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("the WebSocket ended without a close frame: %v", err)
		}
		return ce
	}
}

// TestClusterControl: a control call on node A acts on connections of
// node B: a disconnect by user closes B's WebSocket with 4001 and ends
// its SSE stream, one by client ID closes that connection, and an
// unsubscribe reaches B's WebSocket.
func TestClusterControl(t *testing.T) { heraldtest.ForEachBroker(t, testClusterControl) }

func testClusterControl(t *testing.T, broker string) {
	cfg := server.Config{Broker: broker, Auth: "jwt", JWTSecret: controlSecret, APIKey: "ops-key"}
	a, b := start(t, cfg), start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	alice, bob := userToken(t, "alice"), userToken(t, "bob")

	aws, _ := wsAs(ctx, t, b, alice, "orders.*")
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.URL+"/v1/events?topic=orders.*&access_token="+alice, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("SSE on B: %v %v", resp, err)
	}
	sseEnded := make(chan struct{})
	go func() {
		defer close(sseEnded)
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, bufio.NewReader(resp.Body))
	}()
	bws, bid := wsAs(ctx, t, b, bob, "orders.*", "news")

	// A has none of alice's connections: it counts none, and B acts.
	if got := controlPost(t, a, "/v1/disconnect", `{"user":"alice"}`); got != `{"connections":0}` {
		t.Errorf("disconnect on A = %s, want 0 connections (A's own)", got)
	}
	if ce := wsClose(ctx, t, aws); ce.Code != 4001 || ce.Reason != "disconnected" {
		t.Errorf("alice's WebSocket on B closed with %d %q, want 4001 disconnected", ce.Code, ce.Reason)
	}
	select {
	case <-sseEnded:
	case <-ctx.Done():
		t.Fatal("alice's SSE stream on B did not end")
	}

	controlPost(t, a, "/v1/unsubscribe", `{"client":"`+bid+`","topics":["orders.*"]}`)
	var un struct {
		Op     string
		Topics []string
	}
	if _, m, err := bws.Read(ctx); err != nil || json.Unmarshal(m, &un) != nil || un.Op != "unsubscribed" || len(un.Topics) != 1 || un.Topics[0] != "orders.*" {
		t.Fatalf("bob's WebSocket on B got %s %v, want unsubscribed [orders.*]", m, err)
	}
	controlPost(t, a, "/v1/disconnect", `{"client":"`+bid+`"}`)
	if ce := wsClose(ctx, t, bws); ce.Code != 4001 {
		t.Errorf("bob's WebSocket on B closed with %d, want 4001", ce.Code)
	}
}

// TestControlBrokerOutage: with the broker cut off, a control call still
// acts on the node that took it, and answers 503 unavailable saying so,
// within the broker's bound: the other nodes were not told.
func TestControlBrokerOutage(t *testing.T) {
	for _, br := range []struct {
		name, target string
		url          func(testing.TB) string
	}{
		{"redis", redistest.Addr(), redistest.URL},
		{"nats", strings.TrimPrefix(natstest.URL(), "nats://"), natstest.BrokerURL},
	} {
		t.Run(br.name, func(t *testing.T) {
			rl := relay.Start(t, br.target, relay.Options{})
			broker := strings.Replace(br.url(t), br.target, rl.Addr(), 1)
			n := start(t, server.Config{Broker: broker, Auth: "jwt", JWTSecret: controlSecret, APIKey: "ops-key"})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			ws, _ := wsAs(ctx, t, n, userToken(t, "alice"), "orders.*")
			rl.Down()
			defer rl.Up()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.URL+"/v1/disconnect", strings.NewReader(`{"user":"alice"}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-API-Key", "ops-key")
			began := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), `"unavailable"`) || !strings.Contains(string(b), "connections of this node acted on: 1") {
				t.Errorf("disconnect with the broker cut off: %d %s, want 503 unavailable naming 1 connection", resp.StatusCode, b)
			}
			if d := time.Since(began); d > 15*time.Second {
				t.Errorf("the call took %v with the broker cut off", d)
			}
			if ce := wsClose(ctx, t, ws); ce.Code != 4001 {
				t.Errorf("the WebSocket closed with %d, want 4001: the node acts on its own connections", ce.Code)
			}
		})
	}
}
