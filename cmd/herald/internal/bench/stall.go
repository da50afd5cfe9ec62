package bench

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Stalled connections (Config.Stall) stand for a client that stops reading:
// a frozen tab, a phone that lost its radio with the socket still open.
// Each subscribes to every topic of the run, so it gets the most traffic
// there is, and then never reads again: its receive window fills, the
// server's writes to it block, and its queue grows until the server drops
// it as a slow consumer. What the run measures is whether the other
// subscribers notice.

// stallReceiveBuffer is a stalled connection's SO_RCVBUF. Small, so that
// its window fills after kilobytes rather than megabytes: the server sees
// the same stall from a client with a larger buffer, only later.
const stallReceiveBuffer = 4 << 10

// stallCheckTimeout bounds the check, at the end of a run, of whether the
// server has closed a stalled connection: reading it to the end must not
// take longer. It matters only for a connection the server kept, which
// then delivers its backlog and falls silent.
const stallCheckTimeout = 5 * time.Second

// openStalled opens cfg.Stall stalled connections over srcs, alternating
// WebSocket and SSE when the transport is mixed, and returns those that
// subscribed; a failure to open one is recorded as an error
// ("stall_connect…").
func (r *run) openStalled(ctx context.Context, srcs []source) []net.Conn {
	pattern := r.cfg.Prefix + ".>"
	var conns []net.Conn
	for i := range r.cfg.Stall {
		kind := r.cfg.Transport
		if kind == "mixed" {
			kind = [2]string{"ws", "sse"}[i%2]
		}
		base := srcs[i%len(srcs)].dialer
		d := *base
		d.Control = func(network, address string, c syscall.RawConn) error {
			if err := base.Control(network, address, c); err != nil {
				return err
			}
			return setReceiveBuffer(c, stallReceiveBuffer)
		}
		conn, err := r.dialStalled(ctx, kind, &d, pattern)
		if err != nil {
			if ctx.Err() == nil {
				r.fail("stall_" + connectErrorKind(err))
			}
			continue
		}
		conns = append(conns, conn)
	}
	return conns
}

// dialStalled opens one connection subscribed to pattern and returns it
// with nothing read past the subscription's answer.
func (r *run) dialStalled(ctx context.Context, kind string, d *net.Dialer, pattern string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "sse" {
		c, err := dialSSE(ctx, r, &subscriber{}, d, pattern, "")
		if err != nil {
			return nil, err
		}
		return c.(*sseSub).conn, nil
	}
	c, err := dialWS(ctx, d, r.cfg.TLS, r.cfg.URL, wsOptions{bufSize: idleBufferSize})
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(ctx, pattern, ""); err != nil {
		c.Close()
		return nil, err
	}
	return c.conn, nil
}

// closedStalled reports how many of conns the server has closed, and
// closes them all. Each is read to its end: what the server wrote before
// closing it comes first, then the end of the stream; a connection the
// server kept goes quiet instead, until stallCheckTimeout.
func closedStalled(conns []net.Conn) int {
	var mu sync.Mutex
	var wg sync.WaitGroup
	closed := 0
	deadline := time.Now().Add(stallCheckTimeout)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			_ = c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			if !errors.Is(err, os.ErrDeadlineExceeded) { // the end of the stream, or a reset
				mu.Lock()
				closed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return closed
}
