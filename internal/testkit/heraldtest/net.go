package heraldtest

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
)

// FreePort returns a port on 127.0.0.1 that was free a moment ago, for a
// server that must keep its port across a restart.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WaitListening waits until something accepts connections on the port.
func WaitListening(t testing.TB, port int, what string) {
	t.Helper()
	wait.For(t, 10*time.Second, what+" to listen", func() bool {
		c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}
