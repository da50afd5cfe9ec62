package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// errHung is the cause of a connection that its watchdog ended.
var errHung = errors.New("connection hung")

// watchdog ends a connection that hangs, by cancelling its session's
// context: a server (or a proxy) that takes the request and never answers,
// or answers and then goes silent while TCP stays up, would otherwise hold
// the subscription forever with no reconnect. The end is an ordinary
// failed connection: the subscription reconnects and resumes from its
// cursor. A nil *watchdog (a reader driven by a benchmark) does nothing.
type watchdog struct {
	ctx    context.Context // the session's
	cancel context.CancelCauseFunc
	idle   time.Duration
	// connect ends the session unless confirmed stops it first.
	connect *time.Timer
	// ping, if set, asks the server for a sign of life (a WebSocket ping,
	// whose pong marks seen).
	ping func(context.Context) error
	// seen is set by the reader on every line or frame it receives, and
	// cleared by each look of the watchdog: the reader pays an atomic
	// store, not a timer reset.
	seen atomic.Bool
	// held is set while the consumer holds up the reader: the connection
	// is not idle then, however long it lasts.
	held atomic.Bool
	wg   sync.WaitGroup
}

// newWatchdog starts the watchdog of a session whose context cancel
// ends: ctx must have no longer than connect to have its subscription
// confirmed.
func newWatchdog(ctx context.Context, cancel context.CancelCauseFunc, connect, idle time.Duration) *watchdog {
	w := &watchdog{ctx: ctx, cancel: cancel, idle: idle}
	w.connect = time.AfterFunc(connect, func() {
		cancel(fmt.Errorf("failed to have the subscription confirmed within %v: %w", connect, errHung))
	})
	return w
}

// confirmed ends the connect phase: the connection must from now on
// receive something at least every idle timeout.
func (w *watchdog) confirmed() {
	if w == nil || !w.connect.Stop() {
		return // confirmed already, or too late: the session is ending
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.watch()
	}()
}

// touch records that the connection received something.
func (w *watchdog) touch() {
	if w != nil {
		w.seen.Store(true)
	}
}

// hold records that the consumer holds up the reader (on), or no longer
// does (off).
func (w *watchdog) hold(on bool) {
	if w != nil {
		w.held.Store(on)
		w.seen.Store(true)
	}
}

// stop waits for the watchdog's goroutine, once the session's context has
// ended.
func (w *watchdog) stop() {
	w.connect.Stop()
	w.wg.Wait()
}

// watch looks at the connection four times per idle timeout, so that it
// ends between one and one and a quarter timeouts of silence.
func (w *watchdog) watch() {
	tick := max(w.idle/4, time.Millisecond)
	t := time.NewTicker(tick)
	defer t.Stop()
	var quiet time.Duration
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-t.C:
		}
		if w.seen.Swap(false) || w.held.Load() {
			quiet = 0
			continue
		}
		quiet += tick
		if quiet >= w.idle {
			w.cancel(fmt.Errorf("failed to hear from the server for %v: %w", w.idle, errHung))
			return
		}
		if w.ping != nil && quiet >= w.idle/2 {
			// A server whose keep-alives are further apart than half the
			// timeout (its ping interval is configurable) answers a ping
			// of ours; a dead one does not, within what is left of the
			// timeout.
			ctx, cancel := context.WithTimeout(w.ctx, w.idle-quiet)
			err := w.ping(ctx)
			cancel()
			if w.ctx.Err() != nil {
				return
			}
			// The pong is read by the reader: one the consumer holds up
			// reads it late, and is not idle.
			if err != nil && !w.held.Load() && !w.seen.Load() {
				w.cancel(fmt.Errorf("failed to hear from the server for %v, a ping unanswered: %w", w.idle, errHung))
				return
			}
			quiet = 0
		}
	}
}
