// Package auth decides who a request comes from and what it may do: JWT
// bearer tokens with Herald's grants (SPEC "Auth"), a publisher API key, and
// patterns open to anonymous subscribers.
//
// An Authenticator is immutable after New and safe for concurrent use; so is
// every Principal it returns.
package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldpush/herald/hub"
)

// Where a token may come from, besides the Authorization header: browsers'
// EventSource and WebSocket cannot set headers.
const (
	QueryParam = "access_token"
	CookieName = "herald_token"
	// APIKeyHeader carries the publisher API key (server-to-server).
	APIKeyHeader = "X-API-Key"
)

// DefaultLeeway is the clock skew tolerated on a token's exp and nbf unless
// Config.Leeway says otherwise.
const DefaultLeeway = 30 * time.Second

// ErrUnauthorized is matched (errors.Is) by every authentication failure:
// no credentials where they are needed, a token that does not verify, or
// one that has expired. Its text says which.
var ErrUnauthorized = errors.New("unauthorized")

// Config configures New.
type Config struct {
	// Secret verifies HS256 tokens; PublicKey verifies RS256 (an
	// *rsa.PublicKey) or ES256 (an *ecdsa.PublicKey, P-256) tokens. At least
	// one is required; a token must be signed with an algorithm whose key is
	// given, so neither "none" nor a public key used as an HMAC secret is
	// ever accepted.
	Secret    []byte
	PublicKey crypto.PublicKey
	// JWKS, if set, verifies RS256, ES256 and EdDSA tokens with the key
	// of their kid, the algorithm following from the key. A token with a
	// kid the JWKS lacks is verified with PublicKey, if given. Its owner
	// starts it (JWKS.Start) and ends it.
	JWKS *JWKS
	// Audience and Issuer, if set, must be the token's aud (one of) and iss.
	Audience string
	Issuer   string
	// PublicSubscribe are patterns anyone may subscribe to without a token.
	PublicSubscribe []hub.Pattern
	// APIKey, if set, is a secret that X-API-Key may carry instead of a
	// token: the backend's credential (server-to-server). It may publish
	// to any topic and read the node's statistics, and subscribe to the
	// public patterns like anyone; nothing a user does.
	APIKey string
	// CookieOrigins are the Origin patterns of --allowed-origins and
	// --cors-origins. The herald_token cookie is a credential only on
	// requests from the server's own host or from an origin one of them
	// names exactly; patterns with a wildcard, "*" among them, never
	// extend it (see cookieOrigins).
	CookieOrigins []string
	// Upstream, if set, is asked for the grants of a request that carries
	// no Herald token and no API key but cookies (from a page they may
	// speak for, as the herald_token cookie) or an Authorization header
	// that is not a Bearer token. Without a secret, public key or JWKS,
	// it is the only way in: no token is verified, and an Authorization
	// header of any scheme goes to the application. Its owner closes it.
	Upstream *Upstream
	// Leeway tolerates clock skew on exp and nbf; default (0) 30 s,
	// negative: none, a token is refused from its exp on.
	Leeway time.Duration
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Authenticator verifies credentials. A nil *Authenticator means
// authentication is off: every request is allowed everything.
type Authenticator struct {
	cfg     Config
	parser  *jwt.Parser
	methods []string
	cookies cookieOrigins
}

// New checks cfg and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	var methods []string
	if len(cfg.Secret) > 0 {
		if len(cfg.Secret) < 32 {
			return nil, errors.New("failed to configure JWT: the HS256 secret must be at least 32 bytes")
		}
		methods = append(methods, "HS256")
	}
	switch k := cfg.PublicKey.(type) {
	case nil:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("failed to configure JWT: the RSA key has %d bits, want at least 2048", k.N.BitLen())
		}
		methods = append(methods, "RS256")
	case *ecdsa.PublicKey:
		if k.Curve.Params().Name != "P-256" {
			return nil, fmt.Errorf("failed to configure JWT: the ECDSA key is on %s, ES256 needs P-256", k.Curve.Params().Name)
		}
		methods = append(methods, "ES256")
	default:
		return nil, fmt.Errorf("failed to configure JWT: unsupported public key type %T (want RSA or ECDSA P-256)", k)
	}
	if cfg.JWKS != nil {
		for _, m := range []string{"RS256", "ES256", "EdDSA"} {
			if !slices.Contains(methods, m) {
				methods = append(methods, m)
			}
		}
	}
	if len(methods) == 0 && cfg.Upstream == nil {
		return nil, errors.New("failed to configure JWT: give a secret (HS256), a public key (RS256, ES256) or a JWKS")
	}
	switch {
	case cfg.Leeway == 0:
		cfg.Leeway = DefaultLeeway
	case cfg.Leeway < 0:
		cfg.Leeway = 0
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithJSONNumber(),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	a := &Authenticator{cfg: cfg, methods: methods, cookies: newCookieOrigins(cfg.CookieOrigins)}
	if len(methods) > 0 {
		a.parser = jwt.NewParser(opts...)
	}
	return a, nil
}

