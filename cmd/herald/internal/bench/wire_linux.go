package bench

import (
	"crypto/tls"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpBytesReceived returns the kernel's count of bytes received on c's TCP
// connection (TCP_INFO tcpi_bytes_received: TCP payload, so TLS records
// and WebSocket frames as they crossed the wire, without TCP/IP headers),
// and false where it cannot be read.
func tcpBytesReceived(c net.Conn) (uint64, bool) {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n uint64
	var ierr error
	err = raw.Control(func(fd uintptr) {
		var info *unix.TCPInfo
		info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if ierr == nil {
			n = info.Bytes_received
		}
	})
	return n, err == nil && ierr == nil
}
