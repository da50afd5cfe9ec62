// Package sharedcall lets the callers that need one thing at the same time
// share one round trip for it, each waiting only as long as its own context
// allows. It is for looking up or creating what a client caches (a stream,
// a bucket, a consumer): during an outage each caller would otherwise send
// its own request, and hold a lock across it, or all of them again once it
// ends.
package sharedcall

import (
	"context"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Group runs one call per key at a time. The zero Group is ready; its
// methods are safe for concurrent use.
type Group[T any] struct {
	g singleflight.Group
	// joined counts the callers that have asked: a test's way to know
	// that callers are waiting together.
	joined atomic.Int64
}

// Do runs fn once for all the callers that ask for key while it runs, and
// returns its result, or ctx's error as soon as ctx ends. fn gets a context
// of base bounded by timeout, not the caller's: the caller that started it
// leaving must not fail the others. A caller whose ctx has ended already
// starts nothing.
func (g *Group[T]) Do(ctx, base context.Context, key string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, err // nobody would wait for what it started
	}
	ch := g.g.DoChan(key, func() (any, error) {
		cctx, cancel := context.WithTimeout(base, timeout)
		defer cancel()
		return fn(cctx)
	})
	g.joined.Add(1)
	select {
	case r := <-ch:
		v, _ := r.Val.(T)
		return v, r.Err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}
