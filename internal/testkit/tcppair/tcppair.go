// Package tcppair gives tests the two ends of a real loopback TCP
// connection, optionally with small kernel buffers, so that what a write
// can take at once does not depend on the machine's TCP autotuning
// (megabytes on loopback).
package tcppair

import (
	"net"
	"testing"
	"time"
)

// New returns the two ends of a loopback TCP connection: server's send
// buffer set to sendBuf bytes, client's receive buffer to recvBuf (the
// kernel doubles both; 0 leaves a buffer to autotuning). Both close when
// the test ends.
func New(t testing.TB, sendBuf, recvBuf int) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	server, client = s.(*net.TCPConn), c.(*net.TCPConn)
	t.Cleanup(func() { server.Close(); client.Close() })
	if sendBuf > 0 {
		if err := server.SetWriteBuffer(sendBuf); err != nil {
			t.Fatal(err)
		}
	}
	if recvBuf > 0 {
		if err := client.SetReadBuffer(recvBuf); err != nil {
			t.Fatal(err)
		}
	}
	return server, client
}
