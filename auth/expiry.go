package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heraldpush/herald/hub"
)

// ErrExpired is what a connection fails with when its token expires.
var ErrExpired = fmt.Errorf("%w: the token has expired", ErrUnauthorized)

// expired is the Disconnect of a connection whose token expired.
var expired = hub.Refused("token expired", ErrExpired)

// upstreamUnavailable is the Disconnect of a connection whose grants
// expired when the application could not be asked again: it may reconnect
// later (1013 "try again later"), never keep grants no one confirmed.
var upstreamUnavailable = &hub.Disconnect{Code: 1013, Reason: "auth upstream unavailable", Label: "error"}

// reconnectToRenew is the Disconnect of a connection whose grants expired
// and whose session headers were too large to keep (maxKeptCreds): its
// reconnect sends them again, and the application is asked then.
var reconnectToRenew = &hub.Disconnect{Code: 1013, Reason: "session expired: reconnect", Label: "unauthorized"}

// Expiry fails a hub client with ErrExpired (as the Disconnect
// hub.Refused makes of it) when its token expires. A principal the
// application granted (Config.Upstream) is asked for again instead, from
// the cache or the application: the client goes on with the new grants if
// they are for the same user and still grant every pattern it is
// subscribed to, is refused (1008) if not, and is closed with 1013 if the
// application cannot answer, or if the connection's session headers were
// too large to keep (maxKeptCreds) and it must reconnect to send them
// again. Its methods are safe for concurrent use; it ends with the client.
type Expiry struct {
	c       *hub.Client
	mu      sync.Mutex
	t       *time.Timer      // nil: no expiry
	onRenew func(*Principal) // set once, by WatchExpiry
}

// WatchExpiry fails c at p's expiry, unless c ends first. For a principal
// that does not expire (authentication off, the API key) it returns nil and
// costs nothing: connections are made often. onRenew, if not nil, is told
// each principal that replaces p when the application grants it again
// (see Expiry); it runs on the expiry's timer.
func WatchExpiry(c *hub.Client, p *Principal, onRenew func(*Principal)) *Expiry {
	if p.Expires.IsZero() {
		return nil
	}
	e := &Expiry{c: c, onRenew: onRenew}
	e.Extend(p)
	context.AfterFunc(c.Context(), e.stop)
	return e
}

// Extend moves the deadline to p's expiry, after a refresh. A nil Expiry
// does nothing.
func (e *Expiry) Extend(p *Principal) {
	if e == nil {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.t != nil {
		e.t.Stop()
		e.t = nil
	}
	if p.Expires.IsZero() || e.c.Context().Err() != nil {
		return
	}
	if p.renew == nil {
		e.t = time.AfterFunc(time.Until(p.Expires), func() { e.c.Fail(expired) })
		return
	}
	// The timer's goroutine asks; the call is bounded by the upstream's
	// timeout and ends with the client.
	e.t = time.AfterFunc(time.Until(p.Expires), func() { e.renew(p) })
}

func (e *Expiry) renew(old *Principal) {
	p, err := old.renew(e.c.Context())
	switch {
	case e.c.Context().Err() != nil:
		return
	case errors.Is(err, ErrUnavailable):
		e.c.Fail(upstreamUnavailable)
		return
	case errors.Is(err, errCredsNotKept):
		e.c.Fail(reconnectToRenew)
		return
	case err != nil:
		e.c.Fail(hub.Refused("the application refused the credentials", err))
		return
	case p.Subject != old.Subject:
		e.c.Fail(hub.Refused("the application now answers for another user", ErrUnauthorized))
		return
	}
	for _, raw := range e.c.Patterns() {
		if pat, err := hub.ParsePattern(raw); err != nil || !p.MaySubscribe(pat) {
			e.c.Fail(hub.Refused(fmt.Sprintf("the application no longer grants subscribing to %q", raw), ErrUnauthorized))
			return
		}
	}
	if e.onRenew != nil {
		e.onRenew(p)
	}
	e.Extend(p)
}

func (e *Expiry) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.t != nil {
		e.t.Stop()
		e.t = nil
	}
}