// claims is a token's payload as Herald reads it.
type claims struct {
	jwt.RegisteredClaims
	Herald *grantClaims `json:"herald"`
}

type grantClaims struct {
	// Info describes the subject as a member of a topic's presence
	// (a JSON object, checked when a stream joins).
	Info      json.RawMessage `json:"info"`
	Subscribe []string        `json:"subscribe"`
	Publish   []string        `json:"publish"`
	Actions   []string        `json:"actions"`
	// Admin lets the token use the control API (disconnect and
	// unsubscribe any connection).
	Admin bool `json:"admin"`
}

// Token verifies a token and returns its principal. Errors match
// ErrUnauthorized, or ErrUnavailable when the token's key is not known and
// the JWKS cannot be fetched now. A JWKS fetch for an unknown key takes at
// most its timeout.
func (a *Authenticator) Token(token string) (*Principal, error) {
	return a.token(context.Background(), token)
}

func (a *Authenticator) token(ctx context.Context, token string) (*Principal, error) {
	if a.parser == nil {
		return nil, fmt.Errorf("%w: this server verifies no tokens: it asks the application (--auth upstream)", ErrUnauthorized)
	}
	var c claims
	var jwksErr error // why the JWKS gave no key
	_, err := a.parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		k, jerr, err := a.key(ctx, t)
		jwksErr = jerr
		return k, err
	})
	if err != nil {
		if errors.Is(jwksErr, ErrUnavailable) {
			return nil, jwksErr
		}
		return nil, fmt.Errorf("%w: %s", ErrUnauthorized, describe(err))
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: the token has no sub claim", ErrUnauthorized)
	}
	p := &Principal{Subject: c.Subject, Expires: c.ExpiresAt.Time.Add(a.cfg.Leeway)}
	if c.Herald != nil {
		var perr error
		p.subscribe, perr = patterns(c.Herald.Subscribe, perr)
		p.publish, perr = patterns(c.Herald.Publish, perr)
		p.actions, perr = patterns(c.Herald.Actions, perr)
		p.admin = c.Herald.Admin
		if string(c.Herald.Info) != "null" {
			p.Info = c.Herald.Info
		}
		if perr != nil {
			return nil, fmt.Errorf("%w: the herald claim has %v", ErrUnauthorized, perr)
		}
	}
	p.subscribe = append(p.subscribe, a.cfg.PublicSubscribe...)
	return p, nil
}

