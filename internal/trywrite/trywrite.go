// Package trywrite writes to a socket without waiting: one write(2) that
// takes what the socket's send buffer has room for and returns. It is how
// the hub's dispatcher writes an event to an idle connection itself instead
// of waking the connection's writer (hub.DirectWriter), where waking and
// scheduling that goroutine costs about as much as the write.
package trywrite

import (
	"net"
	"slices"
)

// Conn writes to one socket without waiting, and keeps what the socket did
// not take.
//
// Concurrency: a Conn is not safe for concurrent use. Its owner serializes
// Try, Rest and Clear with every other write to the socket (a connection's
// write lock, or the hub's client lock), so that no other write lands
// between a frame's first part and its rest.
type Conn struct {
	raw  rawConn
	p    []byte
	n    int
	err  error
	fn   func(fd uintptr) // Try's write, allocated once: a closure per call would be an allocation per event
	rest []byte
}

// New returns a Conn for c, or nil when c is not a socket this package can
// write to directly: TLS (its records must go through tls.Conn), or a
// platform without non-blocking writes on a raw descriptor.
func New(c net.Conn) *Conn {
	raw := rawOf(c)
	if raw == nil {
		return nil
	}
	w := &Conn{raw: raw}
	w.fn = w.write
	return w
}

// Try writes p with one write(2) that does not wait. It reports written
// false, having written nothing, when the socket's buffer is full or rest
// is still held (which must go first), and the error of a write that
// failed. When the socket took only part of p, it keeps a copy of the rest
// and reports written: the owner must write Rest (waiting, under its
// deadline) before anything else, then call Clear.
func (w *Conn) Try(p []byte) (written bool, err error) {
	if len(w.rest) > 0 || len(p) == 0 {
		return false, nil
	}
	w.p = p
	if err := w.raw.Control(w.fn); err != nil {
		w.p = nil
		return false, err // the socket is closed
	}
	n, err := w.n, w.err
	w.p, w.n, w.err = nil, 0, nil
	switch {
	case err != nil && !wouldBlock(err):
		return false, err
	case n <= 0:
		return false, nil
	case n < len(p):
		w.rest = slices.Clone(p[n:])
	}
	return true, nil
}

// Rest is what the socket did not take of the last frame Try wrote: nil
// unless Try wrote part of one and Clear has not been called since.
func (w *Conn) Rest() []byte { return w.rest }

// Clear drops Rest, once it is written (or the connection has failed).
func (w *Conn) Clear() { w.rest = nil }
