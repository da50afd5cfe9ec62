//go:build unix

package trywrite

import (
	"errors"
	"net"
	"syscall"
)

type rawConn = syscall.RawConn

// rawOf returns c's descriptor for direct writes: only a TCP or Unix socket
// itself (not TLS over one, which does not expose it).
func rawOf(c net.Conn) rawConn {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// write is the write(2) that Try runs on the descriptor, which Control
// keeps open meanwhile. Go's sockets are non-blocking: a full send buffer
// is EAGAIN, never a wait.
func (w *Conn) write(fd uintptr) {
	for {
		w.n, w.err = syscall.Write(int(fd), w.p)
		if w.err != syscall.EINTR {
			return
		}
	}
}

func wouldBlock(err error) bool { return errors.Is(err, syscall.EAGAIN) }
