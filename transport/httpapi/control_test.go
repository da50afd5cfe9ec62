package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
)

// adminToken is a token whose herald claim has "admin": admin.
func adminToken(t *testing.T, sub string, admin bool) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": time.Now().Add(time.Hour).Unix(),
		"herald": map[string]any{"admin": admin, "subscribe": []string{">"}}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// dialAs opens a WebSocket with tok and subscribes it to topics; it
// returns the connection and its ID.
func (s *server) dialAs(t *testing.T, tok string, topics ...string) (*wsConn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws?access_token="+tok,
		&websocket.DialOptions{Subprotocols: []string{"herald.v1"}, HTTPClient: s.client})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); c.CloseNow() })
	w := &wsConn{c: c, ctx: ctx}
	b, _ := json.Marshal(topics)
	w.send(t, `{"op":"subscribe","ref":1,"topics":`+string(b)+`}`)
	m := w.recv(t)
	var id string
	if string(m["op"]) != `"ok"` || json.Unmarshal(m["client"], &id) != nil || id == "" {
		t.Fatalf("subscribe: %v", m)
	}
	return w, id
}

// closeCode reads until the connection is closed and returns its close
// error.
func (w *wsConn) closed(t *testing.T) websocket.CloseError {
	t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 10*time.Second)
	defer cancel()
	for {
		_, _, err := w.c.Read(ctx)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("the connection ended without a close frame: %v", err)
		}
		return ce
	}
}

// sseFrame is one event of an SSE stream: its event type and data.
type sseFrame struct{ event, data string }

// rawSSE opens an SSE stream and hands its events to a channel, which is
// closed when the stream ends. It returns the stream's Herald-Client.
func (s *server) rawSSE(t *testing.T, query string) (<-chan sseFrame, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?"+query, nil)
	resp, err := s.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		cancel()
		t.Fatalf("GET /v1/events?%s: %v %v", query, resp, err)
	}
	ch := make(chan sseFrame, 64)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		br := bufio.NewReader(resp.Body)
		var f sseFrame
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				f.event = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				f.data = line[len("data: "):]
			case line == "" && f.data != "":
				select {
				case ch <- f:
				case <-ctx.Done():
					return
				}
				f = sseFrame{}
			}
		}
	}()
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	return ch, resp.Header.Get("Herald-Client")
}

// nextFrame returns the stream's next event; ok is false if it ended.
func nextFrame(t *testing.T, ch <-chan sseFrame) (sseFrame, bool) {
	t.Helper()
	select {
	case f, ok := <-ch:
		return f, ok
	case <-time.After(10 * time.Second):
		t.Fatal("no SSE event within 10 s")
	}
	return sseFrame{}, false
}

func (s *server) control(t *testing.T, path, body string, hdr map[string]string) response {
	t.Helper()
	return s.authedDo(t, http.MethodPost, path, body, hdr)
}

var apiKey = map[string]string{"X-API-Key": "publisher-key"}

