package sse

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/tcppair"
)

// TestCloseSendsTheRest: a stream closed gracefully (the hub ended it:
// shutdown, a disconnect) right after a direct write the socket took only
// in part sends the rest of that event before it closes, rather than
// ending the stream inside it.
func TestCloseSendsTheRest(t *testing.T) {
	// Together less than the event, so that the socket takes only part.
	server, client := tcppair.New(t, 8<<10, 16<<10)
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
