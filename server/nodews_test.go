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

	next := func() map[string]any { t.Helper(); return c.NextJSON(t, wait) }
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

// dashboardJSON is a dashboard event's data of about 3 KB: a host's
// metrics and services, where seq changes from one event to the next.
func dashboardJSON(seq int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"host":"web-17.eu-west-1.internal","seq":%d,"services":[`, seq)
	for i := range 24 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"service-%d","status":"ok","version":"2.%d.0","p50_ms":%d,"p99_ms":%d,"rps":%d}`, i, i%4, 8+i, 90+i*7, 1200-i*31)
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestNodeWSCompression has the npm ws client negotiate permessage-deflate
// (compressing every message it sends) and checks that events under and
// over the compression threshold arrive intact, that a compressed publish
// is read, and, through the stats op, that the events over the threshold
// took fewer bytes on the wire than uncompressed.
func TestNodeWSCompression(t *testing.T) {
	n := start(t, server.Config{})
	c, ext := nodews.DialWith(t, "ws"+strings.TrimPrefix(n.URL, "http")+"/v1/ws",
		nodews.Options{PerMessageDeflate: map[string]any{"threshold": 0}})
	if !strings.HasPrefix(ext, "permessage-deflate") || !strings.Contains(ext, "server_no_context_takeover") ||
		!strings.Contains(ext, "client_no_context_takeover") {
		t.Fatalf("extensions negotiated with ws: %q", ext)
	}
	const wait = 10 * time.Second
	next := func() map[string]any { t.Helper(); return c.NextJSON(t, wait) }
	c.Send(t, `{"op":"subscribe","ref":"s","topics":["dash.>"]}`)
	if m := next(); m["op"] != "ok" || m["ref"] != "s" {
		t.Fatalf("subscribe answered %v", m)
	}
	var sent []string
	for i := range 6 {
		data := dashboardJSON(i)
		if i%2 == 1 {
			data = fmt.Sprintf(`{"seq":%d}`, i) // under the threshold
		}
		sent = append(sent, data)
		if status, resp := n.Post(t, "/v1/publish", `{"topic":"dash.h","data":`+data+`}`); status != http.StatusOK {
			t.Fatalf("publish: %d %s", status, resp)
		}
	}
	// A publish of its own, compressed by ws.
	big := dashboardJSON(99)
	sent = append(sent, big)
	c.Send(t, `{"op":"publish","ref":"p","topic":"dash.ws","data":`+big+`}`)
	// The publish's ok may come before or after its own event.
	acked := false
	for i := 0; i < len(sent) || !acked; {
		m := next()
		if m["op"] == "ok" && m["ref"] == "p" {
			acked = true
			continue
		}
		if i == len(sent) {
			t.Fatalf("after every event, waiting for the publish's ok: %v", m)
		}
		got, _ := json.Marshal(m["data"])
		var want any
		_ = json.Unmarshal([]byte(sent[i]), &want)
		wantJSON, _ := json.Marshal(want)
		if m["op"] != "event" || string(got) != string(wantJSON) {
			t.Fatalf("event %d: %v, want data %s", i, m, sent[i])
		}
		i++
	}
	c.Send(t, `{"op":"stats","ref":"st"}`)
	m := next()
	if m["op"] != "stats" {
		t.Fatalf("stats answered %v", m)
	}
	events, wire, plain := m["events"].(float64), m["wire_bytes"].(float64), m["bytes"].(float64)
	t.Logf("stats: %v events, %v bytes on the wire, %v uncompressed", events, wire, plain)
	if m["op"] != "stats" || m["ref"] != "st" || int(events) != len(sent) || wire >= plain/2 {
		t.Fatalf("stats answered %v", m)
	}
	c.Close()
	if line := c.Next(t, wait); line != "closed 1000" {
		t.Fatalf("closing with 1000: %s", line)
	}
}
