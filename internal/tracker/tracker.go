// Package tracker counts running connections so that a server can wait for
// the ones net/http no longer tracks: http.Server.Shutdown forgets a
// connection once its handler hijacks it.
package tracker

import (
	"context"
	"sync"
)

// Tracker counts running connections. Unlike a sync.WaitGroup it may be
// waited on while connections still arrive. The zero value is ready; it is
// safe for concurrent use.
type Tracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n == 0
}

// Add counts one more running connection.
func (t *Tracker) Add() {
	t.mu.Lock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
	t.mu.Unlock()
}

// Done counts one connection as ended. It panics if none is running.
func (t *Tracker) Done() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		panic("tracker: Done without Add")
	}
	t.n--
	if t.n == 0 {
		close(t.idle)
		t.idle = nil
	}
}

// Wait blocks until no connection is running or ctx ends, and returns
// ctx's error in the second case.
func (t *Tracker) Wait(ctx context.Context) error {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
