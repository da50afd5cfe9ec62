package ws_test

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestDirectWriteInPart: events the hub's dispatcher writes itself to a
// connection whose socket takes only part of each (a small send buffer,
// a client that reads in bursts) arrive whole and in order, with pings
// and the writer's frames after each rest, never inside it.
func TestDirectWriteInPart(t *testing.T) {
	e := newEnv(t, envOptions{listener: func(l net.Listener) net.Listener { return &smallFirstSendBuffer{Listener: l} }})
	// Buffers not below the loopback MSS (64 KiB), which would hold back
	// the receiver's window updates and make the test slow.
	r := e.rawDial(func(c *net.TCPConn) { _ = c.SetReadBuffer(64 << 10) },
		textFrame(`{"op":"subscribe","ref":"s","topics":["part.t"]}`))
	if f := r.readText(); f.Op != "ok" {
		t.Fatalf("subscribe: got %s, want ok", f)
	}
	check := func(f frame, seq uint64, data string) {
		t.Helper()
		if f.Op != "event" || f.seq(t) != seq || string(f.Data) != `"`+data+`"` {
			t.Fatalf("got %.80s, want event %d with %d bytes of data", f, seq, len(data)+2)
		}
	}
	// Small events to a client that reads each: written by the dispatcher
	// whenever the writer is idle, which on a loaded machine may take a
	// few events.
	for deadline := time.Now().Add(10 * time.Second); e.hub.Stats().DirectWrites < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events written by the dispatcher, want 10", e.hub.Stats().DirectWrites, e.hub.Stats().Delivered)
		}
		m := e.publish("part.t", "small")
		check(r.readText(), m.ID.Seq, "small")
	}
	// 60 KiB events in groups of five that the client reads only once all
	// are published: the sockets' buffers hold two or three, so the
	// dispatcher writes the first ones whole, one in part, and the writer
	// the rest of that one and the others once the client reads.
	var seqs []uint64
	var datas []string
	for i := range 15 {
		data := strings.Repeat(string(rune('a'+i%26)), 60<<10)
		seqs, datas = append(seqs, e.publish("part.t", data).ID.Seq), append(datas, data)
		if i%5 == 4 {
			for j := range seqs {
				check(r.readText(), seqs[j], datas[j])
			}
			seqs, datas = seqs[:0], datas[:0]
		}
	}
	t.Logf("%d of %d events written by the dispatcher", e.hub.Stats().DirectWrites, e.hub.Stats().Delivered)
}
