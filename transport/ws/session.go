package ws

import (
	"context"
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
)

// Close codes of the wire protocol beyond those coder/websocket names.
const (
	StatusSlowConsumer websocket.StatusCode = 4008
)

// closeTimeout bounds a close handshake: after it the socket is closed
// without waiting for the peer's answer.
const closeTimeout = time.Second

// errPingTimeout ends a connection whose peer did not answer a ping.
var errPingTimeout = errors.New("peer did not answer a ping")

// session is one WebSocket connection.
//
// Goroutines, all owned by the session:
//   - the writer (writeLoop) drains the client's queue to the connection.
//     When the connection ends it closes it, waits for the others and
//     releases the session: it is the session's owner.
//   - the reader (readLoop) handles the client's messages until the
//     connection is closed.
//   - a keep-alive ping, at most one at a time, short-lived.
//
// The writer and the reader each run as a relay of goroutines: having done
// some work, a loop that is about to wait continues in a fresh goroutine and
// the old one ends, so an idle connection holds two minimal stacks rather
// than the grown ones (see read.go). The writer relays only after relayAfter
// without work, so a busy connection does not pay for it per event. There is
// still exactly one writer and one reader at any time.
type session struct {
	h      *Handler
	client *hub.Client
	ws     *websocket.Conn
	conn   *corkConn

	// ctx is cancelled when the reader ends (the peer left, or sent something
	// that closed the connection) or a ping failed, with that as its cause;
	// it tells the writer to stop.
	ctx    context.Context
	cancel context.CancelCauseFunc

	pingTick *time.Ticker // nil when pings are disabled
	idle     *time.Timer  // the writer's relayAfter timer; writer-owned
	items    []hub.Item   // the writer's batch, recycled through Drain

	tasks   sync.WaitGroup // the reader and the ping in flight
	pinging atomic.Bool
}

func newSession(h *Handler, client *hub.Client, ws *websocket.Conn, conn *corkConn) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &session{h: h, client: client, ws: ws, conn: conn, ctx: ctx, cancel: cancel}
}

// start starts the reader and the writer. The Handler has counted the
// session in its tracker; the writer's last goroutine marks it done.
func (s *session) start() {
	if s.h.opts.PingInterval > 0 {
		s.pingTick = time.NewTicker(s.h.opts.PingInterval)
	}
	s.tasks.Add(1)
	go s.readLoop()
	go s.writeLoop()
}

// writeLoop is the writer. It waits for work, writes it, and when the queue
// is empty again continues in a fresh goroutine. When the connection or the
// client ends, it closes the connection and releases the session.
func (s *session) writeLoop() {
	var ping <-chan time.Time
	if s.pingTick != nil {
		ping = s.pingTick.C
	}
	for {
		select {
		case <-s.client.Wake():
		case <-ping:
			s.ping()
			continue
		case <-s.ctx.Done():
			s.finish(readerStatus(context.Cause(s.ctx)))
			return
		}
		for {
			var err error
			s.items, err = s.client.Drain(s.items)
			if err != nil {
				s.finish(closeStatus(err))
				return
			}
			if err := s.writeBatch(s.items); err != nil {
				s.finish(s.writeFailed(err))
				return
			}
			// Let the batch's messages go now rather than at the next
			// Drain; a burst's large slice is not kept while idle.
			clear(s.items)
			if cap(s.items) > 256 {
				s.items = nil
			}
			// An active connection keeps its stack: relaying after every
			// batch would cost a goroutine start and a stack regrowth per
			// event. Only once it has been idle for relayAfter does the
			// writer continue on a fresh, minimal stack.
			if !s.awaitMore(ping) {
				return
			}
		}
	}
}

// relayAfter is how long a writer waits for more work on its current stack
// before it relays to a fresh goroutine to idle on a minimal one.
const relayAfter = time.Second

// awaitMore waits up to relayAfter for the next batch on the current stack,
// answering keep-alive ticks meanwhile. It reports true when there is more
// to write; false when the writer has finished the session or relayed.
func (s *session) awaitMore(ping <-chan time.Time) bool {
	if s.idle == nil {
		s.idle = time.NewTimer(relayAfter)
	} else {
		s.idle.Reset(relayAfter)
	}
	for {
		select {
		case <-s.client.Wake():
			return true
		case <-ping:
			s.ping()
		case <-s.ctx.Done():
			s.finish(readerStatus(context.Cause(s.ctx)))
			return false
		case <-s.idle.C:
			go s.writeLoop()
			return false
		}
	}
}

// writeFailed is how to close after a batch could not be written. A missed
// deadline makes the client a slow consumer. Otherwise the connection is
// closing or broken: typically the reader's side has already sent a close
// frame (1009) or seen the peer's, and the handshake is what remains.
func (s *session) writeFailed(err error) (websocket.StatusCode, string) {
	if errors.Is(err, os.ErrDeadlineExceeded) && !s.conn.Closing() {
		s.client.Fail(hub.ErrSlowConsumer)
		return StatusSlowConsumer, "slow consumer"
	}
	if s.ctx.Err() != nil {
		return readerStatus(context.Cause(s.ctx))
	}
	return websocket.StatusInternalError, "write failed"
}