// keyPublish publishes one event with the API key.
func (s *server) keyPublish(t *testing.T, topic, data string) {
	t.Helper()
	if r := s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"`+topic+`","data":`+data+`}`, apiKey); r.status != http.StatusOK {
		t.Fatalf("publish %s: %d %s", topic, r.status, r.body)
	}
}

// TestControlDisconnect: a disconnect by user closes every connection of
// the user, WebSocket with 4001 "disconnected" and SSE by ending the
// stream, and no other; one by client closes that connection only.
func TestControlDisconnect(t *testing.T) {
	s := newAuthServer(t)
	alice, bob := adminToken(t, "alice", false), adminToken(t, "bob", false)
	aws, _ := s.dialAs(t, alice, "orders.*")
	asse, _ := s.rawSSE(t, "topic=orders.*&access_token="+alice)
	bws, bid := s.dialAs(t, bob, "orders.*")
	bsse, bsseID := s.rawSSE(t, "topic=orders.*&access_token="+bob)

	r := s.control(t, "/v1/disconnect", `{"user":"alice"}`, apiKey)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"connections":2}` {
		t.Fatalf("disconnect alice: %d %s, want 200 {\"connections\":2}", r.status, r.body)
	}
	if ce := aws.closed(t); ce.Code != 4001 || ce.Reason != "disconnected" {
		t.Errorf("alice's WebSocket closed with %d %q, want 4001 disconnected", ce.Code, ce.Reason)
	}
	if f, ok := nextFrame(t, asse); ok {
		t.Errorf("alice's SSE stream sent %v, want it ended", f)
	}
	// Bob's connections are still served.
	s.keyPublish(t, "orders.1", `1`)
	if m := bws.recv(t); string(m["op"]) != `"event"` {
		t.Errorf("bob's WebSocket got %v, want the event", m)
	}
	if f, ok := nextFrame(t, bsse); !ok || f.event != "message" {
		t.Errorf("bob's stream got %v %v, want the event", f, ok)
	}

	r = s.control(t, "/v1/disconnect", `{"client":"`+bid+`"}`, apiKey)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"connections":1}` {
		t.Fatalf("disconnect %s: %d %s", bid, r.status, r.body)
	}
	if ce := bws.closed(t); ce.Code != 4001 {
		t.Errorf("bob's WebSocket closed with %d, want 4001", ce.Code)
	}
	r = s.control(t, "/v1/disconnect", `{"client":"`+bsseID+`"}`, map[string]string{"Authorization": "Bearer " + adminToken(t, "ops", true)})
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"connections":1}` {
		t.Fatalf("disconnect %s with an admin token: %d %s", bsseID, r.status, r.body)
	}
	if f, ok := nextFrame(t, bsse); ok {
		t.Errorf("bob's SSE stream sent %v, want it ended", f)
	}
	// Nobody left to disconnect.
	if r := s.control(t, "/v1/disconnect", `{"user":"alice"}`, apiKey); strings.TrimSpace(string(r.body)) != `{"connections":0}` {
		t.Errorf("disconnect alice again: %d %s, want 0 connections", r.status, r.body)
	}
}

// TestControlUnsubscribe: the connections of the user lose those
// subscriptions (as written) and are told: WebSocket with an
// unsubscribed message, SSE with a herald.unsubscribed event; they get no
// event of those patterns after it, and still get the others'.
func TestControlUnsubscribe(t *testing.T) {
	s := newAuthServer(t)
	alice := adminToken(t, "alice", false)
	aws, _ := s.dialAs(t, alice, "orders.*", "news")
	asse, _ := s.rawSSE(t, "topic=orders.*&topic=news&access_token="+alice)
	other := adminToken(t, "carol", false)
	cws, _ := s.dialAs(t, other, "orders.*")

	r := s.control(t, "/v1/unsubscribe", `{"user":"alice","topics":["orders.*","sport"]}`, apiKey)
	if r.status != http.StatusOK || strings.TrimSpace(string(r.body)) != `{"connections":2}` {
		t.Fatalf("unsubscribe: %d %s, want 200 {\"connections\":2}", r.status, r.body)
	}
	m := aws.recv(t)
	if string(m["op"]) != `"unsubscribed"` || string(m["topics"]) != `["orders.*"]` {
		t.Errorf("alice's WebSocket got %v, want unsubscribed [orders.*]", m)
	}
	if f, _ := nextFrame(t, asse); f.event != "herald.unsubscribed" || f.data != `{"topics":["orders.*"]}` {
		t.Errorf("alice's stream got %+v, want herald.unsubscribed {\"topics\":[\"orders.*\"]}", f)
	}
	s.keyPublish(t, "orders.1", `"order"`)
	s.keyPublish(t, "news", `"news"`)
	if m := aws.recv(t); string(m["topic"]) != `"news"` {
		t.Errorf("alice's WebSocket got %v, want the news event and no order", m)
	}
	if f, _ := nextFrame(t, asse); !strings.Contains(f.data, `"topic":"news"`) {
		t.Errorf("alice's stream got %+v, want the news event and no order", f)
	}
	if m := cws.recv(t); string(m["topic"]) != `"orders.1"` {
		t.Errorf("carol's WebSocket got %v, want the order", m)
	}
}

