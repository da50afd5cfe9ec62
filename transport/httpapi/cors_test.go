package httpapi_test

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/action"
)

// corsRequest sends a request with an Origin and returns the answer's
// status and headers.
func corsRequest(t *testing.T, s *server, method, path, origin string, hdr map[string]string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

func TestCORS(t *testing.T) {
	s := newServer(t, serverOptions{cors: []string{"https://app.example.com", "https://*.example.org"}, actions: &action.Options{Echo: true}})
	preflight := map[string]string{
		"Access-Control-Request-Method": "POST",
		// As browsers send it: lower case, sorted, no spaces.
		"Access-Control-Request-Headers": "authorization,content-type,idempotency-key",
	}

	t.Run("preflight from an allowed origin", func(t *testing.T) {
		// Credentials only for the origin named exactly: the cookie does
		// not count from a page a wildcard admits.
		for origin, credentials := range map[string]string{"https://app.example.com": "true", "https://eu.example.org": ""} {
			code, h := corsRequest(t, s, http.MethodOptions, "/v1/actions", origin, preflight)
			if code != http.StatusNoContent {
				t.Errorf("%s: preflight status %d, want 204", origin, code)
			}
			if got := h.Get("Access-Control-Allow-Origin"); got != origin {
				t.Errorf("%s: Access-Control-Allow-Origin %q", origin, got)
			}
			if got := h.Get("Access-Control-Allow-Headers"); got != "authorization,content-type,idempotency-key" {
				t.Errorf("%s: Access-Control-Allow-Headers %q", origin, got)
			}
			if h.Get("Access-Control-Allow-Credentials") != credentials || h.Get("Access-Control-Max-Age") != "600" {
				t.Errorf("%s: credentials %q, max age %q", origin, h.Get("Access-Control-Allow-Credentials"), h.Get("Access-Control-Max-Age"))
			}
		}
	})

	t.Run("other origins get no grant", func(t *testing.T) {
		for _, origin := range []string{"https://evil.example.com", "http://app.example.com", "https://example.org"} {
			_, h := corsRequest(t, s, http.MethodOptions, "/v1/publish", origin, preflight)
			if got := h.Get("Access-Control-Allow-Origin"); got != "" {
				t.Errorf("%s: preflight granted %q", origin, got)
			}
			_, h = corsRequest(t, s, http.MethodGet, "/v1/topics", origin, nil)
			if got := h.Get("Access-Control-Allow-Origin"); got != "" {
				t.Errorf("%s: GET granted %q", origin, got)
			}
		}
	})

	t.Run("answers and errors carry the headers", func(t *testing.T) {
		for _, path := range []string{"/v1/topics", "/no/such/path", "/v1/actions/nope"} {
			_, h := corsRequest(t, s, http.MethodGet, path, "https://app.example.com", nil)
			if h.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
				t.Errorf("GET %s: Access-Control-Allow-Origin %q", path, h.Get("Access-Control-Allow-Origin"))
			}
			if h.Get("Access-Control-Expose-Headers") != "Location, Retry-After, Herald-Client" {
				t.Errorf("GET %s: Access-Control-Expose-Headers %q", path, h.Get("Access-Control-Expose-Headers"))
			}
		}
	})

	t.Run("an SSE stream still flushes through it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/v1/events?topic=cors.t", nil)
		req.Header.Set("Origin", "https://app.example.com")
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://app.example.com" {
			t.Errorf("stream Access-Control-Allow-Origin %q", resp.Header.Get("Access-Control-Allow-Origin"))
		}
		if r := s.do(t, http.MethodPost, "/v1/publish", "application/json", `{"topic":"cors.t","data":1}`); r.status != http.StatusOK {
			t.Fatalf("publish: %d %s", r.status, r.body)
		}
		awaitSSEEvent(t, bufio.NewReader(resp.Body), "cors.t")
	})
}

// TestCORSAnyOrigin checks that "*" grants every origin but never
// credentials, which would let any site act with a visitor's cookie.
func TestCORSAnyOrigin(t *testing.T) {
	s := newServer(t, serverOptions{cors: []string{"*"}})
	_, h := corsRequest(t, s, http.MethodGet, "/v1/topics", "https://anyone.example", nil)
	if got := h.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin %q, want *", got)
	}
	if got := h.Get("Access-Control-Allow-Credentials"); got != "" {
		t.Errorf("Access-Control-Allow-Credentials %q with *", got)
	}
}

// TestNoCORSByDefault checks that without CORSOrigins nothing is granted.
func TestNoCORSByDefault(t *testing.T) {
	s := newServer(t, serverOptions{})
	code, h := corsRequest(t, s, http.MethodOptions, "/v1/publish", "https://app.example.com", map[string]string{"Access-Control-Request-Method": "POST"})
	if h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("preflight granted %q without CORS configured", h.Get("Access-Control-Allow-Origin"))
	}
	if code != http.StatusMethodNotAllowed {
		t.Errorf("OPTIONS without CORS: %d, want 405", code)
	}
}

// TestCORSPreflightHeaderForms sends preflights whose
// Access-Control-Request-Headers is not in browsers' form (lower case,
// sorted, no spaces), as some clients and proxies send it: each is granted
// like the browser's form, and a header outside the allowed ones still is
// not.
func TestCORSPreflightHeaderForms(t *testing.T) {
	s := newServer(t, serverOptions{cors: []string{"https://app.example.com"}})
	const origin = "https://app.example.com"
	for _, tc := range []struct {
		values []string // one header line each
		want   string   // Access-Control-Allow-Headers; "" = not granted
	}{
		{[]string{"content-type,authorization"}, "authorization,content-type"},
		{[]string{"Content-Type, Authorization"}, "authorization,content-type"},
		{[]string{"  idempotency-key ,\tCONTENT-TYPE  "}, "content-type,idempotency-key"},
		{[]string{"content-type, Content-Type,content-type"}, "content-type"},
		{[]string{"last-event-id,", ",authorization"}, "authorization,last-event-id"},
		{[]string{"Authorization", "Content-Type"}, "authorization,content-type"},
		{[]string{"Content-Type, X-Not-Allowed"}, ""},
		{[]string{strings.Repeat("content-type,", 200)}, ""}, // beyond any list Herald allows
	} {
		req, err := http.NewRequest(http.MethodOptions, s.url+"/v1/publish", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		req.Header["Access-Control-Request-Headers"] = tc.values
		resp, err := s.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		granted := resp.Header.Get("Access-Control-Allow-Origin") == origin
		if got := resp.Header.Get("Access-Control-Allow-Headers"); granted != (tc.want != "") || got != tc.want {
			t.Errorf("%q: status %d, Access-Control-Allow-Origin %q, Access-Control-Allow-Headers %q; want %q",
				tc.values, resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"), got, tc.want)
		}
	}
}