// writeBatch writes items as frames and sends them in one socket write (or
// a few, for a batch larger than corkLimit), all before the write timeout.
//
// Data frames bypass coder/websocket: an event's frame is encoded once for
// every subscriber (eventFormat) and copied into the cork buffer, where a
// per-message coder/websocket Write would cost a lock handshake and a header
// encode per subscriber. coder/websocket still writes every control frame
// (pings, pongs, close); corkConn keeps the two from interleaving and stops
// data after a close frame.
func (s *session) writeBatch(items []hub.Item) error {
	if len(items) == 0 {
		return nil
	}
	s.conn.Cork(time.Now().Add(s.h.opts.WriteTimeout))
	var err error
	n := 0
	var scratch []byte
	for _, it := range items {
		var frame []byte
		switch {
		case it.Msg != nil:
			frame = it.Msg.Frame(eventFormat)
		default:
			payload := it.Raw
			if it.Reset != nil {
				payload = resetFrame(it.Reset)
			}
			scratch = appendTextHeader(scratch[:0], len(payload))
			frame = append(scratch, payload...)
			scratch = frame
		}
		if err = s.conn.WriteFrame(frame); err != nil {
			break
		}
		n++
	}
	s.h.frames.Add(int64(n))
	// Uncork even after a failed frame: what was written before it (and any
	// close frame coder/websocket wrote meanwhile) still goes out.
	if uerr := s.conn.Uncork(); uerr != nil {
		err = uerr
	}
	return err
}

// finish closes the connection with code (0: the peer is unresponsive, no
// close handshake), waits for the session's other goroutines and releases
// the client.
func (s *session) finish(code websocket.StatusCode, reason string) {
	if code == StatusSlowConsumer {
		s.h.opts.Logger.Debug("websocket client disconnected as a slow consumer", "client", s.client.ID())
	}
	if code != 0 {
		s.close(code, reason)
	} else {
		_ = s.ws.CloseNow()
	}
	s.cancel(nil)
	if s.pingTick != nil {
		s.pingTick.Stop()
	}
	if s.idle != nil {
		s.idle.Stop()
	}
	s.tasks.Wait()
	s.client.Close()
	s.h.conns.Done()
}

// readerStatus is how to close after the reader ended with err. A peer
// that closed, or whose connection broke, makes the close handshake a no-op.
// After a message over the read limit (coder/websocket has sent 1009) or a
// protocol violation, the handshake reads and discards what the peer still
// sends until its close frame, so the close status reaches it rather than
// being lost to a reset. A peer that missed a ping gets no handshake.
func readerStatus(err error) (websocket.StatusCode, string) {
	switch {
	case errors.Is(err, errPingTimeout):
		return 0, ""
	case errors.Is(err, websocket.ErrMessageTooBig):
		return websocket.StatusMessageTooBig, "message too big"
	default:
		return websocket.StatusProtocolError, "protocol error"
	}
}

// closeStatus maps the reason the hub closed the client to a close status.
func closeStatus(err error) (websocket.StatusCode, string) {
	switch {
	case errors.Is(err, hub.ErrSlowConsumer):
		return StatusSlowConsumer, "slow consumer"
	case errors.Is(err, hub.ErrUnavailable):
		return websocket.StatusTryAgainLater, "broker unavailable"
	default: // hub.ErrGoingAway, hub.ErrClosed
		return websocket.StatusGoingAway, "server going away"
	}
}

// close performs the close handshake, bounded by closeTimeout: a peer that
// does not answer, or a socket that does not drain, gets its socket closed.
func (s *session) close(code websocket.StatusCode, reason string) {
	s.conn.StartHandshake()
	s.conn.SetWriteTimeout(closeTimeout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.ws.Close(code, reason)
	}()
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		// CloseNow would wait for Close to finish; closing the socket ends it.
		_ = s.conn.Abort()
		<-done
	}
}

// ping starts a keep-alive ping unless one is still waiting for its pong.
// A ping that fails ends the connection.
func (s *session) ping() {
	if !s.pinging.CompareAndSwap(false, true) {
		return
	}
	s.tasks.Add(1)
	go func() {
		defer s.tasks.Done()
		defer s.pinging.Store(false)
		// Not derived from s.ctx, which would keep a map of children from
		// then on: closing the connection ends the ping just as well.
		ctx, cancel := context.WithTimeout(context.Background(), s.h.opts.WriteTimeout)
		defer cancel()
		if err := s.ws.Ping(ctx); err != nil && s.ctx.Err() == nil {
			s.cancel(errPingTimeout)
		}
	}()
}
