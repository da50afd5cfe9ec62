package sse

import (
	"bytes"
	"net"
	"net/http"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/trywrite"
)

// An HTTP/1.x stream is served on the hijacked connection rather than
// through net/http, for idle memory: a handler that stays in ServeHTTP keeps
// net/http's per-connection state alive for the life of the stream, its
// 4 KiB read buffer, its 4 KiB and 2 KiB write buffers, the request with its
// headers and context, a background-read goroutine and a handler goroutine
// whose stack has grown through the router (measured at 8,000 idle streams:
// 18 KiB of heap and 10 KiB of stacks per stream). Hijacked, a stream is a
// hub.Client, a socket, a timer and two goroutines on minimal stacks.
//
// The body is delimited by the end of the connection (RFC 9112 §6.3), with
// "Connection: close", as a stream never ends on its own and is never
// followed by another response: every event goes out as the same shared
// bytes, with no chunk framing added per connection. HTTP/2 cannot be
// hijacked and keeps the ResponseWriter path (stream.go); HTTP/1.1 over TLS
// is hijacked like plain HTTP/1.1, as a *tls.Conn.

// parkAfter is how long a writer waits for more work before it parks.
const parkAfter = time.Second

// restFlushTimeout bounds the write with which a graceful close sends the
// rest of a frame a direct write began (TryWrite), so that a stream ended
// by the hub (shutdown, a disconnect) never ends inside an event.
const restFlushTimeout = time.Second

// connStream is one stream on a hijacked connection.
//
// Goroutines, owned by the stream:
//   - the writer (hub.Client.Serve, with the stream as its BatchWriter)
//     drains the client's queue and sends heartbeats. When the stream ends
//     it closes the connection, waits for the reader, closes the client and
//     marks the stream done in the Handler's tracker (Finish): it is the
//     stream's owner. It parks while idle: an idle stream holds no writer
//     goroutine.
//   - the reader (readLoop) waits for the peer to go away. A client sends
//     nothing after its request; anything it does send is discarded.
//
// The writer's fields are used by one writer goroutine at a time, each
// start of one ordered after the end of the last by the client's lock.
type connStream struct {
	h    *Handler
	c    *hub.Client
	conn net.Conn

	gone chan struct{} // closed by the reader when the connection is finished

	deadline time.Time      // of the last write
	aborted  bool           // close the socket at once, with a reset
	bases    hub.Bases      // the writer's: what deltas are made from
	tw       *trywrite.Conn // TryWrite's, made by its first call; its Rest goes out before any other write
}

// serveConn hijacks the connection under w and serves the stream on it
// from goroutines of its own, so ServeHTTP can return. It reports false,
// having written nothing, when w cannot be hijacked (HTTP/2, or a wrapper
// that hides it); the caller then streams through w. On true the stream owns
// c and closes it.
func (h *Handler) serveConn(w http.ResponseWriter, r *http.Request, c *hub.Client) bool {
	if r.ProtoMajor != 1 {
		return false
	}
	// The server's buffers are dropped with the ReadWriter. A client that
	// pipelined a request behind this one gets no answer to it: the stream
	// never ends.
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	s := &connStream{h: h, c: c, conn: conn, gone: make(chan struct{})}
	h.streams.Add()
	// Headers and the retry hint go out from this goroutine, in one write;
	// events queued since Subscribe wait for the writer.
	head := h.appendHeader(make([]byte, 0, 512), w.Header())
	if err := s.write(head); err != nil {
		h.writeConnFailed(s, err)
		s.close()
		c.Close()
		h.streams.Done()
		return true
	}
	go s.readLoop()
	c.Serve(s, &h.conn, s.gone)
	return true
}

// appendHeader appends the status line and headers of a stream (hdr holds
// any set by middleware, CORS for one) and the retry hint.
func (h *Handler) appendHeader(b []byte, hdr http.Header) []byte {
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	hdr.Set("Connection", "close")
	hdr.Del("Content-Length")
	hdr.Del("Transfer-Encoding")
	b = append(b, "HTTP/1.1 200 OK\r\nDate: "...)
	b = time.Now().UTC().AppendFormat(b, http.TimeFormat)
	b = append(b, "\r\n"...)
	var buf bytes.Buffer
	_ = hdr.Write(&buf) // sorted, with values sanitized
	b = append(b, buf.Bytes()...)
	b = append(b, "\r\n"...)
	return append(b, h.retry...)
}

// readLoop waits for the peer to close or the connection to fail, then
// closes gone and restarts a parked writer. Its small buffer keeps its
// stack minimal.
func (s *connStream) readLoop() {
	var buf [128]byte
	for {
		if _, err := s.conn.Read(buf[:]); err != nil {
			close(s.gone)
			s.c.Interrupt()
			return
		}
	}
}

