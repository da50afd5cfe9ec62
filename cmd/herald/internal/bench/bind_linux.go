package bench

import (
	"syscall"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (Linux 4.2+).
const ipBindAddressNoPort = 24

// bindNoPort defers the choice of a source port from bind to connect. A
// dialer bound to a source address otherwise has bind search for a port
// free for every destination, which grows slow as tens of thousands are in
// use and dominated the client's CPU during a connection ramp; connect
// picks one free for this destination from its hash at once.
func bindNoPort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// setReceiveBuffer sets the socket's SO_RCVBUF to n bytes (the kernel
// doubles it for its own bookkeeping). Set before connect, it also bounds
// the window the connection starts with.
func setReceiveBuffer(c syscall.RawConn, n int) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
	})
	if err != nil {
		return err
	}
	return serr
}
