package httpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/action"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
)

// newOriginServer is an --auth jwt server whose pages come from origins:
// they get CORS, may open WebSockets, and those named exactly may use the
// herald_token cookie, as herald serve wires --cors-origins.
func newOriginServer(t *testing.T, origins ...string) *server {
	t.Helper()
	a, err := auth.New(auth.Config{
		Secret: jwtSecret, PublicSubscribe: []hub.Pattern{hub.MustPattern("public.>")}, CookieOrigins: origins,
	})
	if err != nil {
		t.Fatal(err)
	}
	return newServer(t, serverOptions{auth: a, actions: &action.Options{Echo: true}, cors: origins, wsOrigins: origins})
}

// TestCookieOnlyFromOwnPages sends the same credentials from every kind of
// page over every transport. A token in the header or the query is the
// page's own and counts from anywhere a page may connect from; the
// herald_token cookie, which the browser attaches whatever the page, counts
// only from the server's own host or an origin named exactly. Elsewhere the
// request is anonymous: 401, or what the public patterns allow.
func TestCookieOnlyFromOwnPages(t *testing.T) {
	listed := newOriginServer(t, "https://app.example.com", "https://*.example.org")
	anyOrigin := newOriginServer(t, "*")
	tok := token(t, time.Now().Add(time.Hour), "alice",
		map[string][]string{"subscribe": {"orders.>"}, "publish": {"orders.*"}, "actions": {"echo"}})

	host := func(s *server) string { return strings.TrimPrefix(s.url, "http://") }
	origins := []struct {
		name     string
		s        *server
		origin   string
		own      bool // the cookie counts
		wsOpens  bool // the origin may open a WebSocket at all
		readable bool // CORS lets the page read the answers
	}{
		{"no Origin", listed, "", true, true, false},
		{"same host", listed, "http://" + host(listed), true, true, false},
		{"same host, other port", listed, "http://127.0.0.1:1", false, false, false},
		{"listed by name", listed, "https://app.example.com", true, true, true},
		{"matched by a wildcard only", listed, "https://eu.example.org", false, true, true},
		{"matched by *", anyOrigin, "https://evil.example", false, true, true},
		{"foreign", listed, "https://evil.example", false, false, false},
	}
	sources := []string{"cookie", "bearer", "query"}

	for _, o := range origins {
		for _, src := range sources {
			t.Run(o.name+"/"+src, func(t *testing.T) {
				s := o.s
				ok := src != "cookie" || o.own
				hdr := map[string]string{}
				if o.origin != "" {
					hdr["Origin"] = o.origin
				}
				query := ""
				switch src {
				case "cookie":
					hdr["Cookie"] = auth.CookieName + "=" + tok
				case "bearer":
					hdr["Authorization"] = "Bearer " + tok
				case "query":
					query = auth.QueryParam + "=" + url.QueryEscape(tok)
				}
				check := func(what string, r response, okStatus int) {
					t.Helper()
					if ok {
						if r.status != okStatus {
							t.Errorf("%s: %d %s, want %d", what, r.status, r.body, okStatus)
						}
					} else {
						assertError(t, r, http.StatusUnauthorized, "unauthorized")
						if !strings.Contains(string(r.body), auth.CookieName) {
							t.Errorf("%s: the 401 does not say the cookie was not taken: %s", what, r.body)
						}
					}
					if got := r.header.Get("Access-Control-Allow-Origin"); (got != "") != o.readable {
						t.Errorf("%s: Access-Control-Allow-Origin %q", what, got)
					}
					// A page is invited to send its cookie only where it counts.
					if got := r.header.Get("Access-Control-Allow-Credentials"); (got == "true") != (o.readable && o.own) {
						t.Errorf("%s: Access-Control-Allow-Credentials %q", what, got)
					}
				}
				withQuery := func(path string) string {
					if query == "" {
						return path
					}
					if strings.Contains(path, "?") {
						return path + "&" + query
					}
					return path + "?" + query
				}

				check("publish", s.authedDo(t, http.MethodPost, withQuery("/v1/publish"), `{"topic":"orders.1","data":1}`, hdr), http.StatusOK)
				check("action", s.authedDo(t, http.MethodPost, withQuery("/v1/actions"), `{"type":"echo","topic":"orders.1","payload":1}`, hdr), http.StatusAccepted)
				check("sse", s.openSSE(t, withQuery("/v1/events?topic=orders.*"), hdr), http.StatusOK)
				// Without the cookie the page is anonymous, which the public
				// patterns admit.
				if r := s.openSSE(t, withQuery("/v1/events?topic=public.news"), hdr); r.status != http.StatusOK {
					t.Errorf("sse of a public pattern: %d %s", r.status, r.body)
				}

				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				h := http.Header{}
				for k, v := range hdr {
					h.Set(k, v)
				}
				conn, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+withQuery("/v1/ws"),
					&websocket.DialOptions{Subprotocols: []string{"herald.v1"}, HTTPClient: s.client, HTTPHeader: h})
				if !o.wsOpens {
					if err == nil {
						conn.CloseNow()
						t.Fatal("ws: the handshake from this origin was accepted")
					}
					if resp == nil || resp.StatusCode != http.StatusForbidden {
						t.Errorf("ws: %v, want a 403 handshake", err)
					}
					return
				}
				if err != nil {
					t.Fatalf("ws dial: %v", err)
				}
				defer conn.CloseNow()
				w := &wsConn{c: conn, ctx: ctx}
				want := ""
				if !ok {
					want = "unauthorized"
				}
				for op, code := range w.grantedOps(t) {
					if code != want {
						t.Errorf("ws %s: error code %q, want %q", op, code, want)
					}
				}
			})
		}
	}
}

// openSSE opens an event stream and closes it again: the status and
// headers say whether it was served, and the body of a refusal why.
func (s *server) openSSE(t *testing.T, path string, hdr map[string]string) response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body []byte
	if resp.StatusCode != http.StatusOK {
		body, _ = io.ReadAll(resp.Body)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}
