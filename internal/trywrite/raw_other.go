//go:build !unix

package trywrite

import "net"

type rawConn interface{ Control(func(fd uintptr)) error }

// rawOf: no direct writes on this platform; the connection's writer writes
// everything.
func rawOf(net.Conn) rawConn { return nil }

func (w *Conn) write(uintptr) {}

func wouldBlock(error) bool { return false }
