//go:build unix

package ws

import "syscall"

// initProbe prepares WaitReadable and readable for a socket: a one-byte
// MSG_PEEK that does not block tells whether a read would. It is what lets
// an idle reader wait on a minimal stack: 2.1 KB of stacks per idle
// connection against 5.8 to 8.6 KB waiting in coder/websocket's Read
// (read.go; docs/benchmarks.md, "The idle reader outside coder/websocket").
func (c *corkConn) initProbe() {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return // TLS, or a conn that is not a socket: never probed
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	var b [1]byte
	c.raw = raw
	c.probe = func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	}
	c.peek = func(fd uintptr) bool {
		c.ready = c.probe(fd)
		return true // never wait
	}
}

// readable reports whether a read would return at once. Where the socket
// cannot be probed it says yes, and the read blocks as usual.
func (c *corkConn) readable() bool {
	if c.raw == nil {
		return true
	}
	if err := c.raw.Read(c.peek); err != nil {
		return true // let the read report it
	}
	return c.ready
}
