package ws

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"golang.org/x/time/rate"

	"github.com/heraldpush/herald/auth"
	"github.com/heraldpush/herald/hub"
)

// closeTimeout bounds a close handshake: after it the socket is closed
// without waiting for the peer's answer.
const closeTimeout = time.Second

// errFlood ends a connection that sent messages faster than MessageRate.
var errFlood = errors.New("the client sent messages too fast")

// StatusRateLimited closes a connection that flooded the server.
const StatusRateLimited websocket.StatusCode = 4029

// errPingTimeout ends a connection whose peer did not answer a ping.
var errPingTimeout = errors.New("peer did not answer a ping")

// errInvalidUTF8 ends a connection that sent a text message that is not
// UTF-8: RFC 6455 (section 8.1) has the endpoint fail the connection.
var errInvalidUTF8 = errors.New("the client sent a text message that is not UTF-8")

// session is one WebSocket connection.
//
// Goroutines, all owned by the session:
//   - the writer (writeLoop) drains the client's queue to the connection.
//     When the connection ends it closes it, waits for the others and
//     releases the session: it is the session's owner. After parkAfter
//     without work it parks (hub.Client.Park) and its goroutine ends: an idle
//     connection holds no writer goroutine. The next event or reply, a due
//     keep-alive ping or the reader's end starts a new one, so there is at
//     most one writer at any time.
//   - the reader (readLoop) handles the client's messages until the
//     connection is closed. It runs as a relay of goroutines: having handled
//     a message, it continues in a fresh goroutine and the old one ends, so
//     an idle connection holds one minimal stack rather than a grown one
//     (see read.go).
//   - a keep-alive ping, at most one at a time, short-lived.
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

	pingDue chan struct{} // cap 1: a keep-alive ping is due
	pinger  *time.Timer   // signals pingDue and restarts a parked writer; nil when pings are disabled
	restart func()        // the parked func: starts a writer

	// The writer's, used by one writer goroutine at a time, each start of
	// one ordered after the end of the last by the client's lock.
	idle  *time.Timer // the parkAfter timer
	items []hub.Item  // the batch, recycled through Drain

	tasks   sync.WaitGroup // the reader and the ping in flight
	pinging atomic.Bool

	// The reader's: who the connection is, replaced by a "refresh"; whom
	// its op rates count; its message rate.
	principal *auth.Principal
	expiry    *auth.Expiry
	rateKey   string
	flood     *rate.Limiter // nil: unlimited
}

func newSession(h *Handler, client *hub.Client, ws *websocket.Conn, conn *corkConn) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &session{h: h, client: client, ws: ws, conn: conn, ctx: ctx, cancel: cancel, pingDue: make(chan struct{}, 1),
		principal: auth.Everyone}
	if h.opts.MessageRate > 0 {
		s.flood = rate.NewLimiter(rate.Limit(h.opts.MessageRate), h.opts.MessageBurst)
	}
	return s
}

// start starts the reader and the writer. The Handler has counted the
// session in its tracker; the writer's last goroutine marks it done.
func (s *session) start() {
	s.restart = func() { go s.writeLoop() }
	if d := s.h.opts.PingInterval; d > 0 {
		// The first ping comes after a random half to whole interval, so
		// connections made together (a reconnect storm, a load test) are not
		// all pinged at once ever after: every ping starts a writer, and a
		// synchronized round would hold thousands of them at the same time.
		s.pinger = time.AfterFunc(jitter(d), func() {
			signal(s.pingDue)
			s.client.Unpark()
		})
	}
	s.tasks.Add(1)
	go s.readLoop()
	go s.writeLoop()
}

// stop ends the session from the reader or a ping: it tells the writer,
// starting it if it is parked.
func (s *session) stop(cause error) {
	s.cancel(cause)
	s.client.Unpark()
}

// writeLoop is the writer: it waits for work and writes it, and parks after
// parkAfter without work. When the connection or the client ends, it closes
// the connection and releases the session.
func (s *session) writeLoop() {
	for wrote := false; s.awaitWork(wrote); wrote = true {
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
		s.client.Written(s.items)
		// Let the batch's messages go now rather than at the next Drain; a
		// burst's large slice is not kept while idle.
		clear(s.items)
		if cap(s.items) > 256 {
			s.items = nil
		}
	}
}

