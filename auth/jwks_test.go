package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// idp is a local identity provider's JWKS endpoint: the keys it publishes
// can be rotated, and it can be made to fail or hang. It counts requests.
type idp struct {
	srv     *httptest.Server
	fetches atomic.Int64
	hanging atomic.Int64 // requests held by Hang now

	mu      sync.Mutex
	body    []byte
	status  int  // 0: 200 with body
	hang    bool // hold each request until the client gives up
	release chan struct{}
}

func newIDP(t testing.TB, keys ...jwkset.JWK) *idp {
	t.Helper()
	p := &idp{release: make(chan struct{})}
	p.publish(t, keys...)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		body, status, hang := p.body, p.status, p.hang
		p.mu.Unlock()
		if hang {
			p.hanging.Add(1)
			defer p.hanging.Add(-1)
			select {
			case <-r.Context().Done():
			case <-p.release:
			}
			return
		}
		if status != 0 {
			http.Error(w, "down", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(func() {
		close(p.release)
		p.srv.Close()
	})
	return p
}

func (p *idp) url() string { return p.srv.URL + "/.well-known/jwks.json" }

// publish replaces the published keys: a rotation.
func (p *idp) publish(t testing.TB, keys ...jwkset.JWK) {
	t.Helper()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.body = b
	p.mu.Unlock()
}

func (p *idp) setStatus(status int) {
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
}

func (p *idp) setHang(h bool) {
	p.mu.Lock()
	p.hang = h
	p.mu.Unlock()
}

// signer is a private key of the identity provider and its kid.
type signer struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func newSigner(t testing.TB, kid, alg string) signer {
	t.Helper()
	var k crypto.Signer
	var m jwt.SigningMethod
	var err error
	switch alg {
	case "RS256":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
		m = jwt.SigningMethodRS256
	case "ES256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		m = jwt.SigningMethodES256
	case "EdDSA":
		_, k, err = ed25519.GenerateKey(rand.Reader)
		m = jwt.SigningMethodEdDSA
	}
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, method: m, key: k}
}

// jwk is the public key as the identity provider publishes it.
func (s signer) jwk(t testing.TB, use jwkset.USE) jwkset.JWK {
	t.Helper()
	j, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: s.kid, USE: use},
	})
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func (s signer) token(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(s.method, c)
	if s.kid != "" {
		tok.Header["kid"] = s.kid
	}
	out, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// startJWKS starts a JWKS on url, ended with the test.
func startJWKS(t testing.TB, opts auth.JWKSOptions) *auth.JWKS {
	t.Helper()
	j, err := auth.NewJWKS(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := j.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return j
}

func jwksAuth(t testing.TB, j *auth.JWKS, extra func(*auth.Config)) *auth.Authenticator {
	t.Helper()
	cfg := auth.Config{JWKS: j, Now: func() time.Time { return now }}
	if extra != nil {
		extra(&cfg)
	}
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantAccepted(t testing.TB, a *auth.Authenticator, what, token string) {
	t.Helper()
	p, err := a.Token(token)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if p.Subject != "alice" {
		t.Fatalf("%s: subject %q", what, p.Subject)
	}
}

func wantRefused(t testing.TB, a *auth.Authenticator, what, token string, sentinel error, words string) {
	t.Helper()
	_, err := a.Token(token)
	if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), words) {
		t.Fatalf("%s: got %v, want %v with %q", what, err, sentinel, words)
	}
}

func TestJWKSAlgorithms(t *testing.T) {
	rs, es, ed := newSigner(t, "rsa-1", "RS256"), newSigner(t, "ec-1", "ES256"), newSigner(t, "ed-1", "EdDSA")
	enc := newSigner(t, "enc-1", "RS256")
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakSigner := signer{kid: "weak", method: jwt.SigningMethodRS256, key: weak}
	// A key the provider marks for another algorithm verifies nothing else.
	rs384 := newSigner(t, "rs384", "RS256")
	rs384JWK, err := jwkset.NewJWKFromKey(rs384.key.Public(), jwkset.JWKOptions{
		Metadata: jwkset.JWKMetadataOptions{KID: rs384.kid, ALG: jwkset.AlgRS384},
	})
	if err != nil {
		t.Fatal(err)
	}
	p := newIDP(t, rs.jwk(t, jwkset.UseSig), es.jwk(t, ""), ed.jwk(t, jwkset.UseSig), enc.jwk(t, jwkset.UseEnc), weakSigner.jwk(t, jwkset.UseSig), rs384JWK)
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url()}), nil)

	wantAccepted(t, a, "RS256", rs.token(t, grants("news.>")))
	wantAccepted(t, a, "ES256 (a key without use)", es.token(t, grants()))
	wantAccepted(t, a, "EdDSA", ed.token(t, grants()))
	noKid := rs
	noKid.kid = ""
	wantAccepted(t, a, "RS256 without kid: the set's keys of its type", noKid.token(t, grants()))

	rsaPub, _ := x509.MarshalPKIXPublicKey(rs.key.Public())
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaPub})
	confused := jwt.NewWithClaims(jwt.SigningMethodHS256, grants())
	confused.Header["kid"] = rs.kid
	confusedTok, err := confused.SignedString(rsaPEM)
	if err != nil {
		t.Fatal(err)
	}
	wantRefused(t, a, "HS256 keyed with the RSA public key", confusedTok, auth.ErrUnauthorized, "signature or algorithm")
	confusedDER, _ := confused.SignedString(rsaPub)
	wantRefused(t, a, "HS256 keyed with the RSA public key (DER)", confusedDER, auth.ErrUnauthorized, "signature or algorithm")

	// An ES256 token naming the RSA key's kid: the key decides the
	// algorithm, and it is RS256.
	liar := es
	liar.kid = rs.kid
	wantRefused(t, a, "ES256 token with an RSA kid", liar.token(t, grants()), auth.ErrUnauthorized, "")
	wantRefused(t, a, "a key for encryption", enc.token(t, grants()), auth.ErrUnauthorized, "")
	wantRefused(t, a, "a 1024-bit RSA key", weakSigner.token(t, grants()), auth.ErrUnauthorized, "")
	wantRefused(t, a, "an RS256 token of a key for RS384", rs384.token(t, grants()), auth.ErrUnauthorized, "")
	other := newSigner(t, "rsa-1", "RS256") // the kid of a published key, another key
	wantRefused(t, a, "another key with a known kid", other.token(t, grants()), auth.ErrUnauthorized, "signature or algorithm")
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, grants()).SignedString(jwt.UnsafeAllowNoneSignatureType)
	wantRefused(t, a, "alg none", none, auth.ErrUnauthorized, "signature or algorithm")
	wantRefused(t, a, "expired", rs.token(t, with(grants(), "exp", now.Add(-time.Hour).Unix())), auth.ErrUnauthorized, "expired")
}

