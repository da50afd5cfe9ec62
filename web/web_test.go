package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldpush/herald/web"
)

func TestFilesAndRevalidation(t *testing.T) {
	cases := []struct {
		h     http.Handler
		path  string
		ctype string
		csp   bool
	}{
		{web.JS(), "/herald.js", "text/javascript; charset=utf-8", false},
		{web.Dashboard(), "/", "text/html; charset=utf-8", true},
		{web.Dashboard(), "/dashboard.js", "text/javascript; charset=utf-8", false},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		c.h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, c.path, nil))
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != c.ctype || rec.Body.Len() < 100 {
			t.Errorf("GET %s: %d %q, %d bytes", c.path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Len())
		}
		if got := rec.Header().Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q", c.path, got)
		}
		if got := rec.Header().Get("Content-Security-Policy"); (got != "") != c.csp || (c.csp && strings.Contains(got, "unsafe-eval")) {
			t.Errorf("GET %s: Content-Security-Policy %q", c.path, got)
		}
		etag := rec.Header().Get("ETag")
		if etag == "" {
			t.Fatalf("GET %s: no ETag", c.path)
		}
		req := httptest.NewRequest(http.MethodGet, c.path, nil)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		c.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified || rec.Body.Len() != 0 {
			t.Errorf("GET %s with its ETag: %d, %d bytes; want 304", c.path, rec.Code, rec.Body.Len())
		}
	}
	rec := httptest.NewRecorder()
	web.Dashboard().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/herald.js", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("the dashboard handler served /herald.js: %d", rec.Code)
	}
}
