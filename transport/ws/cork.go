package ws

import (
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldpush/herald/internal/trywrite"
)

// coder/websocket flushes its buffered writer after every message, which
// would be one write() per frame. corkConn sits under the connection and
// turns a batch of frames into one write: the writer corks the connection,
// writes every frame of the batch (each lands in memory), and uncorks, which
// sends them all with a single Write under the batch deadline. Measured
// against writing each message with coder/websocket's Conn.Write, flushed
// one by one: 6.9 to 8.9 times the server CPU per delivery without the cork,
// and subscribers dropped as slow consumers at 500k deliveries/s
// (docs/benchmarks.md, "Writing beside coder/websocket").
const (
	// corkLimit is the most a cork buffer holds: a batch larger than this is
	// sent in several writes, and a single write of at least this size goes
	// straight to the socket instead of being copied. It keeps pooled buffers
	// at a size worth pooling.
	corkLimit = 64 << 10
	// corkInitial is the capacity of a fresh cork buffer.
	corkInitial = 4 << 10
	// closeFlushTimeout bounds the last write Close makes for bytes still
	// corked (typically a close frame coder/websocket wrote mid-batch).
	closeFlushTimeout = time.Second
)

// corkPool holds cork buffers between batches, so an idle connection holds none.
var corkPool = sync.Pool{New: func() any {
	b := make([]byte, 0, corkInitial)
	return &b
}}

// corkConn is the net.Conn under a coder/websocket Conn: its write side
// coalesces batches (this file; Write, where coder/websocket's control frames
// arrive, is in library.go), its read side lets an idle connection wait on a
// small stack (read.go).
//
// Concurrency: Write, Cork, Uncork, Close and Abort are safe for concurrent
// use; mu serializes them, and is held across the socket write so bytes reach
// the socket in the order they were written. coder/websocket serializes whole
// frames itself, so frames never interleave. See read.go for the read side.
type corkConn struct {
	net.Conn
	writes *atomic.Int64 // the Handler's count of socket writes

	// Read side (read.go, inflate.go).
	rmu       sync.Mutex // guards early and inflated
	early     []byte     // bytes read from the socket but not yet returned by Read
	deflate   bool       // permessage-deflate was negotiated; set before the first Read
	readLimit int64      // the Handler's ReadLimit, for inflated messages
	inflated  *inflation // an inflated message not yet returned by Read
	frame     frameCutter
	raw       syscall.RawConn       // nil where the socket cannot be probed
	probe     func(fd uintptr) bool // WaitReadable's readiness test, allocated once
	peek      func(fd uintptr) bool // readable's test, allocated once
	ready     bool                  // peek's answer
	nonblock  atomic.Bool           // see SetNonblocking
	handshake atomic.Bool           // see StartHandshake

	closing  atomic.Bool    // Close or Abort was called: no new socket write starts
	timeout  atomic.Int64   // deadline of a write outside a batch, as a time.Duration
	mu       sync.Mutex     // guards the fields below and the socket's write side
	corked   bool           // a batch is being written: Write appends to buf
	buf      *[]byte        // from corkPool, only while corked and written to
	due      time.Time      // deadline of the current batch's writes
	armed    time.Time      // the write deadline set on the socket
	err      error          // the first failed socket write; every later write fails with it
	closed   bool           // Close has run
	closeOut bool           // coder/websocket has written a close frame: no data frame may follow
	tw       *trywrite.Conn // TryWrite's, made by its first call; its Rest goes out before any other write
	abort    sync.Once      // closes the socket once
	abortErr error          // result of closing the socket
}

// newCorkConn wraps c. early holds the bytes net/http read from the client
// beyond the handshake before the hijack (a client may send its first
// message right behind the handshake); Read returns them first.
func newCorkConn(c net.Conn, early []byte, writeTimeout time.Duration, writes *atomic.Int64) *corkConn {
	cc := &corkConn{Conn: c, early: early, writes: writes}
	cc.timeout.Store(int64(writeTimeout))
	cc.initProbe()
	return cc
}

// SetWriteTimeout changes the deadline of writes made outside a batch
// (pings, pongs, close frames).
func (c *corkConn) SetWriteTimeout(d time.Duration) { c.timeout.Store(int64(d)) }

// Cork starts a batch: writes are held in memory until Uncork. Every socket
// write made for the batch must finish before due.
func (c *corkConn) Cork(due time.Time) {
	c.mu.Lock()
	c.corked = true
	c.due = due
	c.mu.Unlock()
}

// Uncork ends the batch, sending what it holds in one write, and releases the
// batch's buffer. It returns the first write error of the batch, if any.
func (c *corkConn) Uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	if c.buf == nil {
		return c.err
	}
	if b := *c.buf; len(b) > 0 && c.err == nil {
		c.writeLocked(b, c.due)
	}
	c.releaseLocked()
	return c.err
}

// WriteFrame writes one complete data frame, head then body, from the
// session's writer: in the batch while corked, else straight to the socket.
// Holding the lock across both parts keeps a control frame from landing
// between them. It fails once a close frame has been written, as the
// protocol allows no data after it.
func (c *corkConn) WriteFrame(head, body []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closeOut {
		return net.ErrClosed
	}
	if _, err := c.appendLocked(head); err != nil {
		return err
	}
	if len(body) == 0 {
		return nil
	}
	_, err := c.appendLocked(body)
	return err
}

