//go:build !linux

package bench

import "syscall"

// bindNoPort does nothing where IP_BIND_ADDRESS_NO_PORT does not exist.
func bindNoPort(network, address string, c syscall.RawConn) error { return nil }

// setReceiveBuffer leaves the system's receive buffer elsewhere: a stalled
// connection then takes longer to fill its window.
func setReceiveBuffer(c syscall.RawConn, n int) error { return nil }