// TestControlAuth: only the API key and admin tokens may use the control
// API; without authentication nobody may.
func TestControlAuth(t *testing.T) {
	s := newAuthServer(t)
	body := `{"user":"alice"}`
	for _, c := range []struct {
		name   string
		hdr    map[string]string
		status int
		code   string
	}{
		{"no credentials", nil, http.StatusUnauthorized, "unauthorized"},
		{"wrong API key", map[string]string{"X-API-Key": "guess"}, http.StatusUnauthorized, "unauthorized"},
		{"bad token", map[string]string{"Authorization": "Bearer x.y.z"}, http.StatusUnauthorized, "unauthorized"},
		{"user token", map[string]string{"Authorization": "Bearer " + adminToken(t, "alice", false)}, http.StatusForbidden, "forbidden"},
		{"cookie from a foreign page", map[string]string{"Cookie": "herald_token=" + adminToken(t, "ops", true), "Origin": "https://evil.example"}, http.StatusUnauthorized, "unauthorized"},
		{"admin token", map[string]string{"Authorization": "Bearer " + adminToken(t, "ops", true)}, http.StatusOK, ""},
		{"API key", apiKey, http.StatusOK, ""},
	} {
		for _, path := range []string{"/v1/disconnect", "/v1/unsubscribe"} {
			b := body
			if path == "/v1/unsubscribe" {
				b = `{"user":"alice","topics":["a"]}`
			}
			r := s.control(t, path, b, c.hdr)
			if r.status != c.status || (c.code != "" && errCode(r.body) != c.code) {
				t.Errorf("%s %s: %d %s, want %d %s", c.name, path, r.status, r.body, c.status, c.code)
			}
		}
	}
	open := newServer(t, serverOptions{})
	r := open.control(t, "/v1/disconnect", body, nil)
	assertError(t, r, http.StatusForbidden, "forbidden")
}

// TestControlBadInput: every malformed request gets its JSON error, and
// nothing is done.
func TestControlBadInput(t *testing.T) {
	s := newAuthServer(t)
	ws, _ := s.dialAs(t, adminToken(t, "alice", false), "orders.*")
	for _, c := range []struct {
		path, body string
		status     int
		code       string
	}{
		{"/v1/disconnect", `{"user":`, 400, "invalid_json"},
		{"/v1/disconnect", `[]`, 400, "invalid_json"},
		{"/v1/disconnect", `{"user":5}`, 400, "invalid_json"},
		{"/v1/disconnect", "{\"user\":\"\xff\"}", 400, "invalid_json"},
		{"/v1/disconnect", `{}`, 400, "invalid_request"},
		{"/v1/disconnect", `{"user":""}`, 400, "invalid_request"},
		{"/v1/disconnect", `{"user":"alice","client":"x-1"}`, 400, "invalid_request"},
		{"/v1/disconnect", `{"user":"alice","topics":["a"]}`, 400, "invalid_request"},
		{"/v1/disconnect", `{"user":"` + strings.Repeat("u", 1025) + `"}`, 400, "invalid_request"},
		{"/v1/unsubscribe", `{"user":"alice"}`, 400, "invalid_request"},
		{"/v1/unsubscribe", `{"user":"alice","topics":[]}`, 400, "invalid_request"},
		{"/v1/unsubscribe", `{"user":"alice","topics":"orders.*"}`, 400, "invalid_json"},
		{"/v1/unsubscribe", `{"user":"alice","topics":["orders..x"]}`, 400, "invalid_pattern"},
		{"/v1/unsubscribe", `{"user":"alice","topics":["` + strings.Repeat("a", 200<<10) + `"]}`, 413, "too_large"},
	} {
		r := s.control(t, c.path, c.body, apiKey)
		if r.status != c.status || errCode(r.body) != c.code {
			t.Errorf("%s %.60s: %d %s, want %d %s", c.path, c.body, r.status, r.body, c.status, c.code)
		}
	}
	r := s.authedDo(t, http.MethodPost, "/v1/disconnect", "", map[string]string{"X-API-Key": "publisher-key", "Content-Type": "text/plain"})
	assertError(t, r, http.StatusUnsupportedMediaType, "unsupported_media_type")
	r = s.authedDo(t, http.MethodGet, "/v1/disconnect", "", apiKey)
	assertError(t, r, http.StatusMethodNotAllowed, "method_not_allowed")
	// Alice is still connected.
	s.keyPublish(t, "orders.1", `1`)
	if m := ws.recv(t); string(m["op"]) != `"event"` {
		t.Errorf("alice got %v, want the event", m)
	}
}
