package httpapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/rs/cors"
)

// withCORS answers preflights and adds the CORS headers for the allowed
// origins (rs/cors), before routing, so that 404s, 405s and errors carry
// them too and a page can read the error. It passes the ResponseWriter on
// unwrapped, so streams can still flush and hijack.
//
// Credentials (the herald_token cookie) are allowed only for origins
// listed by name: the cookie is no credential from a page that only a
// wildcard ("*", "https://*.example.org") admits (auth.Config.CookieOrigins),
// so such pages are not invited to send it.
//
// A preflight's Access-Control-Request-Headers is normalized first
// (normalizeRequestHeaders).
func withCORS(origins []string, next http.Handler) http.Handler {
	h := corsByOrigin(origins, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			normalizeRequestHeaders(r.Header)
		}
		h.ServeHTTP(w, r)
	})
}

// corsByOrigin is rs/cors with credentials for the origins named exactly
// and without them for the wildcards.
func corsByOrigin(origins []string, next http.Handler) http.Handler {
	var named, wild []string
	for _, o := range origins {
		if strings.Contains(o, "*") {
			wild = append(wild, o)
		} else {
			named = append(named, o)
		}
	}
	handler := func(origins []string, credentials bool) http.Handler {
		return cors.New(cors.Options{
			AllowedOrigins: origins,
			AllowedMethods: []string{http.MethodGet, http.MethodHead, http.MethodPost},
			AllowedHeaders: []string{"Content-Type", "Authorization", "Idempotency-Key", "Last-Event-ID"},
			// Location and Retry-After are what a page needs from a 202 and a 503.
			ExposedHeaders:   []string{"Location", "Retry-After", "Herald-Client"},
			AllowCredentials: credentials,
			MaxAge:           600,
		}).Handler(next)
	}
	switch {
	case len(wild) == 0:
		return handler(named, true)
	case len(named) == 0:
		return handler(wild, false)
	}
	withCredentials, without := handler(named, true), handler(wild, false)
	isNamed := make(map[string]bool, len(named))
	for _, o := range named {
		isNamed[strings.ToLower(o)] = true
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isNamed[strings.ToLower(r.Header.Get("Origin"))] {
			withCredentials.ServeHTTP(w, r)
			return
		}
		without.ServeHTTP(w, r)
	})
}

// maxRequestHeadersLen bounds the Access-Control-Request-Headers that
// normalizeRequestHeaders rewrites. Herald allows four request headers; a
// longer list cannot be allowed anyway and is left for rs/cors to refuse.
const maxRequestHeadersLen = 1024

// normalizeRequestHeaders rewrites a preflight's Access-Control-Request-Headers
// into the form browsers send and rs/cors expects: names in lower case,
// sorted, each once, joined by commas without spaces. rs/cors refuses
// anything else outright, so a client or proxy that sends
// "Content-Type, Authorization" would get no CORS headers, and the page an
// opaque failure.
func normalizeRequestHeaders(h http.Header) {
	values, ok := h["Access-Control-Request-Headers"]
	if !ok {
		return
	}
	n := 0
	for _, v := range values {
		n += len(v)
	}
	if n > maxRequestHeadersLen {
		return
	}
	var names []string
	for _, v := range values {
		for name := range strings.SplitSeq(v, ",") {
			if name = strings.ToLower(strings.TrimSpace(name)); name != "" {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	h["Access-Control-Request-Headers"] = []string{strings.Join(slices.Compact(names), ",")}
}
