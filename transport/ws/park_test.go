package ws_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/transport/ws"
)

// TestIdleConnectionsPark lets connections idle: their writers park,
// leaving one goroutine per connection, and replies and events still reach
// them, each starting a writer again.
func TestIdleConnectionsPark(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{PingInterval: -1}})
	ws.SetParkAfter(e.handler, 20*time.Millisecond)
	base := runtime.NumGoroutine()
	const n = 20
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = e.rawDial(nil, textFrame(`{"op":"subscribe","ref":"s","topics":["park.>"]}`))
		if f := next(t, conns[i]); f.Op != "ok" {
			t.Fatalf("connection %d: subscribe answered %s", i, f)
		}
	}
	// Each connection keeps its reader; its writer has parked. (These
	// clients are raw sockets, with no goroutines of their own.)
	parked := func() bool { return runtime.NumGoroutine()-base <= n+2 }
	wait.For(t, 10*time.Second, "idle connections to park their writers", parked)

	// A reply restarts a parked writer.
	for i, c := range conns {
		if _, err := c.nc.Write(textFrame(`{"op":"ping","ref":"p"}`)); err != nil {
			t.Fatal(err)
		}
		if f := next(t, c); f.Op != "pong" {
			t.Fatalf("connection %d: ping answered %s", i, f)
		}
	}
	// So does an event.
	wait.For(t, 10*time.Second, "writers to park again", parked)
	m := e.publish("park.a", 1)
	for i, c := range conns {
		if f := next(t, c); f.Op != "event" || f.ID != m.ID.String() {
			t.Fatalf("connection %d: got %s, want event %s", i, f, m.ID)
		}
	}
	// The peer leaving ends a parked session promptly.
	wait.For(t, 10*time.Second, "writers to park again", parked)
	for _, c := range conns {
		c.nc.Close()
	}
	wait.For(t, 10*time.Second, "closed connections to end", func() bool { return e.wsClients() == 0 })
}

// TestParkedConnectionsArePinged checks keep-alive pings go on while the
// writer is parked: each due ping starts a writer.
func TestParkedConnectionsArePinged(t *testing.T) {
	e := newEnv(t, envOptions{ws: ws.Options{PingInterval: 100 * time.Millisecond, WriteTimeout: 5 * time.Second}})
	ws.SetParkAfter(e.handler, 10*time.Millisecond)
	c := e.rawDial(nil, textFrame(`{"op":"subscribe","ref":"s","topics":["park.>"]}`))
	if f := next(t, c); f.Op != "ok" {
		t.Fatalf("subscribe answered %s", f)
	}
	// Ten pings over a second: the writer parks between them.
	for i := range 10 {
		op, p, err := c.read(5 * time.Second)
		if err != nil || op != 0x9 {
			t.Fatalf("frame %d: opcode %d %q, %v; want a ping", i, op, p, err)
		}
		if _, err := c.nc.Write(clientFrame(0xA, p)); err != nil {
			t.Fatal(err)
		}
	}
	m := e.publish("park.a", 1)
	if f := next(t, c); f.Op != "event" || f.ID != m.ID.String() {
		t.Fatalf("got %s, want event %s", f, m.ID)
	}
}

// next returns c's next text frame, answering pings on the way.
func next(t *testing.T, c *rawConn) frame {
	t.Helper()
	for {
		op, p, err := c.read(10 * time.Second)
		if err != nil {
			t.Fatalf("raw read: %v", err)
		}
		switch op {
		case 0x1:
			return parseFrame(t, p)
		case 0x9:
			if _, err := c.nc.Write(clientFrame(0xA, p)); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected frame opcode %d payload %q", op, p)
		}
	}
}