func TestJWKSRotation(t *testing.T) {
	old, next := newSigner(t, "2026-11", "RS256"), newSigner(t, "2026-12", "ES256")
	p := newIDP(t, old.jwk(t, jwkset.UseSig))
	j := startJWKS(t, auth.JWKSOptions{URL: p.url()})
	a := jwksAuth(t, j, nil)
	wantAccepted(t, a, "the first key", old.token(t, grants()))
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}

	p.publish(t, next.jwk(t, jwkset.UseSig)) // the old key is revoked
	wantAccepted(t, a, "a token of the new key, before any refresh", next.token(t, grants()))
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a new kid, want 2", n)
	}
	// The refresh replaced the set: the revoked key is gone, and asking
	// for it again fetches nothing (the rate limit).
	wantRefused(t, a, "the revoked key", old.token(t, grants()), auth.ErrUnauthorized, "kid")
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches after a revoked kid within the rate limit, want 2", n)
	}
}

func TestJWKSUnknownKIDFloodIsRateLimited(t *testing.T) {
	known := newSigner(t, "known", "ES256")
	p := newIDP(t, known.jwk(t, jwkset.UseSig))
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), UnknownKIDInterval: time.Hour}), nil)

	forger := newSigner(t, "", "ES256")
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	for i := range 200 {
		forger := forger
		forger.kid = fmt.Sprintf("made-up-%d", i)
		tok := forger.token(t, grants())
		wg.Go(func() {
			if _, err := a.Token(tok); errors.Is(err, auth.ErrUnauthorized) {
				refused.Add(1)
			} else {
				accepted.Add(1)
			}
		})
	}
	wg.Wait()
	if refused.Load() != 200 {
		t.Fatalf("%d of 200 made-up kids refused with 401 (%d otherwise)", refused.Load(), accepted.Load())
	}
	// One at start and one for the first unknown kid; the rest wait an
	// hour.
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("200 unknown kids made %d fetches, want 2", n)
	}
	wantAccepted(t, a, "the known key during the flood's limit", known.token(t, grants()))
}

