// Package relay is a TCP relay for tests: it forwards connections to a
// server and can break them the way a network does, without the server's
// knowledge.
package relay

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Options configure a Relay.
type Options struct {
	// CutAfter, if positive, cuts every subscriber connection (one whose
	// request starts "GET /v1/ws" or "GET /v1/events") once it has carried
	// CutAfter bytes towards the client. Other requests pass intact.
	CutAfter int64
}

// Relay forwards every connection it accepts to one target. Its methods are
// safe for concurrent use; everything it started ends with the test.
type Relay struct {
	ln     net.Listener
	target string
	o      Options
	cuts   atomic.Int64
	muted  atomic.Bool
	wg     sync.WaitGroup

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]struct{}
}

// Start listens on a random port of 127.0.0.1 and relays to target
// (host:port).
func Start(t testing.TB, target string, o Options) *Relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	r := &Relay{ln: ln, target: target, o: o, conns: map[net.Conn]struct{}{}}
	r.wg.Add(1)
	go r.accept()
	t.Cleanup(func() {
		ln.Close()
		r.Cut()
		r.wg.Wait()
	})
	return r
}

// Addr is the relay's host:port; URL is http://Addr.
func (r *Relay) Addr() string { return r.ln.Addr().String() }
func (r *Relay) URL() string  { return "http://" + r.Addr() }

// Cut closes every relayed connection and returns how many there were
// (each counts once, not per side).
func (r *Relay) Cut() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.conns)
	for c := range r.conns {
		c.Close()
		delete(r.conns, c)
	}
	return n
}

// Down cuts every connection and refuses new ones until Up.
func (r *Relay) Down() {
	r.mu.Lock()
	r.down = true
	r.mu.Unlock()
	r.Cut()
}

// Up accepts connections again after Down.
func (r *Relay) Up() {
	r.mu.Lock()
	r.down = false
	r.mu.Unlock()
}

// Mute drops what the server sends, on every connection, until Unmute,
// while what clients send still reaches it: answers lost on the way.
func (r *Relay) Mute() { r.muted.Store(true) }

// Unmute relays the server's bytes again after Mute. What was dropped
// stays lost.
func (r *Relay) Unmute() { r.muted.Store(false) }

// muting writes to the client unless the relay is muted.
type muting struct {
	r *Relay
	w io.Writer
}

func (m muting) Write(p []byte) (int, error) {
	if m.r.muted.Load() {
		return len(p), nil
	}
	return m.w.Write(p)
}

// Cuts is how many connections CutAfter has cut.
func (r *Relay) Cuts() int64 { return r.cuts.Load() }

func (r *Relay) accept() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		down := r.down
		r.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.serve(c)
		}()
	}
}

func (r *Relay) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", r.target)
	if err != nil {
		return
	}
	defer up.Close()
	r.mu.Lock()
	if r.down {
		r.mu.Unlock()
		return
	}
	r.conns[c] = struct{}{}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, c)
		r.mu.Unlock()
	}()

	limited := false
	if r.o.CutAfter > 0 {
		// The first bytes say what the connection is for.
		head := make([]byte, 64)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.Read(head)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			return
		}
		limited = bytes.HasPrefix(head[:n], []byte("GET /v1/ws")) || bytes.HasPrefix(head[:n], []byte("GET /v1/events"))
		if _, err := up.Write(head[:n]); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		up.Close()
	}()
	if limited {
		if _, err := io.CopyN(c, up, r.o.CutAfter); err == nil {
			r.cuts.Add(1)
		}
	} else {
		_, _ = io.Copy(muting{r, c}, up)
	}
	c.Close()
	up.Close()
	<-done
}
