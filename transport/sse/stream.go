package sse

import (
	"errors"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/heraldpush/herald/hub"
)

// serveStream writes the stream headers, the retry hint and then every item
// the hub queues for c until one side ends. It runs on the request's
// goroutine, the only one that touches w.
func (h *Handler) serveStream(w http.ResponseWriter, r *http.Request, c *hub.Client) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Accel-Buffering", "no")
	if r.ProtoMajor == 1 {
		// Connection-specific headers are forbidden in HTTP/2 and 3 (RFC 9113 §8.2.2).
		hdr.Set("Connection", "keep-alive")
	}
	w.WriteHeader(http.StatusOK)

	s := &writer{w: w, rc: http.NewResponseController(w), timeout: h.opts.WriteTimeout, deadlines: true}
	if err := s.write(h.retry); err != nil {
		h.writeFailed(c, s, err)
		return
	}

	c.Serve(&stream{h: h, c: c, writer: s}, &h.stream, r.Context().Done())
}

// stream is the hub.BatchWriter of a stream served through the
// ResponseWriter, on the request's goroutine.
type stream struct {
	h *Handler
	c *hub.Client
	*writer
	bases hub.Bases // the writer's: what deltas are made from
}

// WriteBatch frames items and writes them.
func (s *stream) WriteBatch(items []hub.Item) error { return writeItems(items, &s.bases, s.write) }

// KeepAlive sends a heartbeat.
func (s *stream) KeepAlive() error { return s.write(pingFrame) }

// Finish classifies why the stream ended; the request's return ends it.
func (s *stream) Finish(end hub.End) {
	switch {
	case end.Closed != nil:
		if s.h.closedByHub(s.c, end.Closed) {
			s.abort()
		}
	case end.Failed != nil:
		s.h.writeFailed(s.c, s.writer, end.Failed)
	}
}

// closedByHub logs that the hub closed c with err (slow consumer, shutdown
// or a broker failure: its queue is gone, and ending the stream makes the
// client reconnect with its last id). It reports whether the connection is
// to be reset rather than ended cleanly: a slow consumer's socket may hold
// a backlog it has not read.
func (h *Handler) closedByHub(c *hub.Client, err error) bool {
	h.opts.Logger.Debug("sse: stream closed by hub", "client", c.ID(), "reason", err)
	return errors.Is(err, hub.ErrSlowConsumer)
}

// writeFailed classifies a failed write. A deadline means the client stopped
// reading: it is failed as a slow consumer (counted in hub.Stats). Anything
// else is a connection that went away. HTTP/2 reports an expired deadline
// as a reset stream, hence the check of the clock as well as of the error.
func (h *Handler) writeFailed(c *hub.Client, s *writer, err error) {
	if isTimeout(err) || s.expired() {
		c.Fail(hub.ErrSlowConsumer)
		h.opts.Logger.Debug("sse: write deadline passed, dropping slow consumer", "client", c.ID())
		return
	}
	h.opts.Logger.Debug("sse: write failed", "client", c.ID(), "err", err)
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// writer sends whole batches: one deadline, one Write, one Flush each.
// It is owned by the request goroutine and not safe for concurrent use.
type writer struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	timeout   time.Duration
	deadlines bool      // false once the ResponseWriter said it cannot set them
	deadline  time.Time // of the last write
}

// write sends b under the write deadline. The deadline is moved only when
// less than half of the timeout is left: moving it is a timer update in the
// runtime poller (and a trip through every ResponseWriter wrapper), a
// noticeable cost when a busy stream writes a batch per event. A write still
// never gets more than the timeout, nor less than half of it.
func (s *writer) write(b []byte) error {
	if s.deadlines {
		if now := time.Now(); s.deadline.Sub(now) < s.timeout/2 {
			s.deadline = now.Add(s.timeout)
			if err := s.rc.SetWriteDeadline(s.deadline); err != nil {
				if !errors.Is(err, http.ErrNotSupported) {
					return err
				}
				s.deadlines = false
			}
		}
	}
	if _, err := s.w.Write(b); err != nil {
		return err
	}
	return s.rc.Flush()
}

// abort makes the connection close when the handler returns rather than end
// the response cleanly. A slow consumer's socket may still hold a backlog it
// has not read; a clean end would keep that connection open for reuse behind
// it (HTTP/1.1 keep-alive). With the deadline already passed, net/http's
// final write fails and it drops the connection (HTTP/2: the stream).
func (s *writer) abort() {
	if s.deadlines {
		_ = s.rc.SetWriteDeadline(time.Now())
	}
}

// expired reports whether the last write's deadline has passed.
func (s *writer) expired() bool {
	return s.deadlines && !time.Now().Before(s.deadline)
}

// writeItems frames items and hands them to write, through a pooled buffer
// held only for that call: in one call, unless an event's envelope is
// large (directBody), which is written from the shared message in a call
// of its own instead of being copied. bases is the connection's, for deltas.
func writeItems(items []hub.Item, bases *hub.Bases, write func([]byte) error) error {
	bp := getBuf()
	b := (*bp)[:0]
	var err error
	for _, it := range items {
		if it.Reset != nil {
			bases.Reset()
		}
		if it.Msg == nil {
			b = appendItem(b, it)
			continue
		}
		f := it.Msg.Frame(frameFormat)
		if bases.Active(it) {
			// The head (id, event) is the message's; only the envelope differs.
			f.Body, _ = bases.Envelope(it)
		}
		if len(f.Body) < directBody {
			b = f.AppendTo(b)
			continue
		}
		if err = write(append(b, f.Head...)); err != nil {
			break
		}
		if err = write(f.Body); err != nil {
			break
		}
		b = append(b[:0], f.Tail...)
	}
	if err == nil && len(b) > 0 {
		err = write(b)
	}
	putBuf(bp, b)
	return err
}
