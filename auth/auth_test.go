package auth_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
)

var (
	secret = []byte("0123456789abcdef0123456789abcdef")
	now    = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
)

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

func grants(sub ...string) jwt.MapClaims {
	return jwt.MapClaims{
		"sub": "alice", "exp": now.Add(time.Hour).Unix(),
		"herald": map[string]any{"subscribe": sub, "publish": []string{"chat.alice.>"}, "actions": []string{"todo.*"}},
	}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestTokens(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	rsaPEMBytes := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPEM})

	hs, err := auth.New(auth.Config{Secret: secret, Audience: "herald", Issuer: "https://id.example.com", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rs, err := auth.New(auth.Config{PublicKey: &rsaKey.PublicKey, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	es, err := auth.New(auth.Config{PublicKey: &ecKey.PublicKey, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	strict, err := auth.New(auth.Config{Secret: secret, Leeway: -1, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	good := with(with(grants("news.>"), "aud", "herald"), "iss", "https://id.example.com")
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, good).SignedString(jwt.UnsafeAllowNoneSignatureType)

	cases := []struct {
		name  string
		a     *auth.Authenticator
		token string
		want  string // "" = accepted, else a word of the error
	}{
		{"HS256", hs, sign(t, jwt.SigningMethodHS256, secret, good), ""},
		{"RS256", rs, sign(t, jwt.SigningMethodRS256, rsaKey, grants()), ""},
		{"ES256", es, sign(t, jwt.SigningMethodES256, ecKey, grants()), ""},
		{"alg none", hs, none, "signature or algorithm"},
		{"HS384 is not accepted", hs, sign(t, jwt.SigningMethodHS384, secret, good), "signature or algorithm"},
		{"algorithm confusion: HS256 keyed with the RSA public key", rs, sign(t, jwt.SigningMethodHS256, rsaPEMBytes, grants()), "signature or algorithm"},
		{"RS256 token, HS256 server", hs, sign(t, jwt.SigningMethodRS256, rsaKey, good), "signature or algorithm"},
		{"wrong secret", hs, sign(t, jwt.SigningMethodHS256, []byte("another secret, 32 bytes long!!!"), good), "signature or algorithm"},
		{"other RSA key", rs, func() string {
			k, _ := rsa.GenerateKey(rand.Reader, 2048)
			return sign(t, jwt.SigningMethodRS256, k, grants())
		}(), "signature or algorithm"},
		{"expired", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", now.Add(-time.Minute).Unix())), "expired"},
		{"expired within leeway", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", now.Add(-10*time.Second).Unix())), ""},
		{"expired a second ago, no leeway", strict, sign(t, jwt.SigningMethodHS256, secret, with(grants(), "exp", now.Add(-time.Second).Unix())), "expired"},
		{"expires in a second, no leeway", strict, sign(t, jwt.SigningMethodHS256, secret, with(grants(), "exp", now.Add(time.Second).Unix())), ""},
		{"no exp", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", nil)), "exp claim is required"},
		{"not yet valid", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "nbf", now.Add(time.Hour).Unix())), "not valid yet"},
		{"wrong audience", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "aud", "other")), "audience"},
		{"no audience", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "aud", nil)), "aud claim is required"},
		{"wrong issuer", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "iss", "https://evil.example.com")), "issuer"},
		{"no sub", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "sub", nil)), "sub"},
		{"bad pattern in the grant", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "herald", map[string]any{"subscribe": []string{"a..b"}})), "herald claim"},
		{"grant of the wrong type", hs, sign(t, jwt.SigningMethodHS256, secret, with(good, "herald", "everything")), "malformed"},
		{"malformed", hs, "not.a.token", "malformed"},
		{"empty", hs, "", "malformed"},
		{"truncated signature", hs, strings.TrimRight(sign(t, jwt.SigningMethodHS256, secret, good), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")[:40], "malformed"},
	}
	for _, c := range cases {
		p, err := c.a.Token(c.token)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if p.Subject != "alice" || p.Anonymous() {
				t.Errorf("%s: principal %+v", c.name, p)
			}
			continue
		}
		if err == nil || !errors.Is(err, auth.ErrUnauthorized) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want ErrUnauthorized mentioning %q", c.name, err, c.want)
		}
	}
}