func TestJWKSDown(t *testing.T) {
	first, second := newSigner(t, "first", "RS256"), newSigner(t, "second", "EdDSA")
	p := newIDP(t, first.jwk(t, jwkset.UseSig))
	var logs lockedBuffer
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), UnknownKIDInterval: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))}), nil)
	wantAccepted(t, a, "a key loaded at start", first.token(t, grants()))

	p.setStatus(http.StatusBadGateway)
	p.publish(t, first.jwk(t, jwkset.UseSig), second.jwk(t, jwkset.UseSig))
	before := p.fetches.Load()
	_, err := a.Token(second.token(t, grants()))
	var ue *auth.UnavailableError
	if !errors.As(err, &ue) || !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("a new kid while the JWKS is down: %v, want ErrUnavailable", err)
	}
	if p.fetches.Load() != before+1 {
		t.Fatalf("the new kid made %d fetches, want 1", p.fetches.Load()-before)
	}
	if e := apierror.From(err); e.Status != http.StatusServiceUnavailable || e.Code != apierror.Unavailable {
		t.Fatalf("apierror.From: %d %s, want 503 unavailable", e.Status, e.Code)
	}
	if v, ok := apierror.RetryAfter(err); !ok || v != "1" {
		t.Fatalf("Retry-After %q %v, want 1 (the rate limit's next fetch within a second)", v, ok)
	}
	wantAccepted(t, a, "a known key while the JWKS is down", first.token(t, grants()))

	// Back up: within the rate limit, the next token of the new kid
	// fetches and verifies.
	p.setStatus(0)
	wait.For(t, 5*time.Second, "the new key after the JWKS came back", func() bool {
		_, err := a.Token(second.token(t, grants()))
		return err == nil
	})
	wantAccepted(t, a, "the old key after the JWKS came back", first.token(t, grants()))
	for _, line := range []string{"JWKS loaded", "failed to fetch the JWKS", "the JWKS answers again"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("the log lacks %q:\n%s", line, logs.String())
		}
	}
}

// lockedBuffer is a log that fetches on other goroutines may write to.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestJWKSDownAtStart(t *testing.T) {
	s := newSigner(t, "k1", "ES256")
	p := newIDP(t, s.jwk(t, jwkset.UseSig))
	p.setStatus(http.StatusServiceUnavailable)
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), UnknownKIDInterval: 50 * time.Millisecond}), nil)
	// No key is known: no token can be verified, nor is one taken unverified.
	wantRefused(t, a, "a token before the keys load", s.token(t, grants()), auth.ErrUnavailable, "cannot be fetched")
	noKid := s
	noKid.kid = ""
	wantRefused(t, a, "a token without kid before the keys load", noKid.token(t, grants()), auth.ErrUnavailable, "cannot be fetched")
	p.setStatus(0)
	wait.For(t, 5*time.Second, "the keys to load once the JWKS answers", func() bool {
		_, err := a.Token(s.token(t, grants()))
		return err == nil
	})

	// A server that does not listen at all.
	gone := httptest.NewServer(http.NotFoundHandler())
	url := gone.URL + "/jwks"
	gone.Close()
	a = jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: url}), nil)
	wantRefused(t, a, "a token while nothing listens", s.token(t, grants()), auth.ErrUnavailable, "cannot be fetched")
}

func TestJWKSSlowIsBounded(t *testing.T) {
	known, fresh := newSigner(t, "known", "RS256"), newSigner(t, "fresh", "RS256")
	p := newIDP(t, known.jwk(t, jwkset.UseSig))
	timeout := 300 * time.Millisecond
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), Timeout: timeout}), nil)
	p.setHang(true)

	done := make(chan error, 1)
	go func() {
		_, err := a.Token(fresh.token(t, grants()))
		done <- err
	}()
	wait.For(t, 5*time.Second, "the fetch for the new kid to hang", func() bool { return p.hanging.Load() == 1 })
	// The fetch hangs; a token of a known key does not wait for it.
	wantAccepted(t, a, "a known key during a hanging fetch", known.token(t, grants()))
	if p.hanging.Load() != 1 {
		t.Fatal("the fetch ended before the known key was verified: the test proved nothing")
	}
	// Other tokens of unknown kids wait for the fetch under way, no longer
	// than their own bound.
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := a.Token(fresh.token(t, grants())); !errors.Is(err, auth.ErrUnavailable) {
				t.Errorf("a new kid during a hanging fetch: %v, want ErrUnavailable", err)
			}
		})
	}
	select {
	case err := <-done:
		if !errors.Is(err, auth.ErrUnavailable) {
			t.Fatalf("the new kid whose fetch timed out: %v, want ErrUnavailable", err)
		}
	case <-time.After(20 * timeout):
		t.Fatalf("the token whose fetch hangs was not answered within %v", 20*timeout)
	}
	wg.Wait()
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2 (start, and one for the new kid)", n)
	}
}

