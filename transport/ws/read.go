package ws

// The read side of corkConn exists for idle memory. A goroutine's stack
// grows while it works (decoding a message, subscribing, writing a batch),
// and the runtime halves a stack only when less than a quarter of it is in
// use, counting an 800-byte reserve. A goroutine waiting on a socket uses
// more than the 224 bytes that leaves of a 4 KiB stack, so a stack that has
// grown to 4 KiB or more never gets back to the minimal 2 KiB: a connection
// that has done anything would idle on a grown stack. Measured with
// TestIdleConnectionMemory (docs/benchmarks.md, "The idle reader outside
// coder/websocket"): 8.6 KB of stacks per idle connection when the reader
// waits in coder/websocket's Read, 5.8 KB when it does so on a fresh
// goroutine, 2.1 KB (the reader's minimal stack alone) with what follows.
// The writer parks, ending its goroutine (session.go), and the reader hands
// over to a fresh goroutine before it waits (readloop.go), outside
// coder/websocket, whose Read blocks deep in its own call chain:
// WaitReadable blocks until the socket is readable without consuming
// anything, on a shallow stack.
//
// That is only correct if nothing of the next message is already buffered
// above the socket, in coder/websocket's bufio.Reader. So Read never returns
// bytes past the end of the frame being read, and coder/websocket reads no
// further than the end of a message (library.go, assumption 2): when it has
// read a whole message, its buffer is empty. Bytes read past a frame
// boundary wait in early, and WaitReadable returns at once while early is
// not empty.
//
// coder/websocket's Read also handles control frames, and after a pong (the
// answer to every keep-alive ping) it would go on waiting for a data message
// deep in its call chain. So while the session's reader is in Read
// (SetNonblocking), a Read between messages with nothing to read fails with
// errWouldBlock instead of waiting: coder/websocket's Read returns it with its
// state intact (library.go, assumption 3), and the reader goes back to
// WaitReadable. Never during a close handshake, which must wait for the
// peer's close frame.
//
// Concurrency: Read is called by one goroutine at a time (coder/websocket's
// read lock); frame is Read's alone. early is also checked by WaitReadable and
// Buffered, from the session's reader between messages while a close
// handshake may be reading, so rmu guards it. WaitReadable and a Read from
// the close handshake exclude each other on the socket's own read lock.

// Read implements net.Conn, returning at most the rest of the current frame.
// On a connection that negotiated permessage-deflate, a compressed message
// is read whole and handed over inflated (inflate.go).
func (c *corkConn) Read(p []byte) (int, error) {
	if c.deflate {
		if n, ok, err := c.readInflated(p); ok {
			return n, err
		}
	}
	return c.readRaw(p)
}

// readRaw is Read on the socket's bytes as they came.
func (c *corkConn) readRaw(p []byte) (int, error) {
	c.rmu.Lock()
	if len(c.early) > 0 {
		n := copy(p, c.early)
		n = c.frame.advance(p[:n])
		c.early = c.early[n:]
		if len(c.early) == 0 {
			c.early = nil
		}
		c.rmu.Unlock()
		return n, nil
	}
	c.rmu.Unlock()
	if c.nonblock.Load() && !c.handshake.Load() && c.frame.between() && !c.readable() {
		return 0, errWouldBlock
	}
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	if k := c.frame.advance(p[:n]); k < n {
		c.rmu.Lock()
		c.early = append(c.early, p[k:n]...)
		c.rmu.Unlock()
		return k, nil // a read error comes back on a later call
	}
	return n, err
}

// Buffered reports whether bytes of the next frame are waiting in memory,
// read from the socket or inflated.
func (c *corkConn) Buffered() bool {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	return len(c.early) > 0 || c.inflated != nil
}

// SetNonblocking turns non-blocking mode on or off (see errWouldBlock).
// The session's reader turns it on around coder/websocket's Read.
func (c *corkConn) SetNonblocking(on bool) { c.nonblock.Store(on) }

// StartHandshake turns non-blocking mode off for good: a close handshake
// is about to read the peer's last frames.
func (c *corkConn) StartHandshake() { c.handshake.Store(true) }

// WaitReadable blocks until Read has something to return without waiting:
// bytes in memory, or a readable socket (data, end of stream or an error).
// It consumes nothing. Where the socket cannot be probed it returns at once.
func (c *corkConn) WaitReadable() error {
	if c.raw == nil || c.Buffered() {
		return nil
	}
	return c.raw.Read(c.probe)
}

// frameCutter follows the WebSocket frames of a byte stream to find where
// each ends, and whether a fragmented message is in progress.
type frameCutter struct {
	n         int    // header bytes seen of the current frame
	size      int    // header length, known once n >= 2
	ext       int    // extended payload length bytes (0, 2 or 8)
	left      uint64 // payload bytes left once the header is complete
	payload   bool   // the header is complete
	first     byte   // the frame's first byte: FIN and opcode
	inMessage bool   // a data frame without FIN was the last data frame
}

// between reports whether the stream is between messages: at a frame
// boundary, with no fragmented message in progress.
func (f *frameCutter) between() bool { return f.n == 0 && !f.payload && !f.inMessage }

// advance consumes b up to the end of the current frame and returns how
// many bytes that is: len(b) if the frame does not end within b.
func (f *frameCutter) advance(b []byte) int {
	for i := 0; i < len(b); {
		if f.payload {
			k := int(min(f.left, uint64(len(b)-i)))
			i += k
			f.left -= uint64(k)
			if f.left == 0 {
				f.end()
				return i
			}
			continue
		}
		c := b[i]
		i++
		switch {
		case f.n == 0:
			f.first = c
		case f.n == 1:
			f.size = 2
			switch l := c & 0x7F; l {
			case 126:
				f.ext = 2
			case 127:
				f.ext = 8
			default:
				f.left = uint64(l)
			}
			f.size += f.ext
			if c&0x80 != 0 {
				f.size += 4 // masking key
			}
		case f.n < 2+f.ext:
			f.left = f.left<<8 | uint64(c)
		}
		f.n++
		if f.n >= 2 && f.n == f.size {
			if f.left == 0 {
				f.end()
				return i
			}
			f.payload = true
		}
	}
	return len(b)
}

// end records the end of the current frame.
func (f *frameCutter) end() {
	if f.first&0x08 == 0 { // a data frame (continuation, text or binary)
		f.inMessage = f.first&0x80 == 0
	}
	*f = frameCutter{inMessage: f.inMessage}
}
