// Package limit bounds what one client can take: open connections, in
// total and per IP, and request rates per caller, with token buckets
// (golang.org/x/time/rate). Everything here is safe for concurrent use and
// holds memory only for callers seen recently.
package limit

import (
	"errors"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Errors, matched with errors.Is: the protocol maps the first to 503
// unavailable, the others to 429 rate_limited.
var (
	ErrTooManyConns  = errors.New("the server has as many connections as it takes")
	ErrTooManyFromIP = errors.New("too many connections from this address")
	ErrRateLimited   = errors.New("too many requests")
)

// Conns counts open connections in total and per client IP. The zero
// value and a nil *Conns limit nothing.
type Conns struct {
	max, perIP int // 0: unlimited

	mu    sync.Mutex
	total int
	byIP  map[string]int // only addresses with open connections
}

// NewConns limits connections to max in total and perIP from one address;
// 0 leaves either unlimited.
func NewConns(max, perIP int) *Conns {
	return &Conns{max: max, perIP: perIP, byIP: make(map[string]int)}
}

// Acquire reserves a connection for ip. The caller must call release
// exactly once when the connection ends.
func (c *Conns) Acquire(ip string) (release func(), err error) {
	if c == nil || (c.max == 0 && c.perIP == 0) {
		return func() {}, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.max > 0 && c.total >= c.max {
		return nil, ErrTooManyConns
	}
	if c.perIP > 0 && c.byIP[ip] >= c.perIP {
		return nil, ErrTooManyFromIP
	}
	c.total++
	if c.perIP > 0 {
		c.byIP[ip]++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.total--
			if c.perIP > 0 {
				if c.byIP[ip]--; c.byIP[ip] <= 0 {
					delete(c.byIP, ip)
				}
			}
		})
	}, nil
}

// Open reports the connections counted now.
func (c *Conns) Open() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Rates is a token bucket per key (a token's subject, or a client IP). A
// nil *Rates limits nothing.
type Rates struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	sweepAt int // sweep idle buckets when the map grows past this
}

// NewRates allows perSecond requests per key on average, and bursts of
// burst; perSecond <= 0 returns nil (no limit).
func NewRates(perSecond float64, burst int) *Rates {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = max(1, int(math.Ceil(perSecond)))
	}
	return &Rates{limit: rate.Limit(perSecond), burst: burst, buckets: make(map[string]*rate.Limiter), sweepAt: 1024}
}

// Allow takes n tokens from key's bucket. When there are not enough it
// takes none and says how long until there will be.
func (r *Rates) Allow(key string, n int) (ok bool, retryAfter time.Duration) {
	if r == nil {
		return true, 0
	}
	now := time.Now()
	r.mu.Lock()
	b := r.buckets[key]
	if b == nil {
		if len(r.buckets) >= r.sweepAt {
			r.sweepLocked(now)
		}
		b = rate.NewLimiter(r.limit, r.burst)
		r.buckets[key] = b
	}
	r.mu.Unlock()
	if n > r.burst {
		// More than a full bucket can ever hold (a large batch): allowed
		// only from a full bucket, which it then empties.
		n = r.burst
	}
	res := b.ReserveN(now, n)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweepLocked forgets the buckets that are full again: a full bucket is
// what a new key gets, so nothing is lost. Memory is bounded by the keys
// active within about burst/limit seconds.
func (r *Rates) sweepLocked(now time.Time) {
	for k, b := range r.buckets {
		if b.TokensAt(now) >= float64(r.burst) {
			delete(r.buckets, k)
		}
	}
	r.sweepAt = max(1024, 2*len(r.buckets))
}

// Keys reports how many buckets are held (for tests and stats).
func (r *Rates) Keys() int {
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.buckets)
}

// ClientIP is the address a request came from: the TCP peer. Headers such
// as X-Forwarded-For are not trusted: any client can set them.
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Key is whom a rate limit counts: the token's subject when there is one,
// else the client's address. HTTP and WebSocket share the buckets.
func Key(subject string, r *http.Request) string {
	if subject != "" {
		return "sub:" + subject
	}
	return "ip:" + ClientIP(r)
}

// RetryAfter formats a wait for the Retry-After header: whole seconds,
// at least 1.
func RetryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