// KeepAlive sends a heartbeat (hub.BatchWriter).
func (s *connStream) KeepAlive() error { return s.write(pingFrame) }

// Finish ends the stream as end calls for (hub.BatchWriter).
func (s *connStream) Finish(end hub.End) {
	if end.Closed != nil && s.h.closedByHub(s.c, end.Closed) {
		s.abort()
	}
	s.finish(end.Failed)
}

// write sends b under the write deadline, which is moved only when less than
// half of the timeout is left (see writer.write), after the rest of a frame
// TryWrite began.
func (s *connStream) write(b []byte) error {
	if now := time.Now(); s.deadline.Sub(now) < s.h.opts.WriteTimeout/2 {
		s.deadline = now.Add(s.h.opts.WriteTimeout)
		if err := s.conn.SetWriteDeadline(s.deadline); err != nil {
			return err
		}
	}
	if s.tw != nil && len(s.tw.Rest()) > 0 {
		if _, err := s.conn.Write(s.tw.Rest()); err != nil {
			return err
		}
		s.tw.Clear()
	}
	if len(b) == 0 {
		return nil
	}
	_, err := s.conn.Write(b)
	return err
}

// tryWriteMax is the largest frame TryWrite copies into one write; a
// larger one is left to the writer, which sends its body from the message.
const tryWriteMax = 64 << 10

// TryWrite writes m's frame from the hub's dispatcher when the socket
// takes it at once (hub.DirectWriter). A delta is left to WriteBatch: its
// frame depends on what the stream was sent before.
func (s *connStream) TryWrite(m *hub.Message) (written, rest bool) {
	f := m.Frame(frameFormat)
	if f.Len() > tryWriteMax || s.bases.Active(hub.Item{Msg: m, Live: true}) {
		return false, false
	}
	if s.tw == nil {
		if s.tw = trywrite.New(s.conn); s.tw == nil {
			return false, false // TLS
		}
	}
	bp := getBuf()
	b := f.AppendTo((*bp)[:0])
	written, err := s.tw.Try(b)
	putBuf(bp, b)
	if err != nil {
		return false, false // the writer's next write fails the same way
	}
	return written, written && len(s.tw.Rest()) > 0
}

// Flush sends the rest of a frame TryWrite began (hub.DirectWriter).
func (s *connStream) Flush() error { return s.write(nil) }

// WriteBatch frames items and writes them (hub.BatchWriter).
func (s *connStream) WriteBatch(items []hub.Item) error { return writeItems(items, &s.bases, s.write) }

// abort makes the close a reset: a slow consumer's socket may hold a
// backlog it has not read, which a graceful close would keep sending.
func (s *connStream) abort() {
	s.aborted = true
	if tc, ok := socket(s.conn).(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
}

// socket returns the connection under TLS, or conn itself.
func socket(conn net.Conn) net.Conn {
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		return tc.NetConn()
	}
	return conn
}

// close closes the connection, first sending the rest of a frame a direct
// write began (within restFlushTimeout). After abort it closes the socket
// under TLS directly: tls.Conn's Close would first queue a close_notify
// alert behind the backlog that the client does not read, and wait up to
// 5 s for it.
func (s *connStream) close() {
	if s.aborted {
		_ = socket(s.conn).Close()
		return
	}
	if s.tw != nil && len(s.tw.Rest()) > 0 {
		if s.conn.SetWriteDeadline(time.Now().Add(restFlushTimeout)) == nil {
			_, _ = s.conn.Write(s.tw.Rest())
		}
		s.tw.Clear()
	}
	_ = s.conn.Close()
}

// finish ends the stream after err (nil: the peer left or the hub ended the
// client): it closes the connection, waits for the reader and releases the
// client.
func (s *connStream) finish(err error) {
	if err != nil {
		s.h.writeConnFailed(s, err)
	}
	s.close()
	<-s.gone
	s.c.Close()
	s.h.streams.Done()
}

// writeConnFailed classifies a failed write as writeFailed does: a missed
// deadline makes the client a slow consumer, whose socket is then reset.
func (h *Handler) writeConnFailed(s *connStream, err error) {
	if isTimeout(err) {
		s.c.Fail(hub.ErrSlowConsumer)
		s.abort()
		h.opts.Logger.Debug("sse: write deadline passed, dropping slow consumer", "client", s.c.ID())
		return
	}
	h.opts.Logger.Debug("sse: write failed", "client", s.c.ID(), "err", err)
}