func patterns(ss []string, prev error) ([]hub.Pattern, error) {
	if prev != nil {
		return nil, prev
	}
	out := make([]hub.Pattern, 0, len(ss))
	for _, s := range ss {
		p, err := hub.ParsePattern(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// key picks the verification key for the token's algorithm, and says why
// the JWKS gave none if it was asked and did not. The parser has already
// refused any algorithm outside a.methods. HS256 is only ever verified
// with the secret, never with a key of the JWKS.
func (a *Authenticator) key(ctx context.Context, t *jwt.Token) (key any, jwksErr, err error) {
	alg := t.Method.Alg()
	if alg == "HS256" {
		return a.cfg.Secret, nil, nil
	}
	static := a.cfg.PublicKey != nil && keyAlg(a.cfg.PublicKey) == alg
	if a.cfg.JWKS != nil {
		k, err := a.cfg.JWKS.key(ctx, t)
		if err == nil || !static || errors.Is(err, errKeyMismatch) {
			return k, err, err
		}
		// Not in the JWKS: perhaps signed with --jwt-public-key. If the
		// JWKS was down, and that key does not verify it either, the
		// token is refused as unavailable (see token).
		return a.cfg.PublicKey, err, nil
	}
	if static {
		return a.cfg.PublicKey, nil, nil
	}
	return nil, nil, fmt.Errorf("unexpected algorithm %q", alg)
}

// describe words a verification failure for the client, without echoing
// the token.
func describe(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the token is malformed"
	case errors.Is(err, errUnknownKey):
		return errUnknownKey.Error()
	case errors.Is(err, errKeyMismatch):
		return errKeyMismatch.Error()
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signature or algorithm is not accepted"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		// "…: aud claim is required": names the claim, nothing secret.
		msg := err.Error()
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			msg = msg[i+2:]
		}
		return "the token lacks a required claim: " + msg
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is for another audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the token is from another issuer"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "the token's claims are not valid"
	}
	return "the token is not valid"
}

// Request returns the principal of r. A token is taken from, in order,
// Authorization: Bearer, the access_token query parameter and the
// herald_token cookie, the cookie only when r comes from a page it may
// speak for (Config.CookieOrigins); a request with none but the right
// X-API-Key is the publisher; with Config.Upstream, a request with none
// but cookies or another Authorization is what the application answers
// (see Upstream), the cookies again only from a page they may speak for;
// a request with no credentials at all is anonymous (it may subscribe to
// the public patterns). A token or key that is given but wrong is an error
// (ErrUnauthorized): it is never taken for anonymous. A cookie from
// another page is not given: it is ignored. The application's answer
// takes at most the upstream's timeout; when it cannot be had, the error
// is ErrUnavailable.
func (a *Authenticator) Request(r *http.Request) (*Principal, error) {
	var tok string
	var forward upstreamCreds // for the application
	if a.parser == nil {
		// Upstream only: the credentials are all the application's.
		if r.URL.Query().Has(QueryParam) {
			return nil, fmt.Errorf("%w: this server verifies no tokens: it asks the application (--auth upstream); send its cookies or Authorization instead of %s", ErrUnauthorized, QueryParam)
		}
		forward.authorization = r.Header.Get("Authorization")
	} else {
		var err error
		tok, err = tokenOf(r)
		if errors.Is(err, errNotBearer) && a.cfg.Upstream != nil {
			tok, err, forward.authorization = "", nil, r.Header.Get("Authorization")
		}
		if err != nil {
			return nil, err
		}
	}
	cookieIgnored := false
	if tok == "" && forward.authorization == "" {
		if a.parser != nil {
			if c, err := r.Cookie(CookieName); err == nil && c.Value != "" {
				if a.cookies.trusts(r) {
					tok = c.Value
				} else {
					cookieIgnored = true
				}
			}
		}
	}
	if tok != "" {
		return a.token(r.Context(), tok)
	}
	if key := r.Header.Get(APIKeyHeader); key != "" {
		if a.cfg.APIKey == "" || subtle.ConstantTimeCompare([]byte(key), []byte(a.cfg.APIKey)) != 1 {
			return nil, fmt.Errorf("%w: the API key is not valid", ErrUnauthorized)
		}
		// Like anyone, it may subscribe to the public patterns.
		return &Principal{Subject: "api-key", publishAll: true, subscribe: a.cfg.PublicSubscribe}, nil
	}
	if a.cfg.Upstream != nil {
		if cookies := r.Header.Values("Cookie"); len(cookies) > 0 {
			if a.cookies.trusts(r) {
				forward.cookie = strings.Join(cookies, "; ")
			} else {
				cookieIgnored = true
			}
		}
		if !forward.empty() {
			return a.fromUpstream(r.Context(), forward, queryOf(r))
		}
	}
	return &Principal{anonymous: true, subscribe: a.cfg.PublicSubscribe, cookieIgnored: cookieIgnored,
		sessionHelps: a.cfg.Upstream != nil, tokenHelps: a.parser != nil}, nil
}

// fromUpstream is the principal the application grants to creds, with the
// public patterns, and able to ask again when it expires (see Expiry).
func (a *Authenticator) fromUpstream(ctx context.Context, creds upstreamCreds, q upstreamQuery) (*Principal, error) {
	p, err := a.cfg.Upstream.authorize(ctx, creds, q)
	if err != nil {
		return nil, err
	}
	if len(a.cfg.PublicSubscribe) > 0 {
		p.subscribe = slices.Concat(p.subscribe, a.cfg.PublicSubscribe)
	}
	if len(creds.cookie)+len(creds.authorization) > maxKeptCreds {
		// Kept for hours on every connection, headers up to
		// --max-header-bytes would let one session hold gigabytes: the
		// connection reconnects at expiry instead, and sends them again.
		p.renew = func(context.Context) (*Principal, error) { return nil, errCredsNotKept }
		return p, nil
	}
	// The connection holds the credentials, not the cache: it may outlive
	// the answer's expiry, and then asks again with them.
	p.renew = func(ctx context.Context) (*Principal, error) { return a.fromUpstream(ctx, creds, q) }
	return p, nil
}

// maxKeptCreds bounds the forwarded headers (Cookie and Authorization
// together) a live connection keeps to ask the application again when its
// grants expire. Browsers' session cookies are far smaller; 8 KiB is also
// what a default nginx takes in one header line.
const maxKeptCreds = 8 << 10

// errCredsNotKept is the renewal of a connection whose credentials were
// over maxKeptCreds.
var errCredsNotKept = errors.New("the session's headers were too large to keep")

// errNotBearer is an Authorization header of another scheme than Bearer.
var errNotBearer = fmt.Errorf("%w: the Authorization header must be \"Bearer TOKEN\"", ErrUnauthorized)

// tokenOf returns the token of the Authorization header or the
// access_token query parameter, which a page can only send if it holds the
// token: "" if there is none.
func tokenOf(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
			return "", errNotBearer
		}
		return strings.TrimSpace(tok), nil
	}
	if q := r.URL.Query(); q.Has(QueryParam) {
		if q.Get(QueryParam) == "" {
			return "", fmt.Errorf("%w: %s is empty", ErrUnauthorized, QueryParam)
		}
		return q.Get(QueryParam), nil
	}
	return "", nil
}