func TestGrants(t *testing.T) {
	a, err := auth.New(auth.Config{Secret: secret, PublicSubscribe: []hub.Pattern{hub.MustPattern("public.>")}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Token(sign(t, jwt.SigningMethodHS256, secret, grants("news.*", "chat.alice.>")))
	if err != nil {
		t.Fatal(err)
	}
	for pat, want := range map[string]bool{
		"news.sport": true, "news.*": true, "news.>": false, "news": false, "chat.alice.x.y": true,
		"chat.bob.x": false, "chat.*.x": false, ">": false, "public.a.b": true, "public.>": true,
	} {
		if got := p.MaySubscribe(hub.MustPattern(pat)); got != want {
			t.Errorf("MaySubscribe(%q) = %v, want %v", pat, got, want)
		}
	}
	for topic, want := range map[string]bool{"chat.alice.room1": true, "chat.alice": false, "chat.bob.room1": false, "news.sport": false} {
		if got := p.MayPublish(topic); got != want {
			t.Errorf("MayPublish(%q) = %v, want %v", topic, got, want)
		}
	}
	for typ, want := range map[string]bool{"todo.delete": true, "todo": false, "billing.pay": false} {
		if got := p.MayAct(typ); got != want {
			t.Errorf("MayAct(%q) = %v, want %v", typ, got, want)
		}
	}
	if !auth.Everyone.MaySubscribe(hub.MustPattern(">")) || !auth.Everyone.MayPublish("a") || !auth.Everyone.MayAct("x") {
		t.Error("Everyone is refused something")
	}
}

func TestRequest(t *testing.T) {
	a, err := auth.New(auth.Config{Secret: secret, APIKey: "k3y-for-publishers", PublicSubscribe: []hub.Pattern{hub.MustPattern("public.>")}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, grants("news.>"))
	req := func(mod func(r *http.Request)) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/events?topic=news.a", nil)
		mod(r)
		return r
	}
	cases := []struct {
		name    string
		r       *http.Request
		subject string // "" = anonymous; "!" = an error
	}{
		{"bearer", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }), "alice"},
		{"bearer, any case", req(func(r *http.Request) { r.Header.Set("Authorization", "bearer "+tok) }), "alice"},
		{"query", req(func(r *http.Request) { r.URL.RawQuery += "&access_token=" + tok }), "alice"},
		{"cookie", req(func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "herald_token", Value: tok}) }), "alice"},
		{"api key", req(func(r *http.Request) { r.Header.Set("X-API-Key", "k3y-for-publishers") }), "api-key"},
		{"nothing", req(func(r *http.Request) {}), ""},
		{"basic auth", req(func(r *http.Request) { r.SetBasicAuth("u", "p") }), "!"},
		{"empty bearer", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer ") }), "!"},
		{"empty query token", req(func(r *http.Request) { r.URL.RawQuery += "&access_token=" }), "!"},
		{"bad token", req(func(r *http.Request) { r.Header.Set("Authorization", "Bearer x.y.z") }), "!"},
		{"wrong api key", req(func(r *http.Request) { r.Header.Set("X-API-Key", "guess") }), "!"},
		{"bad header wins over a good cookie", req(func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer x")
			r.AddCookie(&http.Cookie{Name: "herald_token", Value: tok})
		}), "!"},
	}
	for _, c := range cases {
		p, err := a.Request(c.r)
		switch {
		case c.subject == "!":
			if !errors.Is(err, auth.ErrUnauthorized) {
				t.Errorf("%s: %v, %+v; want ErrUnauthorized", c.name, err, p)
			}
		case err != nil:
			t.Errorf("%s: %v", c.name, err)
		case p.Subject != c.subject || p.Anonymous() != (c.subject == ""):
			t.Errorf("%s: subject %q anonymous %v", c.name, p.Subject, p.Anonymous())
		}
	}
	anon, _ := a.Request(req(func(*http.Request) {}))
	if !anon.MaySubscribe(hub.MustPattern("public.x")) || anon.MaySubscribe(hub.MustPattern("news.a")) || anon.MayPublish("public.x") {
		t.Error("an anonymous request may do more or less than subscribe to public patterns")
	}
	key, _ := a.Request(req(func(r *http.Request) { r.Header.Set("X-API-Key", "k3y-for-publishers") }))
	if !key.MayPublish("any.topic") || key.MaySubscribe(hub.MustPattern("any.topic")) || key.MayAct("x") {
		t.Error("the API key may do more or less than publish")
	}
}

