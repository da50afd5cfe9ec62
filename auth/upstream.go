package auth

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/heraldpush/herald/hub"
)

// Defaults and bounds of UpstreamOptions.
const (
	DefaultUpstreamTimeout      = 2 * time.Second
	DefaultUpstreamTTL          = time.Minute // an answer without expires_in (or 0)
	DefaultUpstreamMaxTTL       = time.Hour
	DefaultUpstreamCacheEntries = 100_000
	DefaultUpstreamCacheBytes   = 64 << 20
	// UpstreamMaxAnswer bounds the body of an answer; a larger one is a
	// failed call (503).
	UpstreamMaxAnswer = 64 << 10
	// UpstreamMaxPatterns bounds each of an answer's subscribe, publish
	// and actions lists: every check of a grant walks them.
	UpstreamMaxPatterns = 256
	// UpstreamDenyTTL is how long a 401 or 403 of the application is
	// kept for its session: a refused page that reconnects in a loop asks
	// the application once per UpstreamDenyTTL, and a user who logs in
	// has new cookies, so a new session, at once.
	UpstreamDenyTTL = 5 * time.Second
	// upstreamRetryAfter is the Retry-After of the 503 of a failed call.
	upstreamRetryAfter = time.Second
)

// UpstreamOptions configures NewUpstream.
type UpstreamOptions struct {
	// URL is the application's endpoint that answers with grants, e.g.
	// http://app:3000/herald/auth: an absolute http:// or https:// URL.
	// It receives the users' cookies: use https:// across any network
	// that is not trusted.
	URL string
	// Timeout bounds one call, connection and body included. Default
	// DefaultUpstreamTimeout.
	Timeout time.Duration
	// MaxTTL caps the expires_in of an answer. Default
	// DefaultUpstreamMaxTTL.
	MaxTTL time.Duration
	// CacheEntries and CacheBytes bound the answers kept; past either,
	// the least recently used go. Defaults DefaultUpstreamCacheEntries
	// and DefaultUpstreamCacheBytes.
	CacheEntries int
	CacheBytes   int
	// Logger receives failed calls, at most one every 10 s (never a
	// cookie or header value); default slog.Default().
	Logger *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Upstream asks the application whether a request may subscribe, publish
// and run actions, for requests that carry no Herald token: it POSTs the
// request's Cookie and Authorization headers, and the application answers
// with grants (see decodeGrants) or refuses with 401 or 403. Answers are
// cached per session, the SHA-256 of the forwarded headers, for their
// expires_in; concurrent requests of one session wait for one call. When
// the application cannot answer (down, slow, an answer that is not
// grants), the request is refused with ErrUnavailable: never let through.
//
// Its methods are safe for concurrent use. Close ends the calls under way.
type Upstream struct {
	url    string
	opts   UpstreamOptions
	client *http.Client
	ctx    context.Context // the calls' context: Close ends it
	cancel context.CancelFunc
	group  singleflight.Group
	// logs bounds the warnings of failed calls: an application that is
	// down fails a call for every new session.
	logs *rate.Limiter

	mu    sync.Mutex
	cache *grantCache
}

// NewUpstream checks o and returns an Upstream. It connects nothing.
func NewUpstream(o UpstreamOptions) (*Upstream, error) {
	if err := CheckUpstreamURL(o.URL); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultUpstreamTimeout
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultUpstreamMaxTTL
	}
	if o.CacheEntries <= 0 {
		o.CacheEntries = DefaultUpstreamCacheEntries
	}
	if o.CacheBytes <= 0 {
		o.CacheBytes = DefaultUpstreamCacheBytes
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: o.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.Timeout,
		ResponseHeaderTimeout: o.Timeout,
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   o.Timeout,
		// A redirect would send the cookies elsewhere: it is answered as
		// it is, a failed call.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Upstream{url: o.URL, opts: o, client: client, ctx: ctx, cancel: cancel,
		logs: rate.NewLimiter(rate.Every(10*time.Second), 1), cache: newGrantCache(o.CacheEntries, o.CacheBytes)}, nil
}

// CheckUpstreamURL applies the rule for the auth upstream's address: an
// absolute http:// or https:// URL, as for an action upstream.
func CheckUpstreamURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("failed to parse the auth upstream URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("the auth upstream URL %q must be an absolute http:// or https:// URL", u.Redacted())
	}
	return nil
}

// Close ends the calls under way (their requests get 503) and frees the
// keep-alive connections. Later calls fail at once.
func (u *Upstream) Close() {
	u.cancel()
	u.client.CloseIdleConnections()
}

// upstreamCreds are what a request's session is to the application: the
// headers forwarded to it.
type upstreamCreds struct {
	cookie        string
	authorization string
}

func (c upstreamCreds) empty() bool { return c.cookie == "" && c.authorization == "" }

