package sse

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// TestCloseSendsTheRest: a stream closed gracefully (the hub ended it:
// shutdown, a disconnect) right after a direct write the socket took only
// in part sends the rest of that event before it closes, rather than
// ending the stream inside it.
func TestCloseSendsTheRest(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// Together less than the event, so that the socket takes only part.
	if err := server.(*net.TCPConn).SetWriteBuffer(8 << 10); err != nil {
		t.Fatal(err)
	}
	if err := client.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close(context.Background())
	ms, err := h.Publish(context.Background(), hub.Draft{Topic: "rest", Data: json.RawMessage(`"` + strings.Repeat("r", 60<<10) + `"`)})
	if err != nil {
		t.Fatal(err)
	}
	want := string(ms[0].Frame(frameFormat).AppendTo(nil))

	s := &connStream{conn: server, gone: make(chan struct{})}
	written, rest := s.TryWrite(ms[0])
	if !written || !rest {
		t.Fatalf("TryWrite: written %v, rest %v; want a part written and a rest kept", written, rest)
	}
	got := make(chan string, 1)
	go func() {
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		b, _ := io.ReadAll(client)
		got <- string(b)
	}()
	s.close()
	if g := <-got; g != want {
		t.Fatalf("the client read %d bytes before the end of the stream, want the whole event's %d", len(g), len(want))
	}
}