// appendLocked is Write without the close-frame bookkeeping. c.mu is held on entry.
func (c *corkConn) appendLocked(p []byte) (int, error) {
	if c.closed {
		return 0, net.ErrClosed
	}
	if c.err != nil {
		return 0, c.err
	}
	if !c.corked {
		return c.writeLocked(p, time.Now().Add(time.Duration(c.timeout.Load())))
	}
	if c.buf == nil {
		c.buf = corkPool.Get().(*[]byte)
	}
	b := *c.buf
	if len(b) > 0 && len(b)+len(p) > corkLimit {
		if _, err := c.writeLocked(b, c.due); err != nil {
			return 0, err
		}
		b = b[:0]
	}
	if len(p) >= corkLimit {
		*c.buf = b
		return c.writeLocked(p, c.due)
	}
	*c.buf = append(b, p...)
	return len(p), nil
}

// writeLocked writes p to the socket with deadline due, recording a failure.
// c.mu is held on entry.
func (c *corkConn) writeLocked(p []byte, due time.Time) (int, error) {
	// Moving the socket's deadline is a timer update in the runtime poller,
	// a noticeable cost when a busy connection writes a batch per event. So
	// the deadline moves only when due is earlier than the one set (a close
	// handshake's shorter bound), or when less than half of the budget due
	// asks for is left: a write never gets more time than its caller asked
	// for, nor less than half of it.
	if now := time.Now(); due.Before(c.armed) || c.armed.Sub(now) < due.Sub(now)/2 {
		if err := c.Conn.SetWriteDeadline(due); err != nil {
			c.err = err
			return 0, err
		}
		c.armed = due
	}
	// Checked after setting the deadline: either Close's shorter deadline
	// comes later and bounds this write, or closing is already visible here.
	if c.closing.Load() {
		c.err = net.ErrClosed
		return 0, c.err
	}
	if err := c.sendRestLocked(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	return c.sendLocked(p)
}

// sendRestLocked sends what TryWrite's socket did not take, under the
// deadline already set. c.mu is held on entry.
func (c *corkConn) sendRestLocked() error {
	if c.tw == nil || len(c.tw.Rest()) == 0 {
		return nil
	}
	if _, err := c.sendLocked(c.tw.Rest()); err != nil {
		return err
	}
	c.tw.Clear()
	return nil
}

// TryWrite writes one data frame, head then body, for hub.DirectWriter:
// in one write that does not wait, and only when no batch is open and no
// other write holds the connection (it takes mu by TryLock). What the
// socket does not take goes out first with the next write; rest says
// there is some, for Flush.
func (c *corkConn) TryWrite(head, body []byte) (written, rest bool) {
	if len(head)+len(body) > corkLimit || !c.mu.TryLock() {
		return false, false
	}
	defer c.mu.Unlock()
	if c.corked || c.closed || c.closeOut || c.err != nil || c.closing.Load() {
		return false, false
	}
	if c.tw == nil {
		if c.tw = trywrite.New(c.Conn); c.tw == nil {
			return false, false // TLS
		}
	}
	bp := corkPool.Get().(*[]byte)
	b := append(append((*bp)[:0], head...), body...)
	written, err := c.tw.Try(b)
	*bp = b[:0]
	corkPool.Put(bp)
	if err != nil {
		c.err = err
		return false, false
	}
	if written {
		c.writes.Add(1)
	}
	return written, written && len(c.tw.Rest()) > 0
}

// Flush sends what TryWrite's socket did not take, by due.
func (c *corkConn) Flush(due time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return net.ErrClosed
	case c.err != nil:
		return c.err
	case c.tw == nil || len(c.tw.Rest()) == 0:
		return nil
	}
	_, err := c.writeLocked(nil, due)
	return err
}

// sendLocked writes p under the deadline already set. c.mu is held on entry.
func (c *corkConn) sendLocked(p []byte) (int, error) {
	c.writes.Add(1)
	n, err := c.Conn.Write(p)
	if err != nil {
		c.err = err
	}
	return n, err
}

// releaseLocked returns the batch buffer to the pool. c.mu is held on entry.
func (c *corkConn) releaseLocked() {
	if c.buf == nil {
		return
	}
	if cap(*c.buf) <= 2*corkLimit {
		*c.buf = (*c.buf)[:0]
		corkPool.Put(c.buf)
	}
	c.buf = nil
}

// Close sends what a batch still holds, bounded by closeFlushTimeout, and
// closes the socket. coder/websocket may write a close frame (its answer to
// the peer's close, or 1009) while a batch is open; without the flush that
// frame would be lost. A write already in flight is cut short by the same
// bound rather than waited for.
func (c *corkConn) Close() error {
	c.closing.Store(true)
	due := time.Now().Add(closeFlushTimeout)
	_ = c.Conn.SetWriteDeadline(due)
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		held := c.buf != nil && len(*c.buf) > 0
		if (held || c.tw != nil && len(c.tw.Rest()) > 0) && c.err == nil {
			// Set again: a write that held mu may have set its own deadline.
			if c.Conn.SetWriteDeadline(due) == nil && c.sendRestLocked() == nil && held {
				_, _ = c.sendLocked(*c.buf)
			}
		}
		c.releaseLocked()
	}
	c.mu.Unlock()
	return c.Abort()
}

// Abort closes the socket at once, failing any read or write in flight.
func (c *corkConn) Abort() error {
	c.closing.Store(true)
	c.abort.Do(func() { c.abortErr = c.Conn.Close() })
	return c.abortErr
}

// Closing reports whether Close or Abort was called: a write that failed
// after that failed because of it, not because the peer is slow.
func (c *corkConn) Closing() bool { return c.closing.Load() }
