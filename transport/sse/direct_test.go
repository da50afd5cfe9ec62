package sse_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// TestDirectWriteInPart: events the hub's dispatcher writes itself to a
// stream whose socket takes only part of each (a small send buffer, a
// client that reads in bursts) arrive byte for byte and in order, with
// the writer's frames after each rest, never inside it.
func TestDirectWriteInPart(t *testing.T) {
	f := newFixtureOn(t, hub.Options{QueueBytes: 1 << 20}, sse.Options{}, func(l net.Listener) net.Listener { return smallSendBuffers{l} })
	conn := rawGet(t, f.srv.Listener.Addr().String(), "/v1/events?topic=part.t")
	// Not below the loopback MSS (64 KiB), which would hold back the
	// receiver's window updates and make the test slow.
	if err := conn.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("response %v, %v", resp, err)
	}
	for range 2 { // the retry hint and the blank line after it
		if _, err := br.ReadString('\n'); err != nil {
			t.Fatal(err)
		}
	}
	readStart(t, br)
	publish := func(data string) string {
		t.Helper()
		ms, err := f.hub.Publish(context.Background(), hub.Draft{Topic: "part.t", Data: json.RawMessage(`"` + data + `"`)})
		if err != nil {
			t.Fatal(err)
		}
		return expectFrame(ms[0])
	}
	read := func(want string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatalf("failed to read frames: %v", err)
		}
		if string(got) != want {
			t.Fatalf("frames differ from the events' frames (%d bytes)", len(want))
		}
	}
	// Small events to a client that reads each: written by the dispatcher
	// whenever the writer is idle, which on a loaded machine may take a
	// few events.
	for deadline := time.Now().Add(10 * time.Second); f.hub.Stats().DirectWrites < 10; {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events written by the dispatcher, want 10", f.hub.Stats().DirectWrites, f.hub.Stats().Delivered)
		}
		read(publish("small"))
	}
	// 60 KiB events in groups of five that the client reads only once all
	// are published: the sockets' buffers hold two or three, so the
	// dispatcher writes the first ones whole, one in part, and the writer
	// the rest of that one and the others once the client reads.
	var want strings.Builder
	for i := range 15 {
		want.WriteString(publish(strings.Repeat(string(rune('a'+i%26)), 60<<10)))
		if i%5 == 4 {
			read(want.String())
			want.Reset()
		}
	}
	t.Logf("%d of %d events written by the dispatcher", f.hub.Stats().DirectWrites, f.hub.Stats().Delivered)
}
