//go:build !linux

package bench

import "net"

// tcpBytesReceived reports false: TCP_INFO's byte counts are Linux's.
func tcpBytesReceived(c net.Conn) (uint64, bool) { return 0, false }
