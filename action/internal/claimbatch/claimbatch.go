// Package claimbatch takes a node's queued actions from a shared store
// several at a time: the workers of a node that wait in Claim at the same
// moment share one fetch of as many actions as there are of them, rather
// than each asking the store for one.
package claimbatch

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/action"
)

// MaxBatch bounds the actions one fetch takes, and what waits for a worker.
const MaxBatch = 64

// releaseTimeout bounds the Release of a claim no worker took.
const releaseTimeout = 5 * time.Second

// Fetch leases up to n actions (at least 1) for lease, waiting up to wait
// for the first; it returns none when wait ran out. With an error, the
// claims it returns as well are given back.
type Fetch func(ctx context.Context, lease time.Duration, n int, wait time.Duration) ([]*action.Claim, error)

// Release gives a claim back to the store (action.Store.Release).
type Release func(ctx context.Context, c *action.Claim) error

// held is a fetched claim that waits for a worker.
type held struct {
	c  *action.Claim
	at time.Time
}

// Batcher implements action.Store.Claim over a Fetch.
//
// Claim may be called from any goroutine. One caller at a time fetches
// (it holds the token), for itself and for the callers waiting then; what
// it fetched beyond its own goes to ready, from which the others take.
// Nothing is started: the fetch runs on its caller's goroutine.
type Batcher struct {
	fetch   Fetch
	release Release
	waiting atomic.Int32  // callers in Claim
	token   chan struct{} // held by the caller that fetches
	ready   chan held     // fetched, waiting for a worker
}

// New returns a Batcher on fetch and release.
func New(fetch Fetch, release Release) *Batcher {
	return &Batcher{fetch: fetch, release: release, token: make(chan struct{}, 1), ready: make(chan held, MaxBatch)}
}

// Claim implements action.Store.Claim. A fetched claim that waited more
// than lease/2 for a worker is given back rather than handed out: its
// lease may run out while it runs.
func (b *Batcher) Claim(ctx context.Context, lease, wait time.Duration) (*action.Claim, error) {
	b.waiting.Add(1)
	defer b.waiting.Add(-1)
	if c := b.takeReady(lease); c != nil {
		return c, nil
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case h := <-b.ready:
			if c := b.fresh(h, lease); c != nil {
				return c, nil
			}
		case b.token <- struct{}{}:
			if c := b.takeReady(lease); c != nil {
				<-b.token
				return c, nil
			}
			n := min(max(int(b.waiting.Load()), 1), MaxBatch)
			cs, err := b.fetch(ctx, lease, n, wait)
			if err != nil || len(cs) == 0 {
				<-b.token
				for _, c := range cs {
					b.giveBack(c)
				}
				return nil, err
			}
			// The others are in ready before the token goes: the next
			// holder finds them rather than fetching more.
			for _, c := range cs[1:] {
				b.hand(ctx, c)
			}
			<-b.token
			return cs[0], nil
		case <-t.C:
			return nil, nil
		case <-ctx.Done():
			b.drain()
			return nil, nil
		}
	}
}

// takeReady returns a fetched claim waiting for a worker, if there is one.
func (b *Batcher) takeReady(lease time.Duration) *action.Claim {
	for {
		select {
		case h := <-b.ready:
			if c := b.fresh(h, lease); c != nil {
				return c
			}
		default:
			return nil
		}
	}
}

// fresh returns h's claim, or gives it back and returns nil when it waited
// too long.
func (b *Batcher) fresh(h held, lease time.Duration) *action.Claim {
	if time.Since(h.at) < lease/2 {
		return h.c
	}
	b.giveBack(h.c)
	return nil
}

// hand leaves c for another worker, or gives it back when no worker will
// come for it (ctx ended: the node stops claiming) or too many wait.
func (b *Batcher) hand(ctx context.Context, c *action.Claim) {
	if ctx.Err() == nil {
		select {
		case b.ready <- held{c: c, at: time.Now()}:
			return
		default:
		}
	}
	b.giveBack(c)
}

// drain gives back what waits in ready: its caller's context ended, which
// is how a node stops claiming.
func (b *Batcher) drain() {
	for {
		select {
		case h := <-b.ready:
			b.giveBack(h.c)
		default:
			return
		}
	}
}

func (b *Batcher) giveBack(c *action.Claim) {
	ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
	defer cancel()
	_ = b.release(ctx, c) // on failure its lease runs out and it moves then
}
