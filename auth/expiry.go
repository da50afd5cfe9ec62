package auth

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/heraldpush/herald/hub"
)

// ErrExpired is what a connection fails with when its token expires.
var ErrExpired = fmt.Errorf("%w: the token has expired", ErrUnauthorized)

// expired is the Disconnect of a connection whose token expired.
var expired = hub.Refused("token expired", ErrExpired)

// Expiry fails a hub client with ErrExpired (as the Disconnect
// hub.Refused makes of it) when its token expires. Its
// methods are safe for concurrent use; it ends with the client.
type Expiry struct {
	c  *hub.Client
	mu sync.Mutex
	t  *time.Timer // nil: no expiry
}

// WatchExpiry fails c at p's expiry, unless c ends first. For a principal
// that does not expire (authentication off, the API key) it returns nil and
// costs nothing: connections are made often.
func WatchExpiry(c *hub.Client, p *Principal) *Expiry {
	if p.Expires.IsZero() {
		return nil
	}
	e := &Expiry{c: c}
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
	e.t = time.AfterFunc(time.Until(p.Expires), func() { e.c.Fail(expired) })
}

func (e *Expiry) stop() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.t != nil {
		e.t.Stop()
		e.t = nil
	}
}
