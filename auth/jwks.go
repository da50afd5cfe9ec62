package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"
)

// Defaults of JWKSOptions.
const (
	DefaultJWKSTimeout            = 5 * time.Second
	DefaultJWKSRefreshInterval    = 15 * time.Minute
	DefaultJWKSUnknownKIDInterval = 30 * time.Second
	DefaultJWKSMaxBytes           = 1 << 20
)

// maxJWKSRedirects bounds the redirects a fetch follows, each one to a URL
// the rule of CheckJWKSURL allows.
const maxJWKSRedirects = 3

// ErrUnavailable is matched (errors.Is) by the refusal of a token whose key
// the server cannot know now: its kid is not among the keys it holds and
// the JWKS cannot be fetched. Retrying later may succeed, so it is not an
// authentication failure (ErrUnauthorized); the error is an
// *UnavailableError.
var ErrUnavailable = errors.New("unavailable")

// UnavailableError is the ErrUnavailable of one request: a token whose key
// the JWKS cannot give now, or credentials the auth upstream cannot judge
// now (see Upstream).
type UnavailableError struct {
	// RetryAfter is when asking again may succeed: when the JWKS may be
	// fetched again for an unknown key, or a moment for the auth upstream.
	RetryAfter time.Duration
	msg        string
}

func (e *UnavailableError) Error() string { return e.msg }

// Is makes an *UnavailableError match ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// errUnknownKey marks a token whose kid the JWKS, fetched successfully,
// does not have.
var errUnknownKey = errors.New("the token's key (kid) is not in the JWKS")

// errKeyMismatch marks a token whose alg is not the one of its key.
var errKeyMismatch = errors.New("the token's algorithm does not fit its key")

// JWKSOptions configures NewJWKS.
type JWKSOptions struct {
	// URL is where the JSON Web Key Set is: https://, or http:// to a
	// loopback host (see CheckJWKSURL).
	URL string
	// Timeout bounds each fetch of the set, its redirects and body
	// included. Default DefaultJWKSTimeout.
	Timeout time.Duration
	// RefreshInterval is how often the set is fetched again, so that
	// revoked keys go. Default DefaultJWKSRefreshInterval.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by
	// tokens whose kid is not in the set (a new key after a rotation).
	// Tokens with made-up kids cannot make the server fetch more often.
	// Default DefaultJWKSUnknownKIDInterval.
	UnknownKIDInterval time.Duration
	// MaxBytes bounds the response; a larger one is a failed fetch.
	// Default DefaultJWKSMaxBytes.
	MaxBytes int64
	// Logger receives failed fetches; default slog.Default().
	Logger *slog.Logger
}

// JWKS is a JSON Web Key Set fetched from an identity provider: the keys
// of RS256, ES256 and EdDSA tokens, chosen by the token's kid. NewJWKS
// connects nothing; Start loads the set and keeps it fresh until its
// context ends. Lookups are safe for concurrent use, and one of a known kid
// never waits for a fetch.
type JWKS struct {
	opts    JWKSOptions
	limiter *rate.Limiter // the fetches for unknown kids
	track   *fetchTracker
	client  *http.Client

	started atomic.Bool
	// refreshing looks a key up, fetching the set (rate limited) when
	// its kid is unknown; cached only reads the keys held. Both are nil
	// until Start.
	refreshing atomic.Pointer[keyfunc.Keyfunc]
	cached     atomic.Pointer[keyfunc.Keyfunc]
}

// CheckJWKSURL applies the rule for a JWKS address: https://, or http://
// only to a loopback host (127.0.0.0/8, ::1, localhost), where no one on
// the way can replace the keys.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("failed to parse the JWKS URL: %w", err)
	}
	return checkJWKSURL(u)
}

func checkJWKSURL(u *url.URL) error {
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("the JWKS URL %q has no host", u.Redacted())
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if strings.EqualFold(host, "localhost") {
			return nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("the JWKS URL %q must be https:// (http:// only to a loopback host: the keys decide who is who)", u.Redacted())
	}
	return fmt.Errorf("the JWKS URL %q must be https://", u.Redacted())
}

