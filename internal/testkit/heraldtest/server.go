package heraldtest

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/heraldpush/herald/server"
)

// Start runs a server with c in the test's process until the test ends:
// New, then Serve until the node is stopped, which starts the shutdown
// (Shutdown, within c.ShutdownTimeout). An empty Addr is a free port on
// loopback; unless c has a Logger, the log, at level info, is the node's
// Logs.
func Start(t testing.TB, c server.Config) *Node {
	t.Helper()
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	return Run(t, func(ctx context.Context, logs io.Writer, ready func(string)) error {
		if c.Logger == nil {
			c.Logger = slog.New(slog.NewTextHandler(logs, nil))
		}
		srv, err := server.New(c)
		if err != nil {
			return err
		}
		ready(srv.Addr())
		return srv.Serve(ctx)
	})
}