// key is the session's cache key: a hash, so that the cache never holds a
// cookie or a header value.
func (c upstreamCreds) key() [sha256.Size]byte {
	h := sha256.New()
	// Length-prefixed, so that no two pairs of headers give one input.
	fmt.Fprintf(h, "%d:%s\n%d:%s", len(c.cookie), c.cookie, len(c.authorization), c.authorization)
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// upstreamQuery is the body POSTed to the application. Its fields describe
// the request that caused the call, for the application's logs: the answer
// is kept for the session and then applies to its every request.
type upstreamQuery struct {
	Transport  string `json:"transport"` // "sse", "ws" or "http"
	Method     string `json:"method"`
	Path       string `json:"path"`
	RemoteAddr string `json:"remote_addr,omitempty"`
}

func queryOf(r *http.Request) upstreamQuery {
	q := upstreamQuery{Transport: "http", Method: r.Method, Path: r.URL.Path}
	switch {
	case strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || strings.HasSuffix(r.URL.Path, "/v1/ws"):
		q.Transport = "ws"
	case strings.HasSuffix(r.URL.Path, "/v1/events"):
		q.Transport = "sse"
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		q.RemoteAddr = host
	}
	return q
}

// grantResult is one answer of the application, as cached.
type grantResult struct {
	p       *Principal // the grants; nil when err is set
	err     error      // a 401
	expires time.Time
}

// authorize returns the principal of creds: the cached answer of its
// session, or the application's, asked at most once at a time per session.
// It waits at most the timeout, or until ctx ends.
func (u *Upstream) authorize(ctx context.Context, creds upstreamCreds, q upstreamQuery) (*Principal, error) {
	key := creds.key()
	u.mu.Lock()
	res, ok := u.cache.get(key, u.opts.Now())
	u.mu.Unlock()
	if !ok {
		ch := u.group.DoChan(string(key[:]), func() (any, error) {
			// A call of this session that ended after the look-up
			// above, and before this one began, has cached its answer:
			// asking again would make one call more per expires_in.
			u.mu.Lock()
			r, ok := u.cache.get(key, u.opts.Now())
			u.mu.Unlock()
			if ok {
				return r, nil
			}
			return u.call(key, creds, q)
		})
		select {
		case r := <-ch:
			if r.Err != nil {
				return nil, r.Err
			}
			res = r.Val.(*grantResult)
		case <-ctx.Done():
			// The caller left (or its own deadline passed): the call
			// goes on for the others of its session, bounded by the
			// timeout.
			return nil, u.unavailable("the request ended while the auth upstream was asked")
		}
	}
	if res.err != nil {
		return nil, res.err
	}
	// The cached principal is shared: the caller gets a copy of its own.
	p := *res.p
	p.Expires = res.expires
	return &p, nil
}

// call asks the application and caches its answer (not a failure).
func (u *Upstream) call(key [sha256.Size]byte, creds upstreamCreds, q upstreamQuery) (*grantResult, error) {
	res, err := u.ask(creds, q)
	if err != nil {
		if u.logs.Allow() { // at most one every 10 s
			u.opts.Logger.Warn("failed to ask the auth upstream: requests of sessions it has not answered are refused with 503",
				"url", redactURL(u.url), "err", err)
		}
		return nil, u.unavailable("the auth upstream cannot answer now")
	}
	u.mu.Lock()
	u.cache.put(key, res)
	u.mu.Unlock()
	return res, nil
}

func (u *Upstream) ask(creds upstreamCreds, q upstreamQuery) (*grantResult, error) {
	body, err := json.Marshal(q)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the request: %w", err)
	}
	ctx, cancel := context.WithTimeout(u.ctx, u.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("failed to build the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if creds.cookie != "" {
		req.Header.Set("Cookie", creds.cookie)
	}
	if creds.authorization != "" {
		req.Header.Set("Authorization", creds.authorization)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		// The error names the URL, never the headers.
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, UpstreamMaxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read the answer: %w", err)
	}
	now := u.opts.Now()
	switch resp.StatusCode {
	case http.StatusOK:
		g, err := decodeGrants(data, u.opts.MaxTTL)
		if err != nil {
			return nil, err
		}
		return &grantResult{p: g.principal(), expires: now.Add(g.ttl)}, nil
	case http.StatusUnauthorized:
		return &grantResult{err: fmt.Errorf("%w: the application refused the request's credentials", ErrUnauthorized),
			expires: now.Add(UpstreamDenyTTL)}, nil
	case http.StatusForbidden:
		// A known user who may do nothing: every check answers 403.
		return &grantResult{p: &Principal{upstream: true}, expires: now.Add(UpstreamDenyTTL)}, nil
	}
	return nil, fmt.Errorf("the auth upstream answered %d (want 200, 401 or 403)", resp.StatusCode)
}

func (u *Upstream) unavailable(reason string) *UnavailableError {
	return &UnavailableError{RetryAfter: upstreamRetryAfter, msg: reason + "; retry later"}
}

// grants is an answer of the application, checked.
type grants struct {
	user                        string
	info                        json.RawMessage
	subscribe, publish, actions []hub.Pattern
	ttl                         time.Duration
}

func (g *grants) principal() *Principal {
	return &Principal{Subject: g.user, Info: g.info, subscribe: g.subscribe, publish: g.publish,
		actions: g.actions, upstream: true}
}

// grantsJSON is the body of a 200 answer. Unknown fields are ignored, so
// that an application may answer with more.
type grantsJSON struct {
	User      string          `json:"user"`
	Info      json.RawMessage `json:"info"`
	Subscribe []string        `json:"subscribe"`
	Publish   []string        `json:"publish"`
	Actions   []string        `json:"actions"`
	ExpiresIn *float64        `json:"expires_in"`
}

// decodeGrants parses the answer of the application:
//
//	{"user":"alice","subscribe":["todo.*"],"publish":[],"actions":["todo.add"],"expires_in":300,"info":{…}}
//
// Every pattern must parse (hub.ParsePattern), each list holds at most
// UpstreamMaxPatterns, info is an object if given, and expires_in, in
// seconds, is not negative: absent or 0 is DefaultUpstreamTTL, less than a
// second is a second (connections would otherwise ask again continually),
// and more than maxTTL is maxTTL. Anything else is an error: the answer is
// not used, never read as fewer grants.
func decodeGrants(body []byte, maxTTL time.Duration) (*grants, error) {
	if len(body) > UpstreamMaxAnswer {
		return nil, fmt.Errorf("the answer is larger than %d bytes", UpstreamMaxAnswer)
	}
	var a grantsJSON
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, fmt.Errorf("the answer is not a JSON object of grants: %w", err)
	}
	if bytes.TrimSpace(body)[0] != '{' {
		return nil, errors.New("the answer is not a JSON object of grants")
	}
	g := &grants{user: a.User, ttl: DefaultUpstreamTTL}
	var err error
	for _, l := range []struct {
		name string
		in   []string
		out  *[]hub.Pattern
	}{{"subscribe", a.Subscribe, &g.subscribe}, {"publish", a.Publish, &g.publish}, {"actions", a.Actions, &g.actions}} {
		if len(l.in) > UpstreamMaxPatterns {
			return nil, fmt.Errorf("%s has %d patterns, more than %d", l.name, len(l.in), UpstreamMaxPatterns)
		}
		if *l.out, err = patterns(l.in, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	if info := bytes.TrimSpace(a.Info); len(info) > 0 && string(info) != "null" {
		if info[0] != '{' {
			return nil, errors.New("info must be a JSON object")
		}
		g.info = json.RawMessage(info)
	}
	if a.ExpiresIn != nil {
		s := *a.ExpiresIn
		switch {
		case s < 0:
			return nil, fmt.Errorf("expires_in is negative (%v)", s)
		case s == 0:
		case s >= maxTTL.Seconds():
			g.ttl = maxTTL
		default:
			g.ttl = max(time.Duration(s*float64(time.Second)), time.Second)
		}
	}
	return g, nil
}

// grantCache keeps answers by session, least recently used first out. Its
// owner locks it.
type grantCache struct {
	maxEntries, maxBytes, bytes int
	order                       *list.List // of *cacheEntry, most recent in front
	byKey                       map[[sha256.Size]byte]*list.Element
}

type cacheEntry struct {
	key  [sha256.Size]byte
	res  *grantResult
	size int
}

func newGrantCache(maxEntries, maxBytes int) *grantCache {
	return &grantCache{maxEntries: maxEntries, maxBytes: maxBytes, order: list.New(),
		byKey: make(map[[sha256.Size]byte]*list.Element)}
}

func (c *grantCache) get(key [sha256.Size]byte, now time.Time) (*grantResult, bool) {
	el, ok := c.byKey[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.res.expires) {
		c.remove(el)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.res, true
}

func (c *grantCache) put(key [sha256.Size]byte, res *grantResult) {
	if el, ok := c.byKey[key]; ok {
		c.remove(el)
	}
	e := &cacheEntry{key: key, res: res, size: res.size()}
	c.byKey[key] = c.order.PushFront(e)
	c.bytes += e.size
	for c.order.Len() > c.maxEntries || (c.bytes > c.maxBytes && c.order.Len() > 1) {
		c.remove(c.order.Back())
	}
}

func (c *grantCache) remove(el *list.Element) {
	e := c.order.Remove(el).(*cacheEntry)
	delete(c.byKey, e.key)
	c.bytes -= e.size
}

// size is about the memory an answer holds, for the cache's bound.
func (r *grantResult) size() int {
	n := 256 // the entry, its list element, map slot and principal
	if r.p != nil {
		n += len(r.p.Subject) + len(r.p.Info)
		for _, ps := range [][]hub.Pattern{r.p.subscribe, r.p.publish, r.p.actions} {
			for _, p := range ps {
				n += 64 + len(p.String())
			}
		}
	}
	return n
}

// len reports the entries kept (tests).
func (c *grantCache) len() int { return c.order.Len() }
