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

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
)

var jwtSecret = []byte("an HS256 secret of 32 bytes, ok!")

func token(t *testing.T, exp time.Time, sub string, grants map[string][]string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "exp": exp.Unix()}
	if grants != nil {
		claims["herald"] = grants
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func newAuthServer(t *testing.T) *server {
	t.Helper()
	a, err := auth.New(auth.Config{
		Secret: jwtSecret, APIKey: "publisher-key", Leeway: time.Millisecond,
		PublicSubscribe: []hub.Pattern{hub.MustPattern("public.>")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return newServer(t, serverOptions{auth: a, actions: &action.Options{Echo: true}})
}

// authedDo sends a request with extra headers.
func (s *server) authedDo(t *testing.T, method, path, body string, hdr map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = bufio.NewReader(resp.Body).WriteTo(&b)
	return response{status: resp.StatusCode, header: resp.Header, body: []byte(b.String())}
}

func errCode(body []byte) string {
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// TestAuthMatrix runs every transport against every kind of credential:
// none, a bad signature, alg none, expired, a grant that does not cover
// the request, and one that does.
func TestAuthMatrix(t *testing.T) {
	s := newAuthServer(t)
	now := time.Now()
	grant := map[string][]string{"subscribe": {"orders.>"}, "publish": {"orders.*"}, "actions": {"echo"}}
	other := map[string][]string{"subscribe": {"news.>"}, "publish": {"news.*"}, "actions": {"todo.*"}}
	badSig := token(t, now.Add(time.Hour), "alice", grant)
	badSig = badSig[:len(badSig)-4] + "AAAA"
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix(), "herald": grant}).
		SignedString(jwt.UnsafeAllowNoneSignatureType)
	creds := []struct {
		name   string
		token  string
		status int    // HTTP status for every operation
		code   string // its error code
		wsOpen bool   // the WebSocket stays open (refusals come as error replies)
	}{
		{"no token", "", http.StatusUnauthorized, "unauthorized", true},
		{"bad signature", badSig, http.StatusUnauthorized, "unauthorized", false},
		{"alg none", none, http.StatusUnauthorized, "unauthorized", false},
		{"expired", token(t, now.Add(-time.Minute), "alice", grant), http.StatusUnauthorized, "unauthorized", false},
		{"wrong grant", token(t, now.Add(time.Hour), "alice", other), http.StatusForbidden, "forbidden", true},
		{"right grant", token(t, now.Add(time.Hour), "alice", grant), 0, "", true},
	}
	for _, c := range creds {
		t.Run(c.name, func(t *testing.T) {
			hdr := map[string]string{}
			if c.token != "" {
				hdr["Authorization"] = "Bearer " + c.token
			}
			check := func(what string, r response, okStatus int) {
				t.Helper()
				want := c.status
				if want == 0 {
					want = okStatus
				}
				if r.status != want || errCode(r.body) != c.code {
					t.Errorf("%s: %d %s, want %d %q", what, r.status, r.body, want, c.code)
				}
				if r.status == http.StatusUnauthorized && r.header.Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without WWW-Authenticate", what)
				}
			}
			check("publish", s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"orders.1","data":1}`, hdr), http.StatusOK)
			check("action", s.authedDo(t, http.MethodPost, "/v1/actions", `{"type":"echo","topic":"orders.1","payload":1}`, hdr), http.StatusAccepted)
			check("history", s.authedDo(t, http.MethodGet, "/v1/topics/orders.1/history", "", hdr), http.StatusOK)
			check("state", s.authedDo(t, http.MethodGet, "/v1/topics/orders.1/state", "", hdr), http.StatusOK)

			// SSE: the token in the query, as EventSource sends it.
			path := "/v1/events?topic=orders.*"
			if c.token != "" {
				path += "&access_token=" + c.token
			}
			check("sse", s.openSSE(t, path, nil), http.StatusOK)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			// WebSocket: the token in the query, as browsers send it.
			wsURL := "ws" + strings.TrimPrefix(s.url, "http") + "/v1/ws"
			if c.token != "" {
				wsURL += "?access_token=" + c.token
			}
			conn, _, err := websocket.Dial(ctx, wsURL, &websocket.DialOptions{Subprotocols: []string{"herald.v1"}, HTTPClient: s.client})
			if err != nil {
				t.Fatalf("ws dial: %v", err)
			}
			defer conn.CloseNow()
			w := &wsConn{c: conn, ctx: ctx}
			if !c.wsOpen {
				_, _, err := conn.Read(ctx)
				if got := websocket.CloseStatus(err); got != websocket.StatusPolicyViolation {
					t.Errorf("ws with a bad token: %v, want close 1008", err)
				}
				return
			}
			for op, code := range w.grantedOps(t) {
				if code != c.code {
					t.Errorf("ws %s: error code %q, want %q", op, code, c.code)
				}
			}
		})
	}
}

// grantedOps subscribes to orders.*, publishes to orders.1 and runs an echo
// action there, and returns each op's error code ("" for ok).
func (w *wsConn) grantedOps(t *testing.T) map[string]string {
	t.Helper()
	codes := map[string]string{}
	for _, op := range []struct{ name, msg string }{
		{"subscribe", `{"op":"subscribe","ref":1,"topics":["orders.*"]}`},
		{"publish", `{"op":"publish","ref":2,"topic":"orders.1","data":1}`},
		{"action", `{"op":"action","ref":3,"type":"echo","topic":"orders.1","payload":1}`},
	} {
		w.send(t, op.msg)
		m := w.recv(t)
		for string(m["op"]) == `"event"` { // the events of the publish and action, on this subscription
			m = w.recv(t)
		}
		var reply string
		_ = json.Unmarshal(m["op"], &reply)
		var e struct{ Code string }
		_ = json.Unmarshal(m["error"], &e)
		if reply == "error" && e.Code == "" || reply != "error" && reply != "ok" {
			t.Fatalf("ws %s: reply %v", op.name, m)
		}
		codes[op.name] = e.Code
	}
	return codes
}

func TestAuthPublicAndAPIKey(t *testing.T) {
	s := newAuthServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sse := func(q string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?"+q, nil)
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := sse("topic=public.news"); got != http.StatusOK {
		t.Errorf("anonymous subscribe to a public pattern: %d", got)
	}
	if got := sse("topic=public.news&topic=orders.1"); got != http.StatusUnauthorized {
		t.Errorf("anonymous subscribe to a public and a private pattern: %d, want 401", got)
	}
	if got := sse("topic=public.>&access_token=" + token(t, time.Now().Add(time.Hour), "bob", nil)); got != http.StatusOK {
		t.Errorf("a token without grants, on a public pattern: %d", got)
	}
	key := map[string]string{"X-API-Key": "publisher-key"}
	if r := s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"any.topic","data":1}`, key); r.status != http.StatusOK {
		t.Errorf("publish with the API key: %d %s", r.status, r.body)
	}
	if r := s.authedDo(t, http.MethodPost, "/v1/actions", `{"type":"echo","topic":"a","payload":1}`, key); r.status != http.StatusForbidden {
		t.Errorf("an action with the API key: %d %s, want 403", r.status, r.body)
	}
	if r := s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"any.topic","data":1}`, map[string]string{"X-API-Key": "guess"}); r.status != http.StatusUnauthorized {
		t.Errorf("publish with a wrong API key: %d %s, want 401", r.status, r.body)
	}
	// The topic list shows only what the caller may subscribe to.
	s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"public.x","data":1}`, key)
	r := s.authedDo(t, http.MethodGet, "/v1/topics", "", nil)
	if r.status != http.StatusOK || strings.Contains(string(r.body), "any.topic") || !strings.Contains(string(r.body), "public.x") {
		t.Errorf("anonymous topic list: %d %s", r.status, r.body)
	}
	if r := s.authedDo(t, http.MethodGet, "/v1/stats", "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous stats: %d, want 401", r.status)
	}
}

// TestAuthCookieCrossSite checks that the herald_token cookie authenticates
// a same-origin POST and not a cross-site one, which any page could forge,
// as the browser reports it in Sec-Fetch-Site.
func TestAuthCookieCrossSite(t *testing.T) {
	s := newAuthServer(t)
	tok := token(t, time.Now().Add(time.Hour), "alice", map[string][]string{"publish": {"orders.*"}})
	post := func(site string) response {
		return s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"orders.1","data":1}`, map[string]string{
			"Cookie": "herald_token=" + tok, "Sec-Fetch-Site": site,
		})
	}
	if r := post("same-origin"); r.status != http.StatusOK {
		t.Errorf("same-origin POST with the cookie: %d %s", r.status, r.body)
	}
	if r := post("cross-site"); r.status != http.StatusUnauthorized || errCode(r.body) != "unauthorized" {
		t.Errorf("cross-site POST with the cookie: %d %s, want 401: the cookie is no credential there", r.status, r.body)
	}
	// The same request with the token in a header cannot be forged by a page.
	r := s.authedDo(t, http.MethodPost, "/v1/publish", `{"topic":"orders.1","data":1}`, map[string]string{
		"Authorization": "Bearer " + tok, "Sec-Fetch-Site": "cross-site",
	})
	if r.status != http.StatusOK {
		t.Errorf("cross-site POST with a bearer token: %d %s", r.status, r.body)
	}
}

// TestTokenExpiryEndsConnections opens an SSE stream and a WebSocket with a
// token that expires in about two seconds: the stream ends and the socket
// closes with 1008 "token expired", unless the socket refreshed its token.
func TestTokenExpiryEndsConnections(t *testing.T) {
	s := newAuthServer(t)
	grant := map[string][]string{"subscribe": {"orders.>"}}
	// exp is in whole seconds.
	soon := time.Unix(time.Now().Add(2*time.Second).Unix(), 0)
	short := token(t, soon, "alice", grant)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?topic=orders.*&access_token="+short, nil)
	resp, err := s.client.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("sse: %v %v", resp, err)
	}
	defer resp.Body.Close()
	sseEnded := make(chan time.Time, 1)
	go func() {
		_, _ = bufio.NewReader(resp.Body).WriteTo(new(strings.Builder))
		sseEnded <- time.Now()
	}()

	dial := func() *wsConn {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws?access_token="+short,
			&websocket.DialOptions{Subprotocols: []string{"herald.v1"}, HTTPClient: s.client})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		w := &wsConn{c: c, ctx: ctx}
		w.send(t, `{"op":"subscribe","ref":1,"topics":["orders.*"]}`)
		if m := w.recv(t); string(m["op"]) != `"ok"` {
			t.Fatalf("subscribe: %v", m)
		}
		return w
	}
	expiring, refreshed := dial(), dial()

	// A refresh for another subject, or one whose grant lacks a held
	// subscription, is refused; a good one is taken.
	for _, bad := range []string{
		token(t, time.Now().Add(time.Hour), "mallory", grant),
		token(t, time.Now().Add(time.Hour), "alice", map[string][]string{"subscribe": {"news.>"}}),
		"garbage",
	} {
		refreshed.send(t, `{"op":"refresh","ref":2,"token":"`+bad+`"}`)
		if m := refreshed.recv(t); string(m["op"]) != `"error"` {
			t.Errorf("refresh with a bad token: %v", m)
		}
	}
	refreshed.send(t, `{"op":"refresh","ref":3,"token":"`+token(t, time.Now().Add(time.Hour), "alice", grant)+`"}`)
	if m := refreshed.recv(t); string(m["op"]) != `"ok"` {
		t.Fatalf("refresh: %v", m)
	}

	_, _, err = expiring.c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || ce.Reason != "token expired" {
		t.Errorf("expiring WebSocket: %v, want close 1008 token expired", err)
	}
	if time.Now().Before(soon) {
		t.Errorf("closed before the token expired")
	}
	select {
	case at := <-sseEnded:
		if at.Before(soon) {
			t.Errorf("the stream ended before the token expired")
		}
	case <-ctx.Done():
		t.Fatal("the SSE stream outlived its token")
	}
	// The refreshed socket is still served.
	refreshed.send(t, `{"op":"ping","ref":4}`)
	if m := refreshed.recv(t); string(m["op"]) != `"pong"` {
		t.Errorf("after refresh: %v", m)
	}
}

// TestAPIKeyScope checks what the --api-key may do: it is the backend's
// credential, so it publishes to any topic and reads the node's statistics,
// and, like anyone, subscribes to the public patterns; what a user does
// (subscribing to private topics, reading their history, actions) needs a
// user's token: 403.
func TestAPIKeyScope(t *testing.T) {
	s := newAuthServer(t)
	key := map[string]string{"X-API-Key": "publisher-key"}
	for _, c := range []struct {
		what, method, path, body string
		status                   int
	}{
		{"publish", http.MethodPost, "/v1/publish", `{"topic":"orders.1","data":1}`, http.StatusOK},
		{"stats", http.MethodGet, "/v1/stats", "", http.StatusOK},
		{"topics", http.MethodGet, "/v1/topics", "", http.StatusOK},
		{"action", http.MethodPost, "/v1/actions", `{"type":"echo","topic":"orders.1","payload":1}`, http.StatusForbidden},
		{"history", http.MethodGet, "/v1/topics/orders.1/history", "", http.StatusForbidden},
		{"state", http.MethodGet, "/v1/topics/orders.1/state", "", http.StatusForbidden},
	} {
		r := s.authedDo(t, c.method, c.path, c.body, key)
		if r.status != c.status {
			t.Errorf("%s with the API key: %d %s, want %d", c.what, r.status, r.body, c.status)
		}
	}
	if r := s.openSSE(t, "/v1/events?topic=orders.*", key); r.status != http.StatusForbidden {
		t.Errorf("a stream of a private pattern with the API key: %d %s, want 403", r.status, r.body)
	}
	if r := s.openSSE(t, "/v1/events?topic=public.news", key); r.status != http.StatusOK {
		t.Errorf("a stream of a public pattern with the API key: %d %s, want 200", r.status, r.body)
	}
}