// parkAfter is how long a writer waits for more work before it parks. An
// active connection keeps its writer: parking after every batch would cost
// a goroutine start and a stack regrowth per event.
const parkAfter = time.Second

// awaitWork waits up to parkAfter for the client's queue to have work,
// starting keep-alive pings meanwhile. It reports true when there is work;
// false when the writer has finished the session or parked. A writer that
// has written nothing (wrote is false: it was started for a ping) parks as
// soon as the ping is on its way.
func (s *session) awaitWork(wrote bool) bool {
	if s.idle == nil {
		s.idle = time.NewTimer(s.h.parkAfter)
	} else {
		s.idle.Reset(s.h.parkAfter)
	}
	for {
		select {
		case <-s.client.Wake():
			return true
		case <-s.pingDue:
			s.ping()
			s.pinger.Reset(s.h.opts.PingInterval)
			if !wrote {
				return s.park()
			}
		case <-s.ctx.Done():
			s.finish(readerStatus(context.Cause(s.ctx)))
			return false
		case <-s.idle.C:
			return s.park()
		}
	}
}

// park parks the writer. It reports true, not parked, when there is work
// meanwhile, else false: this goroutine must end.
func (s *session) park() bool { return !s.client.Park(s.restart, s.busy) }

// busy reports a reason to write other than the client's queue: a due ping
// or a finished reader.
func (s *session) busy() bool { return len(s.pingDue) > 0 || s.ctx.Err() != nil }

// jitter returns a random duration between d/2 and d.
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

// signal leaves a token in ch, a channel of capacity 1, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// writeFailed is how to close after a batch could not be written. A missed
// deadline makes the client a slow consumer. Otherwise the connection is
// closing or broken: typically the reader's side has already sent a close
// frame (1009) or seen the peer's, and the handshake is what remains.
func (s *session) writeFailed(err error) (websocket.StatusCode, string) {
	if errors.Is(err, os.ErrDeadlineExceeded) && !s.conn.Closing() {
		s.client.Fail(hub.ErrSlowConsumer)
		return closeStatus(hub.ErrSlowConsumer)
	}
	if s.ctx.Err() != nil {
		return readerStatus(context.Cause(s.ctx))
	}
	return websocket.StatusInternalError, "write failed"
}

// writeBatch writes items as frames and sends them in one socket write (or
// a few, for a batch larger than corkLimit), all before the write timeout.
//
// Data frames bypass coder/websocket: an event's frame head is encoded once
// for every subscriber (eventFormat) and copied into the cork buffer with the
// shared envelope (or a large envelope is written from where it is), where a
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
		var head, body []byte
		switch {
		case it.Msg != nil:
			f := it.Msg.Frame(eventFormat)
			head, body = f.Head, f.Body
		default:
			payload := it.Raw
			if it.Reset != nil {
				payload = resetFrame(it.Reset)
			}
			scratch = appendTextHeader(scratch[:0], len(payload))
			head, body = scratch, payload
		}
		if err = s.conn.WriteFrame(head, body); err != nil {
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
	if code == websocket.StatusCode(hub.ErrSlowConsumer.Code) {
		s.h.opts.Logger.Debug("websocket client disconnected as a slow consumer", "client", s.client.ID())
	}
	if code != 0 {
		s.close(code, reason)
	} else {
		_ = s.ws.CloseNow()
	}
	s.cancel(nil)
	if s.pinger != nil {
		s.pinger.Stop()
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
	case errors.Is(err, errFlood):
		return StatusRateLimited, "rate limited"
	case errors.Is(err, websocket.ErrMessageTooBig):
		return websocket.StatusMessageTooBig, "message too big"
	case errors.Is(err, errInvalidUTF8):
		return websocket.StatusInvalidFramePayloadData, "invalid UTF-8"
	default:
		return websocket.StatusProtocolError, "protocol error"
	}
}

// closeStatus is how to close after the hub closed the client with err:
// the code and reason of its hub.Disconnect.
func closeStatus(err error) (websocket.StatusCode, string) {
	d := hub.DisconnectOf(err)
	return websocket.StatusCode(d.Code), d.Reason
}

// close performs the close handshake, bounded by closeTimeout: a peer that
// does not answer, or a socket that does not drain, gets its socket closed.
// The reason is made to fit the close frame (closeReason).
func (s *session) close(code websocket.StatusCode, reason string) {
	reason = closeReason(reason)
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
			s.stop(errPingTimeout)
		}
	}()
}