// Principal is who a request comes from and what it may do.
type Principal struct {
	// Subject is the token's sub ("" when anonymous, "api-key" for the
	// publisher key). Idempotency keys are scoped by it.
	Subject string
	// Expires is when the token stops being accepted: its exp plus the
	// allowed clock skew (zero: never). Live connections end then.
	Expires time.Time
	// Info is the token's herald.info claim (nil when absent): what
	// describes the subject as a member of a topic's presence.
	Info json.RawMessage

	anonymous     bool
	cookieIgnored bool // anonymous because the cookie came from another page
	all           bool // authentication is off
	publishAll    bool // the API key
	upstream      bool // granted by the application (Config.Upstream)
	admin         bool // a token with "herald":{"admin":true}
	// What an anonymous request could have sent: a token, a session of
	// the application (Config.Upstream), or both.
	sessionHelps, tokenHelps bool
	// renew asks the application again (nil for other principals).
	renew     func(ctx context.Context) (*Principal, error)
	subscribe []hub.Pattern
	publish   []hub.Pattern
	actions   []hub.Pattern
}

// Everyone is the principal of every request when authentication is off.
var Everyone = &Principal{all: true}

// Nobody may do nothing: the principal of a connection whose credentials
// were refused, until it is closed.
var Nobody = &Principal{anonymous: true}

// Anonymous reports whether the request carried no credentials: a refusal
// is then 401 (credentials would help), not 403.
func (p *Principal) Anonymous() bool { return p.anonymous }

// APIKey reports whether the request was authenticated by the API key.
func (p *Principal) APIKey() bool { return p.publishAll }

// Upstream reports whether the application granted the principal
// (Config.Upstream) rather than a token.
func (p *Principal) Upstream() bool { return p.upstream }

// Wanted says what an anonymous request lacks, for its refusal: "a
// token", "a session the application accepts (its cookies or
// Authorization)", or both.
func (p *Principal) Wanted() string {
	const session = "a session the application accepts (its cookies or Authorization)"
	switch {
	case p.sessionHelps && p.tokenHelps:
		return "a token or " + session
	case p.sessionHelps:
		return session
	}
	return "a token"
}

// CookieIgnored reports whether the request is anonymous because its
// herald_token cookie came from a page of another origin, which a refusal
// should tell the developer.
func (p *Principal) CookieIgnored() bool { return p.cookieIgnored }

// MaySubscribe reports whether every topic pat matches is granted: some
// subscribe pattern covers pat.
func (p *Principal) MaySubscribe(pat hub.Pattern) bool {
	if p.all {
		return true
	}
	for _, g := range p.subscribe {
		if g.Covers(pat) {
			return true
		}
	}
	return false
}

// MayControl reports whether the principal may use the control API
// (disconnect and unsubscribe connections): the API key, or a token whose
// herald claim has "admin": true. With authentication off nobody may: the
// control API has no credentials to check then (docs/protocol.md).
func (p *Principal) MayControl() bool { return p.publishAll || p.admin }

// MayPublish reports whether the principal may publish to topic.
func (p *Principal) MayPublish(topic string) bool {
	if p.all || p.publishAll {
		return true
	}
	return matchAny(p.publish, topic)
}

// MayAct reports whether the principal may submit (and look up) actions of
// this type: action patterns match the type.
func (p *Principal) MayAct(typ string) bool {
	return p.all || matchAny(p.actions, typ)
}

func matchAny(ps []hub.Pattern, s string) bool {
	for _, g := range ps {
		if g.Match(s) {
			return true
		}
	}
	return false
}

// MarshalJSON is for logs and debugging: the subject and the grants.
func (p *Principal) MarshalJSON() ([]byte, error) {
	str := func(ps []hub.Pattern) []string {
		out := make([]string, len(ps))
		for i, g := range ps {
			out[i] = g.String()
		}
		return out
	}
	return json.Marshal(map[string]any{"sub": p.Subject, "subscribe": str(p.subscribe), "publish": str(p.publish), "actions": str(p.actions), "admin": p.admin})
}

// Member returns who the principal is as a member of a topic's presence:
// its user (the token's sub; "" for an anonymous connection, the API key
// or authentication off) and its info (the herald.info claim, or nil).
func (p *Principal) Member() (user string, info json.RawMessage) {
	if p.anonymous || p.all || p.publishAll {
		return "", nil
	}
	return p.Subject, p.Info
}
