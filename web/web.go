// Package web serves Herald's browser side: the herald.js client module and
// the dashboard, both embedded in the binary so that they work offline and
// need no build step.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"strings"
	"time"
)

//go:embed herald.js index.html dashboard.js
var files embed.FS

// asset is one embedded file with what its answers need.
type asset struct {
	body  []byte
	ctype string
	etag  string
}

// Handler serves embedded files by path. It is safe for concurrent use.
type Handler struct{ files map[string]asset }

// JS returns the handler of /herald.js, the client module.
func JS() *Handler {
	return &Handler{files: map[string]asset{"/herald.js": mustAsset("herald.js", "text/javascript; charset=utf-8")}}
}

// Dashboard returns the handler of the dashboard: / and /dashboard.js (which
// imports /herald.js, served by JS).
func Dashboard() *Handler {
	return &Handler{files: map[string]asset{
		"/":             mustAsset("index.html", "text/html; charset=utf-8"),
		"/dashboard.js": mustAsset("dashboard.js", "text/javascript; charset=utf-8"),
	}}
}

// DashboardPaths are the paths Dashboard serves.
var DashboardPaths = []string{"/", "/dashboard.js"}

func mustAsset(name, ctype string) asset {
	b, err := fs.ReadFile(files, name)
	if err != nil {
		panic("web: embedded " + name + " is missing: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return asset{body: b, ctype: ctype, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
}

// csp keeps the dashboard to its own origin: its script is a file, not
// inline; only its style sheet is inline.
const csp = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

// ServeHTTP answers GET and HEAD for its paths, 404 for any other. The
// files change only with the binary, so a browser revalidates (no-cache)
// and gets 304 for an unchanged ETag.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a, ok := h.files[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", a.ctype)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("ETag", a.etag)
	if strings.HasPrefix(a.ctype, "text/html") {
		hd.Set("Content-Security-Policy", csp)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
