package server_test

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
)

// jwksIDP is an identity provider's JWKS endpoint on loopback, which can
// be taken down.
type jwksIDP struct {
	srv     *httptest.Server
	down    atomic.Bool
	fetches atomic.Int64
	mu      sync.Mutex
	body    []byte
}

func newJWKSIDP(t *testing.T) *jwksIDP {
	t.Helper()
	p := &jwksIDP{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		if p.down.Load() {
			http.Error(w, "maintenance", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(p.body)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// publish makes the set the public keys of signers.
func (p *jwksIDP) publish(t *testing.T, signers ...idpKey) {
	t.Helper()
	set := jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{}}
	for _, s := range signers {
		j, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: s.kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, j.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.body = b
	p.mu.Unlock()
}

type idpKey struct {
	kid    string
	method jwt.SigningMethod
	key    crypto.Signer
}

func (k idpKey) token(t *testing.T, grants map[string][]string) string {
	t.Helper()
	tok := jwt.NewWithClaims(k.method, jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(), "herald": grants})
	tok.Header["kid"] = k.kid
	s, err := tok.SignedString(k.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServeJWKS runs a server whose tokens are verified with an identity
// provider's keys: an EdDSA token subscribes over SSE and WebSocket and an
// RS256 token publishes what they receive. With the provider down, a token
// of a key the server has not seen gets 503 with Retry-After (a WebSocket
// handshake: close code 1013, try again later, with the reason), while known keys keep
// working.
func TestServeJWKS(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, nextKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	publisher := idpKey{"rsa-2026", jwt.SigningMethodRS256, rsaKey}
	subscriber := idpKey{"ed-2026", jwt.SigningMethodEdDSA, edKey}
	next := idpKey{"ed-2027", jwt.SigningMethodEdDSA, nextKey}
	idp := newJWKSIDP(t)
	idp.publish(t, publisher, subscriber)
	in := start(t, server.Config{Auth: "jwt", JWTJWKSURL: idp.srv.URL + "/jwks"})

	sub := subscriber.token(t, map[string][]string{"subscribe": {"news.>"}})
	pub := publisher.token(t, map[string][]string{"publish": {"news.*"}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lines, stop := heraldtest.StreamLinesVia(ctx, t, in.Client, in.URL+"/v1/events?topic=news.>&access_token="+sub, "")
	defer stop()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws?access_token="+sub, &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"}, HTTPClient: in.Client,
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"1","topics":["news.>"]}`)); err != nil {
		t.Fatal(err)
	}
	wsNext := func(want string) string {
		t.Helper()
		for {
			_, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("WebSocket read: %v", err)
			}
			if strings.Contains(string(b), want) {
				return string(b)
			}
		}
	}
	wsNext(`"op":"ok"`)

	publish := func(token, data string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, in.URL+"/v1/publish",
			strings.NewReader(`{"topic":"news.a","type":"t","data":"`+data+`"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := in.Client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if status, _, body := publish(pub, "first"); status != http.StatusOK {
		t.Fatalf("publish with an RS256 token of the JWKS: %d %s", status, body)
	}
	if l := heraldtest.NextLine(t, lines, "data:"); !strings.Contains(l, "first") {
		t.Fatalf("SSE: %s", l)
	}
	wsNext(`"first"`)

	// The provider is down and rotates: the new key cannot be known yet.
	idp.down.Store(true)
	idp.publish(t, publisher, subscriber, next)
	nextPub := next.token(t, map[string][]string{"publish": {"news.*"}})
	status, header, body := publish(nextPub, "refused")
	if status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":"unavailable"`) || header.Get("Retry-After") == "" {
		t.Fatalf("a new kid while the JWKS is down: %d Retry-After %q %s, want 503 unavailable with Retry-After", status, header.Get("Retry-After"), body)
	}
	// The next fetch for an unknown kid may be made 30 s after this one.
	if ra := header.Get("Retry-After"); ra != "30" && ra != "29" {
		t.Errorf("Retry-After %q, want the 30 s of the rate limit", ra)
	}
	resp, err := in.Client.Get(in.URL + "/v1/events?topic=news.>&access_token=" + next.token(t, map[string][]string{"subscribe": {"news.>"}}))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("SSE with a new kid while the JWKS is down: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	wsNew, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws?access_token="+
		next.token(t, map[string][]string{"subscribe": {"news.>"}}), &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"}, HTTPClient: in.Client,
	})
	if err != nil {
		t.Fatalf("dial with a new kid: %v", err)
	}
	_, _, err = wsNew.Read(ctx)
	if websocket.CloseStatus(err) != websocket.StatusTryAgainLater || !strings.Contains(err.Error(), "cannot be fetched") {
		t.Fatalf("a WebSocket with a new kid while the JWKS is down: %v, want 1013 saying the key cannot be fetched", err)
	}
	wsNew.CloseNow()
	if status, _, body := publish(pub, "second"); status != http.StatusOK {
		t.Fatalf("publish with a known key while the JWKS is down: %d %s", status, body)
	}
	if l := heraldtest.NextLine(t, lines, "data:"); !strings.Contains(l, "second") {
		t.Fatalf("SSE: %s", l)
	}
	wsNext(`"second"`)
	// A made-up signature with a known kid is still a 401, down or not.
	forged := strings.TrimSuffix(pub, pub[len(pub)-4:]) + "AAAA"
	if status, _, body := publish(forged, "forged"); status != http.StatusUnauthorized {
		t.Fatalf("a forged signature: %d %s, want 401", status, body)
	}

	idp.down.Store(false)
	if n := idp.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: one at start and one for the new kid; the next ones wait for the rate limit", n)
	}
	// The rate limit (30 s by default) holds: the new key is not fetched
	// yet. A token of a known key still works, and the stream is intact.
	if status, _, body := publish(pub, "third"); status != http.StatusOK {
		t.Fatalf("publish after the JWKS is back: %d %s", status, body)
	}
	if l := heraldtest.NextLine(t, lines, "data:"); !strings.Contains(l, "third") {
		t.Fatalf("SSE: %s", l)
	}
}

// TestNewRefusesJWKSURL: a JWKS over plain HTTP to a host other than
// loopback is a configuration error, before anything starts.
func TestNewRefusesJWKSURL(t *testing.T) {
	for _, u := range []string{"http://id.example.com/jwks", "http://10.1.2.3/jwks", "ftp://127.0.0.1/jwks", "not a url"} {
		srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Auth: "jwt", JWTJWKSURL: u, Logger: slog.New(slog.DiscardHandler)})
		if !server.IsConfigError(err) || !strings.Contains(err.Error(), "--jwt-jwks-url") {
			if srv != nil {
				_ = srv.Shutdown(context.Background())
			}
			t.Errorf("%q: New returned %v, want a *ConfigError naming --jwt-jwks-url", u, err)
		}
	}
	if err := (server.Config{Auth: "none", JWTJWKSURL: "https://id.example.com/jwks"}).Validate(); !server.IsConfigError(err) {
		t.Errorf("a JWKS URL without --auth jwt: %v", err)
	}
	if err := (server.Config{Auth: "jwt", JWTJWKSURL: "https://id.example.com/jwks"}).Validate(); err != nil {
		t.Errorf("--auth jwt with only a JWKS URL: %v", err)
	}
}