func TestJWKSResponseIsBounded(t *testing.T) {
	s := newSigner(t, "k1", "RS256")
	p := newIDP(t, s.jwk(t, jwkset.UseSig))
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), MaxBytes: 64}), nil)
	wantRefused(t, a, "a JWKS larger than MaxBytes", s.token(t, grants()), auth.ErrUnavailable, "cannot be fetched")

	p = newIDP(t, s.jwk(t, jwkset.UseSig))
	p.mu.Lock()
	p.body = []byte(`<html>not a key set</html>`)
	p.mu.Unlock()
	a = jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url()}), nil)
	wantRefused(t, a, "a JWKS that is not JSON", s.token(t, grants()), auth.ErrUnavailable, "cannot be fetched")
}

func TestJWKSWithOtherKeys(t *testing.T) {
	fromIDP := newSigner(t, "idp", "ES256")
	static := newSigner(t, "static", "RS256") // --jwt-public-key, which tokens may name by a kid of their own
	p := newIDP(t, fromIDP.jwk(t, jwkset.UseSig))
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: p.url(), UnknownKIDInterval: 50 * time.Millisecond}), func(c *auth.Config) {
		c.Secret = secret
		c.PublicKey = static.key.Public()
	})
	wantAccepted(t, a, "JWKS key", fromIDP.token(t, grants()))
	wantAccepted(t, a, "--jwt-public-key", static.token(t, grants()))
	wantAccepted(t, a, "--jwt-secret", sign(t, jwt.SigningMethodHS256, secret, grants()))

	p.setStatus(http.StatusInternalServerError)
	// Each kid the JWKS lacks fetches it again (within the rate limit):
	// the first one after the outage finds it down.
	wantAccepted(t, a, "--jwt-public-key while the JWKS is down", static.token(t, grants()))
	stranger := newSigner(t, "stranger", "RS256")
	wantRefused(t, a, "an unknown key while the JWKS is down", stranger.token(t, grants()), auth.ErrUnavailable, "")
	wantAccepted(t, a, "--jwt-public-key after the JWKS was found down", static.token(t, grants()))
	wantAccepted(t, a, "a JWKS key while the JWKS is down", fromIDP.token(t, grants()))
}

func TestCheckJWKSURL(t *testing.T) {
	for _, c := range []struct {
		url string
		ok  bool
	}{
		{"https://id.example.com/.well-known/jwks.json", true},
		{"https://10.0.0.1:8443/jwks", true},
		{"http://127.0.0.1:8080/jwks", true},
		{"http://127.9.9.9/jwks", true},
		{"http://[::1]:9000/jwks", true},
		{"http://localhost/jwks", true},
		{"http://LOCALHOST:80/jwks", true},
		{"http://id.example.com/jwks", false},
		{"http://10.0.0.1/jwks", false},
		{"http://localhost.example.com/jwks", false},
		{"http://127.0.0.1.nip.io/jwks", false},
		{"http://[::ffff:10.0.0.1]/jwks", false},
		{"ftp://127.0.0.1/jwks", false},
		{"file:///etc/jwks.json", false},
		{"/jwks", false},
		{"https:///jwks", false},
		{"", false},
		{"://", false},
	} {
		err := auth.CheckJWKSURL(c.url)
		if (err == nil) != c.ok {
			t.Errorf("%q: %v, want ok=%v", c.url, err, c.ok)
		}
		if _, err := auth.NewJWKS(auth.JWKSOptions{URL: c.url}); (err == nil) != c.ok {
			t.Errorf("NewJWKS %q: %v, want ok=%v", c.url, err, c.ok)
		}
	}
}

func TestJWKSRedirectFollowsTheRule(t *testing.T) {
	s := newSigner(t, "k1", "RS256")
	p := newIDP(t, s.jwk(t, jwkset.UseSig))
	var away atomic.Int64
	redirect := func(to string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			away.Add(1)
			http.Redirect(w, r, to, http.StatusFound)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	// To loopback: followed.
	a := jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: redirect(p.url()).URL}), nil)
	wantAccepted(t, a, "keys behind a redirect", s.token(t, grants()))
	// To plain HTTP elsewhere: not followed, so nothing is fetched from it.
	a = jwksAuth(t, startJWKS(t, auth.JWKSOptions{URL: redirect("http://192.0.2.1/jwks").URL}), nil)
	wantRefused(t, a, "keys behind a redirect to http elsewhere", s.token(t, grants()), auth.ErrUnavailable, "")
}
