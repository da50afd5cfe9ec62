package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/nodews"
	"github.com/heraldpush/herald/server"
)

// TestNodeWSClient talks to Herald with the npm ws package, the WebSocket
// client most Node.js programs use, as it comes (it offers
// permessage-deflate and answers pings itself): subscribe, events of every
// frame length in order, a publish, a bad message answered without losing
// the connection, and a clean close.
func TestNodeWSClient(t *testing.T) {
	n := start(t, server.Config{})
	c, ext := nodews.Dial(t, "ws"+strings.TrimPrefix(n.URL, "http")+"/v1/ws")
	t.Logf("extensions negotiated with ws: %s", ext)
	const wait = 10 * time.Second

	next := func() map[string]any {
		t.Helper()
		line := c.Next(t, wait)
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("ws received %q: not JSON: %v", line, err)
		}
		return m
	}
	c.Send(t, `{"op":"subscribe","ref":"s","topics":["node.>"]}`)
	if m := next(); m["op"] != "ok" || m["ref"] != "s" {
		t.Fatalf("subscribe answered %v", m)
	}

	// Payloads across the frame length encodings (7-bit, 16-bit, 64-bit)
	// and past the size written without a copy.
	sizes := []int{1, 100, 126, 1000, 65535, 70000, 200000}
	for i, size := range sizes {
		body := fmt.Sprintf(`{"topic":"node.t","type":"big","data":{"i":%d,"s":%q}}`, i, strings.Repeat("x", size))
		if status, resp := n.Post(t, "/v1/publish", body); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, resp)
		}
	}
	for i, size := range sizes {
		m := next()
		data, _ := m["data"].(map[string]any)
		if m["op"] != "event" || data == nil || data["i"] != float64(i) || len(data["s"].(string)) != size {
			t.Fatalf("event %d (%d bytes): got op %v, data i %v", i, size, m["op"], data["i"])
		}
	}

	c.Send(t, `{"op":"publish","ref":"p","topic":"node.ws","data":{"from":"ws"}}`)
	var ok, event bool
	for !ok || !event {
		switch m := next(); m["op"] {
		case "ok":
			ok = m["ref"] == "p" && m["id"] != nil
		case "event":
			event = m["topic"] == "node.ws"
		default:
			t.Fatalf("after a publish: %v", m)
		}
	}

	c.Send(t, `not json`)
	if m := next(); m["op"] != "error" {
		t.Fatalf("a message that is not JSON answered %v", m)
	}
	c.Send(t, `{"op":"ping","ref":"x"}`)
	if m := next(); m["op"] != "pong" || m["ref"] != "x" {
		t.Fatalf("ping after an error answered %v", m)
	}

	c.Close()
	if line := c.Next(t, wait); line != "closed 1000" {
		t.Fatalf("closing with 1000: %s", line)
	}
}