// NewJWKS checks opts and returns a JWKS that holds no keys until Start.
func NewJWKS(opts JWKSOptions) (*JWKS, error) {
	if err := CheckJWKSURL(opts.URL); err != nil {
		return nil, err
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultJWKSTimeout
	}
	if opts.RefreshInterval <= 0 {
		opts.RefreshInterval = DefaultJWKSRefreshInterval
	}
	if opts.UnknownKIDInterval <= 0 {
		opts.UnknownKIDInterval = DefaultJWKSUnknownKIDInterval
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultJWKSMaxBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	track := &fetchTracker{maxBytes: opts.MaxBytes, loaded: func() {
		opts.Logger.Info("the JWKS answers again after a failure", "url", redactURL(opts.URL))
	}}
	// No keep-alive: a fetch is rare, and a kept connection would be a
	// goroutine that outlives Start's context.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = true
	tr.ResponseHeaderTimeout = opts.Timeout
	track.base = tr
	client := &http.Client{
		Transport: track,
		Timeout:   opts.Timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxJWKSRedirects {
				return fmt.Errorf("failed to fetch the JWKS: more than %d redirects", maxJWKSRedirects)
			}
			return checkJWKSURL(req.URL)
		},
	}
	return &JWKS{
		opts:    opts,
		limiter: rate.NewLimiter(rate.Every(opts.UnknownKIDInterval), 1),
		track:   track,
		client:  client,
	}, nil
}

// Start fetches the set, waiting at most the timeout, and then keeps it
// fresh every RefreshInterval until ctx ends: that ends the refresh
// goroutine. A set that cannot be fetched now is not an error: until one
// loads, tokens whose key is unknown are refused with ErrUnavailable (see
// Authenticator.Request). Start may be called once.
func (j *JWKS) Start(ctx context.Context) error {
	if !j.started.CompareAndSwap(false, true) {
		return errors.New("failed to start the JWKS: Start was called twice")
	}
	log := j.opts.Logger
	store, err := jwkset.NewStorageFromHTTP(j.opts.URL, jwkset.HTTPClientStorageOptions{
		Client:                    j.client,
		Ctx:                       ctx,
		HTTPTimeout:               j.opts.Timeout,
		NoErrorReturnFirstHTTPReq: true,
		RefreshInterval:           j.opts.RefreshInterval,
		RefreshErrorHandler: func(_ context.Context, err error) {
			j.track.failed()
			log.Warn("failed to fetch the JWKS: tokens with a key not yet known are refused with 503 until it loads",
				"url", redactURL(j.opts.URL), "err", err)
		},
	})
	if err != nil {
		return fmt.Errorf("failed to start the JWKS: %w", err)
	}
	// A key marked for encryption never verifies a signature.
	uses := []jwkset.USE{jwkset.UseSig, ""}
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{j.opts.URL: store},
		// The wait for the limiter and the fetch it allows share this
		// bound. With UnknownKIDInterval longer than it, a token of an
		// unknown kid is refused at once when a fetch was just made.
		RateLimitWaitMax:  j.opts.Timeout,
		RefreshUnknownKID: j.limiter,
	})
	if err != nil {
		return fmt.Errorf("failed to start the JWKS: %w", err)
	}
	refreshing, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: client, UseWhitelist: uses})
	if err != nil {
		return fmt.Errorf("failed to start the JWKS: %w", err)
	}
	cached, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: store, UseWhitelist: uses})
	if err != nil {
		return fmt.Errorf("failed to start the JWKS: %w", err)
	}
	j.refreshing.Store(&refreshing)
	j.cached.Store(&cached)
	if j.track.isUp() {
		n := 0
		if keys, err := store.KeyReadAll(ctx); err == nil {
			n = len(keys)
		}
		log.Info("JWKS loaded", "url", redactURL(j.opts.URL), "keys", n)
	}
	return nil
}

