package action

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/heraldpush/herald/hub"
)

// routes maps action types to handlers. Its lock is held for nothing else.
type routes struct {
	mu       sync.RWMutex
	exact    map[string]Handler
	prefixes []prefixRoute // longest prefix first
	fallback Handler
}

type prefixRoute struct {
	prefix string
	h      Handler
}

// Handle registers h for actions of type typ. A typ ending in "." or "*"
// is a prefix: "billing." (or "billing.*") serves every type starting with
// "billing.". The empty typ is the fallback for every type without a
// handler. An exact type wins over a prefix, a longer prefix over a shorter.
// Registering a typ again replaces its handler. A worker looks the handler
// up when it starts the action, so every Service on a Store (every node of
// a cluster) should register the same types: it runs whatever it claims.
// Handle panics if h is nil.
func (s *Service) Handle(typ string, h Handler) {
	if h == nil {
		panic("action: nil handler for type " + typ)
	}
	s.routes.set(typ, h)
}

func (rt *routes) set(typ string, h Handler) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	prefix, isPrefix := strings.CutSuffix(typ, "*")
	if !isPrefix && strings.HasSuffix(typ, ".") {
		isPrefix = true
	}
	switch {
	case typ == "" || (isPrefix && prefix == ""):
		rt.fallback = h
	case isPrefix:
		for i := range rt.prefixes {
			if rt.prefixes[i].prefix == prefix {
				rt.prefixes[i].h = h
				return
			}
		}
		rt.prefixes = append(rt.prefixes, prefixRoute{prefix: prefix, h: h})
		sort.SliceStable(rt.prefixes, func(i, j int) bool {
			return len(rt.prefixes[i].prefix) > len(rt.prefixes[j].prefix)
		})
	default:
		rt.exact[typ] = h
	}
}

// lookup returns the handler for typ, or nil when there is none.
func (rt *routes) lookup(typ string) Handler {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	if h := rt.exact[typ]; h != nil {
		return h
	}
	for _, p := range rt.prefixes {
		if strings.HasPrefix(typ, p.prefix) {
			return p.h
		}
	}
	return rt.fallback
}

// prepare validates a request: the action's type and topic, its payload
// (normalized into the returned draft's Data), its handler and idempotency
// key. sum is the body's hash when the request has a key.
func (rt *routes) prepare(req Request) (d hub.Draft, h Handler, sum [sha256.Size]byte, err error) {
	// Before Normalize, which would default an empty type.
	if err := req.Validate(); err != nil {
		return d, nil, sum, err
	}
	d = hub.Draft{Topic: req.Topic, Type: req.Type, Data: req.Payload}
	if err := d.Normalize(); err != nil {
		return d, nil, sum, err
	}
	if h = rt.lookup(req.Type); h == nil {
		return d, nil, sum, fmt.Errorf("%w %q", ErrUnknownAction, req.Type)
	}
	if req.IdempotencyKey != "" {
		if err := ValidateKey(req.IdempotencyKey); err != nil {
			return d, nil, sum, err
		}
		if sum, err = bodySum(req.Type, req.Topic, d.Data); err != nil {
			return d, nil, sum, err
		}
	}
	return d, h, sum, nil
}