func TestNewRefusesWeakConfig(t *testing.T) {
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, cfg := range map[string]auth.Config{
		"nothing":      {},
		"short secret": {Secret: []byte("short")},
		"small RSA":    {PublicKey: &small.PublicKey},
		"P-384":        {PublicKey: &p384.PublicKey},
	} {
		if _, err := auth.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestCookieOrigins checks which pages the herald_token cookie speaks for:
// the server's own host and origins named exactly, as browsers report the
// page in Origin and Sec-Fetch-Site. From any other page the request is
// anonymous, whatever the cookie holds, while a token in the header or the
// query still counts.
func TestCookieOrigins(t *testing.T) {
	a, err := auth.New(auth.Config{Secret: secret, Now: func() time.Time { return now },
		CookieOrigins: []string{"https://app.example.com", "admin.example.com", "https://*.example.org", "*", "*.example.net"}})
	if err != nil {
		t.Fatal(err)
	}
	tok := sign(t, jwt.SigningMethodHS256, secret, grants("news.>"))
	cases := []struct {
		origin, site string // headers; "" = absent
		trusted      bool
	}{
		{"", "", true}, // a program, or an older browser's same-origin GET
		{"http://push.example.com", "", true},
		{"HTTP://PUSH.EXAMPLE.COM", "", true},
		{"http://push.example.com:8443", "", false}, // same host, another port: another origin
		{"https://app.example.com", "", true},
		{"https://app.example.com", "cross-site", true},
		{"http://app.example.com", "", false}, // named with https only
		{"https://admin.example.com", "same-site", true},
		{"http://admin.example.com", "", true}, // a host pattern: any scheme
		{"https://eu.example.org", "", false},  // only a wildcard matches
		{"https://x.example.net", "", false},
		{"https://evil.example", "", false}, // only "*" matches
		{"null", "", false},
		{"not a url\x7f", "", false},
		{"", "same-origin", true},
		{"", "none", true},
		{"", "cross-site", false},
		{"http://push.example.com", "cross-site", false}, // the browser knows better than the Host
		{"https://evil.example", "same-origin", true},    // Sec-Fetch-Site wins, as in http.CrossOriginProtection
	}
	for _, c := range cases {
		r := httptest.NewRequest(http.MethodGet, "http://push.example.com/v1/ws", nil)
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if c.site != "" {
			r.Header.Set("Sec-Fetch-Site", c.site)
		}
		r.AddCookie(&http.Cookie{Name: "herald_token", Value: tok})
		p, err := a.Request(r)
		if err != nil {
			t.Errorf("Origin %q Sec-Fetch-Site %q: %v", c.origin, c.site, err)
			continue
		}
		if got := p.Subject == "alice"; got != c.trusted {
			t.Errorf("Origin %q Sec-Fetch-Site %q: the cookie counts: %v, want %v", c.origin, c.site, got, c.trusted)
		}
		if p.CookieIgnored() == c.trusted || p.Anonymous() == c.trusted {
			t.Errorf("Origin %q Sec-Fetch-Site %q: anonymous %v, cookie ignored %v", c.origin, c.site, p.Anonymous(), p.CookieIgnored())
		}

		// A token the page holds itself is no ambient credential.
		r.Header.Set("Authorization", "Bearer "+tok)
		if p, err := a.Request(r); err != nil || p.Subject != "alice" {
			t.Errorf("Origin %q: a bearer token beside the cookie: %v %+v", c.origin, err, p)
		}
	}
	// A bad cookie from another page is no credential either, so not an error.
	r := httptest.NewRequest(http.MethodGet, "http://push.example.com/v1/ws", nil)
	r.Header.Set("Origin", "https://evil.example")
	r.AddCookie(&http.Cookie{Name: "herald_token", Value: "garbage"})
	if p, err := a.Request(r); err != nil || !p.Anonymous() {
		t.Errorf("a bad cookie from another page: %v %+v, want anonymous", err, p)
	}
}

// TestMayControl: the control API is for the API key and for tokens with
// "herald":{"admin":true}; nobody else, authentication off included.
func TestMayControl(t *testing.T) {
	a, err := auth.New(auth.Config{Secret: secret, APIKey: "k3y-for-publishers", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	admin := grants("news.*")
	admin["herald"].(map[string]any)["admin"] = true
	notAdmin := grants("news.*")
	notAdmin["herald"].(map[string]any)["admin"] = false
	for name, c := range map[string]struct {
		claims jwt.MapClaims
		want   bool
	}{"admin": {admin, true}, "admin false": {notAdmin, false}, "no admin claim": {grants(">"), false}} {
		p, err := a.Token(sign(t, jwt.SigningMethodHS256, secret, c.claims))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.MayControl() != c.want {
			t.Errorf("%s: MayControl = %v, want %v", name, p.MayControl(), c.want)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/disconnect", nil)
	r.Header.Set("X-API-Key", "k3y-for-publishers")
	if p, err := a.Request(r); err != nil || !p.MayControl() {
		t.Errorf("the API key: %v, MayControl %v; want allowed", err, p != nil && p.MayControl())
	}
	anon, _ := a.Request(httptest.NewRequest(http.MethodPost, "/v1/disconnect", nil))
	for name, p := range map[string]*auth.Principal{"anonymous": anon, "Everyone (auth off)": auth.Everyone, "Nobody": auth.Nobody} {
		if p.MayControl() {
			t.Errorf("%s may use the control API", name)
		}
	}
}
