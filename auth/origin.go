package auth

import (
	"net/http"
	"net/url"
	"strings"
)

// cookieOrigins decides which requests the herald_token cookie may
// authenticate. A browser attaches the cookie to every request to Herald,
// whatever page makes it, so a page on any site could otherwise subscribe,
// publish and run actions as its visitor (cross-site request forgery, and
// cross-site WebSocket hijacking: browsers do not apply CORS to
// WebSockets). The cookie therefore counts only on requests from Herald's
// own host or from an origin the operator named exactly. A wildcard never
// extends it: "https://*.example.org" or "*" would hand the visitor's
// session to every page that matches, including one on a forgotten or
// user-content subdomain.
//
// It is immutable after newCookieOrigins and safe for concurrent use.
type cookieOrigins struct {
	origins map[string]bool // "scheme://host[:port]", lower case
	hosts   map[string]bool // "host[:port]", lower case, any scheme
}

// newCookieOrigins keeps the patterns that name one origin: a full origin
// (https://app.example.com) or a host (app.example.com, any scheme, as
// coder/websocket reads an Origin pattern without "://"). Patterns with a
// wildcard are left out.
func newCookieOrigins(patterns []string) cookieOrigins {
	o := cookieOrigins{origins: map[string]bool{}, hosts: map[string]bool{}}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(p), "/"))
		switch {
		case p == "" || strings.ContainsAny(p, `*?[\`):
		case strings.Contains(p, "://"):
			o.origins[p] = true
		default:
			o.hosts[p] = true
		}
	}
	return o
}

// trusts reports whether r comes from a page whose herald_token cookie is a
// credential. Browsers say where a request comes from in Sec-Fetch-Site
// (recent ones) and Origin (on every cross-origin request and on every
// WebSocket handshake), and a page cannot forge either. A request with
// neither comes from a program, or is a same-origin GET of an older
// browser: it is trusted, as http.CrossOriginProtection does.
func (o cookieOrigins) trusts(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	switch site {
	case "same-origin", "none": // "none": the user typed the address
		return true
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return site == ""
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" { // "null" from sandboxed frames and files
		return false
	}
	// Without Sec-Fetch-Site, the host decides; with it ("same-site",
	// "cross-site"), the browser has said the page is another origin.
	if site == "" && strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return o.hosts[strings.ToLower(u.Host)] || o.origins[strings.ToLower(u.Scheme+"://"+u.Host)]
}
