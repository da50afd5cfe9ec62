//go:build unix

package trywrite

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/tcppair"
)

// TestTry: a write the socket takes in part keeps the rest, which goes
// out before anything else; one it cannot take at all writes nothing; a
// closed socket is an error; TLS and other conns get no Conn.
func TestTry(t *testing.T) {
	// Buffers too small for 128 KiB.
	server, client := tcppair.New(t, 8<<10, 16<<10)
	w := New(server)
	if w == nil {
		t.Fatal("no Conn for a TCP socket")
	}
	payload := make([]byte, 128<<10)
	_, _ = rand.Read(payload)
	written, err := w.Try(payload)
	if !written || err != nil {
		t.Fatalf("Try: written %v, err %v; want the part that fits written", written, err)
	}
	if n := len(w.Rest()); n == 0 || n >= len(payload) {
		t.Fatalf("rest of %d bytes of %d, want the part that did not fit", n, len(payload))
	}
	if written, err := w.Try([]byte("x")); written || err != nil {
		t.Fatalf("Try with a rest held: written %v, err %v; want nothing written", written, err)
	}

	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(payload))
		_, _ = io.ReadFull(client, b)
		got <- b
	}()
	if _, err := server.Write(w.Rest()); err != nil {
		t.Fatal(err)
	}
	w.Clear()
	select {
	case b := <-got:
		if !bytes.Equal(b, payload) {
			t.Fatal("the bytes read are not the bytes written")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the payload did not arrive")
	}

	// A full send buffer takes nothing: fill it, drop the rest (the
	// client reads no more), and try again.
	if written, err := w.Try(payload); !written || err != nil || len(w.Rest()) == 0 {
		t.Fatalf("Try to fill the buffer: written %v, err %v, rest %d", written, err, len(w.Rest()))
	}
	w.Clear()
	if written, err := w.Try(payload[:100]); written || err != nil {
		t.Fatalf("Try on a full buffer: written %v, err %v; want nothing written", written, err)
	}

	server.Close()
	if written, err := w.Try(payload[:100]); written || err == nil {
		t.Fatalf("Try on a closed socket: written %v, err %v; want an error", written, err)
	}

	if New(tls.Client(client, &tls.Config{})) != nil {
		t.Fatal("a Conn for TLS, which must write through tls.Conn")
	}
	p1, p2 := net.Pipe()
	defer p1.Close()
	defer p2.Close()
	if New(p1) != nil {
		t.Fatal("a Conn for a net.Pipe")
	}
}
