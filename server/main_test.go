package server_test

import (
	"testing"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/server"
	"go.uber.org/goleak"
)

// TestMain fails the package if a server leaves a goroutine behind after
// its Shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs a server with c in the test's process until the test ends:
// New, then Serve until the node is stopped, which starts the shutdown
// (Shutdown, within c.ShutdownTimeout). An empty Addr is a free port on
// loopback; unless c has a Logger, the log, at level info, is the node's
// Logs.
func start(t *testing.T, c server.Config) *heraldtest.Node {
	t.Helper()
	return heraldtest.Start(t, c)
}
