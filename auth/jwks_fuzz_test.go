package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"

	"github.com/heraldpush/herald/auth"
)

// FuzzCheckJWKSURL: an accepted JWKS URL is https://, or http:// to a
// loopback host, and never panics.
func FuzzCheckJWKSURL(f *testing.F) {
	for _, s := range []string{
		"https://id.example.com/.well-known/jwks.json", "http://127.0.0.1:8080/jwks", "http://[::1]/jwks",
		"http://localhost/jwks", "http://id.example.com/jwks", "http://127.0.0.1@evil.example.com/",
		"http://evil.example.com#@127.0.0.1/", "http://[::ffff:127.0.0.1]/", "HTTP://LOCALHOST/", "https://",
		"http://127.0.0.1%2f@x/", "//127.0.0.1/jwks",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if auth.CheckJWKSURL(raw) != nil {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("%q accepted, but it does not parse: %v", raw, err)
		}
		switch strings.ToLower(u.Scheme) {
		case "https":
		case "http":
			host := u.Hostname()
			if ip := net.ParseIP(host); !strings.EqualFold(host, "localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("%q accepted: plain HTTP to %q", raw, host)
			}
		default:
			t.Fatalf("%q accepted with scheme %q", raw, u.Scheme)
		}
		if u.Hostname() == "" {
			t.Fatalf("%q accepted without a host", raw)
		}
	})
}

// FuzzJWKSBody serves any bytes as the JWKS: nothing panics or hangs, every
// refusal is ErrUnauthorized or ErrUnavailable, and a token signed with a
// key the set cannot hold (made when the test starts) is never accepted.
func FuzzJWKSBody(f *testing.F) {
	published := newSigner(f, "k1", "ES256")
	secretKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	stranger := signer{kid: "k1", method: published.method, key: secretKey} // the kid of the published key
	strangerNoKid := signer{method: published.method, key: secretKey}
	set := func(keys ...jwkset.JWK) []byte {
		m := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
		for _, k := range keys {
			m.Keys = append(m.Keys, k.Marshal())
		}
		b, _ := json.Marshal(m)
		return b
	}
	f.Add(set(published.jwk(f, jwkset.UseSig)))
	f.Add(set(published.jwk(f, "")))
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"k1","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":""}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(``))

	var mu sync.Mutex
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		b := body
		mu.Unlock()
		_, _ = w.Write(b)
	}))
	defer srv.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	f.Fuzz(func(t *testing.T, b []byte) {
		mu.Lock()
		body = b
		mu.Unlock()
		j, err := auth.NewJWKS(auth.JWKSOptions{URL: srv.URL, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := j.Start(ctx); err != nil {
			t.Fatal(err)
		}
		a, err := auth.New(auth.Config{JWKS: j, Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []signer{stranger, strangerNoKid, published} {
			_, err := a.Token(s.token(t, grants()))
			if err == nil && s.key != published.key {
				t.Fatalf("a token of a key not in the set was accepted, with the JWKS %q", b)
			}
			if err != nil && !errors.Is(err, auth.ErrUnauthorized) && !errors.Is(err, auth.ErrUnavailable) {
				t.Fatalf("a refusal that is neither 401 nor 503: %v", err)
			}
		}
	})
}
