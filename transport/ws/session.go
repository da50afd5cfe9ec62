package ws

import (
	"context"
	"errors"
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
//   - the writer (hub.Client.Serve, with the session as its BatchWriter)
//     drains the client's queue to the connection and starts keep-alive
//     pings. When the connection ends it closes it, waits for the others and
//     releases the session (Finish): it is the session's owner. It parks
//     while idle: an idle connection holds no writer goroutine.
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
	// it tells the writer to stop (the done channel of Serve).
	ctx    context.Context
	cancel context.CancelCauseFunc

	tasks   sync.WaitGroup // the reader and the ping in flight
	pinging atomic.Bool

	// deflate: the handshake negotiated permessage-deflate, and event
	// frames go compressed where deflateFormat has one (deflate.go).
	deflate bool
	// stats counts the event frames written, for the "stats" op: the
	// writer adds, the reader reads.
	stats wireStats

	// Who the connection is, replaced by a "refresh" (the reader) or by
	// the application's grants asked again at their expiry (the expiry's
	// timer): the reader loads it for each op.
	principal atomic.Pointer[auth.Principal]
	// The reader's: the expiry; whom its op rates count; its message rate.
	expiry  *auth.Expiry
	rateKey string
	flood   *rate.Limiter // nil: unlimited

	bases hub.Bases // the writer's: what deltas are made from
}

func newSession(h *Handler, client *hub.Client, ws *websocket.Conn, conn *corkConn, deflate bool) *session {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := &session{h: h, client: client, ws: ws, conn: conn, ctx: ctx, cancel: cancel, deflate: deflate}
	s.principal.Store(auth.Everyone)
	if h.opts.MessageRate > 0 {
		s.flood = rate.NewLimiter(rate.Limit(h.opts.MessageRate), h.opts.MessageBurst)
	}
	return s
}

// start starts the reader and the writer. The Handler has counted the
// session in its tracker; the writer's last goroutine marks it done.
func (s *session) start() {
	s.tasks.Add(1)
	go s.readLoop()
	s.client.Serve(s, &s.h.writer, s.ctx.Done())
}

// stop ends the session from the reader or a ping: it tells the writer,
// starting it if it is parked.
func (s *session) stop(cause error) {
	s.cancel(cause)
	s.client.Interrupt()
}

// parkAfter is how long a writer waits for more work before it parks.
const parkAfter = time.Second

// KeepAlive starts a keep-alive ping (hub.BatchWriter).
func (s *session) KeepAlive() error {
	s.ping()
	return nil
}

// Finish closes the connection as end calls for (hub.BatchWriter).
func (s *session) Finish(end hub.End) {
	switch {
	case end.Closed != nil:
		s.finish(closeStatus(end.Closed))
	case end.Failed != nil:
		s.finish(s.writeFailed(end.Failed))
	default:
		s.finish(readerStatus(context.Cause(s.ctx)))
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

// WriteBatch writes items as frames and sends them in one socket write (or
// a few, for a batch larger than corkLimit), all before the write timeout.
//
// Data frames bypass coder/websocket: an event's frame head is encoded once
// for every subscriber (eventFormat) and copied into the cork buffer with the
// shared envelope (or a large envelope is written from where it is), where a
// per-message coder/websocket Write would cost a lock handshake and a header
// encode per subscriber. A session that negotiated permessage-deflate sends
// an event's compressed frame where it has one, compressed once for every
// such subscriber (deflateFormat). coder/websocket still writes every control frame
// (pings, pongs, close); corkConn keeps the two from interleaving and stops
// data after a close frame.
func (s *session) WriteBatch(items []hub.Item) error {
	if len(items) == 0 {
		return nil
	}
	s.conn.Cork(time.Now().Add(s.h.opts.WriteTimeout))
	var err error
	n := 0
	var scratch []byte
	var tally frameTally
	for _, it := range items {
		var head, body []byte
		wire, plain := 0, 0 // an event's frame as sent, and uncompressed
		switch {
		case it.Msg != nil && s.bases.Active(it) && s.deltaFrame(it, &scratch, &head, &body):
			// A delta frame goes uncompressed: it is small (at most half the
			// data it replaces, usually tens of bytes), and its bytes are per
			// base, not per event, so it has no shared compressed frame.
			wire, plain = len(head)+len(body), eventFrameLen(it.Msg)
		case it.Msg != nil:
			var f hub.Frame
			f, plain = s.eventFrame(it.Msg)
			head, body, wire = f.Head, f.Body, f.Len()
		default:
			if it.Reset != nil {
				s.bases.Reset()
			}
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
		if plain > 0 {
			tally.add(wire, plain)
		}
	}
	s.h.frames.Add(int64(n))
	s.stats.record(tally)
	// Uncork even after a failed frame: what was written before it (and any
	// close frame coder/websocket wrote meanwhile) still goes out.
	if uerr := s.conn.Uncork(); uerr != nil {
		err = uerr
	}
	return err
}

// eventFrame is m's frame as this connection sends it, shared by every
// connection that sends it so: compressed when compression was negotiated
// and the event has a compressed frame, else plain. plain is the plain
// frame's length, for the tally.
func (s *session) eventFrame(m *hub.Message) (f hub.Frame, plain int) {
	if s.deflate {
		f = m.Frame(deflateFormat)
	}
	if f.Len() > 0 {
		return f, eventFrameLen(m)
	}
	f = m.Frame(eventFormat)
	return f, f.Len()
}

// TryWrite writes m's frame from the hub's dispatcher when the socket
// takes it at once (hub.DirectWriter). A delta is left to WriteBatch: its
// frame depends on what the connection was sent before.
func (s *session) TryWrite(m *hub.Message) (written, rest bool) {
	if s.bases.Active(hub.Item{Msg: m, Live: true}) {
		return false, false
	}
	f, plain := s.eventFrame(m)
	if written, rest = s.conn.TryWrite(f.Head, f.Body); written {
		s.h.frames.Add(1)
		var tally frameTally
		tally.add(f.Len(), plain)
		s.stats.record(tally)
	}
	return written, rest
}

// Flush sends the rest of a frame TryWrite began (hub.DirectWriter).
func (s *session) Flush() error {
	return s.conn.Flush(time.Now().Add(s.h.opts.WriteTimeout))
}

// deltaFrame sets head and body to it's event frame with a delta in place
// of its data (hub.Bases), and reports whether it did: else the event goes
// whole, like any other. The head is built in scratch.
func (s *session) deltaFrame(it hub.Item, scratch *[]byte, head, body *[]byte) bool {
	env, isDelta := s.bases.Envelope(it)
	if !isDelta {
		return false
	}
	*scratch = appendEventHead((*scratch)[:0], env)
	*head, *body = *scratch, env[1:]
	return true
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
	case errors.Is(err, errInflate):
		return websocket.StatusInvalidFramePayloadData, "invalid compressed data"
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
	s.conn.SetWriteTimeout(closeTimeout)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = closeHandshake(s.ws, s.conn, code, reason)
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