// key returns the key that verifies t: the key of t's kid (or, for a
// token without kid, every key of the set), which must be of the type
// t's algorithm needs. A kid not in the set fetches the set again, rate
// limited; when that fetch is not possible and the last one failed, the
// error is an *UnavailableError, since the key may well exist.
func (j *JWKS) key(ctx context.Context, t *jwt.Token) (any, error) {
	cached, refreshing := j.cached.Load(), j.refreshing.Load()
	if cached == nil {
		return nil, j.unavailable("the JWKS has not been started")
	}
	alg := t.Method.Alg()
	// The keys held first: a known kid never waits for the network.
	k, err := (*cached).Keyfunc(t)
	if err == nil {
		// The key of its kid, or for a token without kid the keys of
		// the set that fit its alg.
		k, err = fitKey(alg, k)
		if errors.Is(err, errUnknownKey) && !j.track.isUp() {
			return nil, j.unavailable("the JWKS cannot be fetched")
		}
		return k, err
	}
	if !errors.Is(err, jwkset.ErrKeyNotFound) {
		return nil, fmt.Errorf("failed to look the key up: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, j.opts.Timeout)
	defer cancel()
	if k, err = (*refreshing).KeyfuncCtx(ctx)(t); err == nil {
		return fitKey(alg, k)
	}
	// The limiter refused a fetch, or another one is under way (likely
	// for the same new key, after a rotation): the keys it loads count.
	if j.track.waitIdle(ctx) != nil {
		// The fetch did not end in time: whether it has the key is not
		// known.
		return nil, j.unavailable("the JWKS is slow to answer")
	}
	if k, err = (*cached).Keyfunc(t); err == nil {
		return fitKey(alg, k)
	}
	if !j.track.isUp() {
		return nil, j.unavailable("the JWKS cannot be fetched")
	}
	return nil, errUnknownKey
}

func (j *JWKS) unavailable(reason string) *UnavailableError {
	wait := time.Second
	if tokens := j.limiter.Tokens(); tokens < 1 {
		wait = max(wait, time.Duration((1-tokens)*float64(j.opts.UnknownKIDInterval)))
	}
	return &UnavailableError{RetryAfter: wait, msg: "the token's key is not known and " + reason + "; retry later"}
}

// fitKey returns k if it is the key type alg verifies with, and for a set
// of keys (a token without kid), those that are.
func fitKey(alg string, k any) (any, error) {
	if set, ok := k.(jwt.VerificationKeySet); ok {
		var fit jwt.VerificationKeySet
		for _, k := range set.Keys {
			if keyAlg(k) == alg {
				fit.Keys = append(fit.Keys, k)
			}
		}
		if len(fit.Keys) == 0 {
			return nil, errUnknownKey
		}
		return fit, nil
	}
	if keyAlg(k) != alg {
		return nil, errKeyMismatch
	}
	return k, nil
}

// keyAlg is the one algorithm a key verifies, from its type: never from
// the token, which could otherwise have a public key taken for an HMAC
// secret. "" for a key Herald does not accept.
func keyAlg(k any) string {
	switch k := k.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return "RS256"
		}
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name == "P-256" {
			return "ES256"
		}
	case ed25519.PublicKey:
		if len(k) == ed25519.PublicKeySize {
			return "EdDSA"
		}
	}
	return ""
}

func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	return "(invalid URL)"
}

// fetchTracker is the Transport of the JWKS fetches: it bounds the
// response and knows whether a fetch is under way and whether the last one
// loaded the set.
type fetchTracker struct {
	base     http.RoundTripper
	maxBytes int64
	loaded   func() // a fetch loaded the set after one failed

	mu       sync.Mutex
	inflight int
	idle     chan struct{} // closed when inflight drops to 0
	up       bool          // the last fetch that ended loaded the set
	broken   bool          // a fetch failed since the set last loaded
}

func (f *fetchTracker) RoundTrip(req *http.Request) (*http.Response, error) {
	f.begin()
	resp, err := f.base.RoundTrip(req)
	if err != nil {
		f.end(false, false)
		return nil, err
	}
	b := &trackedBody{rc: resp.Body, r: io.LimitReader(resp.Body, f.maxBytes+1), f: f, ok: resp.StatusCode == http.StatusOK}
	// A redirect is neither: the response it leads to decides.
	b.neutral = resp.StatusCode >= 300 && resp.StatusCode < 400 && resp.Header.Get("Location") != ""
	resp.Body = b
	return resp, nil
}

func (f *fetchTracker) begin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.inflight == 0 {
		f.idle = make(chan struct{})
	}
	f.inflight++
}

func (f *fetchTracker) end(ok, neutral bool) {
	f.mu.Lock()
	recovered := false
	if !neutral {
		f.up = ok
		if ok {
			recovered, f.broken = f.broken, false
		} else {
			f.broken = true
		}
	}
	f.inflight--
	if f.inflight == 0 {
		close(f.idle)
	}
	f.mu.Unlock()
	if recovered {
		f.loaded()
	}
}

// failed records a fetch that got the body but could not use it (not a
// JWKS): the library reports it after the body is closed.
func (f *fetchTracker) failed() {
	f.mu.Lock()
	f.up, f.broken = false, true
	f.mu.Unlock()
}

func (f *fetchTracker) isUp() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.up
}

// waitIdle waits until no fetch is under way, or ctx ends.
func (f *fetchTracker) waitIdle(ctx context.Context) error {
	f.mu.Lock()
	if f.inflight == 0 {
		f.mu.Unlock()
		return nil
	}
	idle := f.idle
	f.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// trackedBody ends its fetch when closed (after the set was read and
// stored), failing it if the body was cut, too large or not a 200.
type trackedBody struct {
	rc      io.ReadCloser
	r       io.Reader // rc, limited to one byte more than allowed
	n       int64
	f       *fetchTracker
	ok      bool
	neutral bool // a redirect
	once    sync.Once
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > b.f.maxBytes {
		b.ok = false
		return 0, fmt.Errorf("failed to read the JWKS: it is larger than %d bytes", b.f.maxBytes)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.ok = false
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.rc.Close()
	b.once.Do(func() { b.f.end(b.ok, b.neutral) })
	return err
}
