package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/testkit/heraldtest"
	"github.com/heraldpush/herald/internal/testkit/wait"
	"github.com/heraldpush/herald/server"
)

// TestHistoryBytesBoundsHeap publishes 1 GB in events of 1 MB to a server
// with HistoryBytes 64 MiB, with an SSE and a WebSocket subscriber
// receiving every event, and checks along the way that the live heap
// (after GC) stays within the bound plus a small constant: a retained event
// costs its size once, not once per representation (data, envelope, SSE
// and WebSocket frames). Under -race, which makes the publishing slow, it
// publishes 64 MB with a bound of 4 MiB. A client resuming from an evicted
// cursor is told history_gone, as with the count bound.
func TestHistoryBytesBoundsHeap(t *testing.T) {
	const (
		eventData = 1_000_000
		slack     = 8 << 20 // the server's pools and buffers, the clients, the runtime
	)
	events, bound := 1024, 64<<20
	if raceEnabled {
		events, bound = 64, 4<<20
	}
	in := start(t, server.Config{HistoryBytes: bound, HistorySize: 100000, QueueBytes: 32 << 20,
		WriteTimeout: time.Minute})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	var readers sync.WaitGroup
	defer readers.Wait()
	defer cancel() // ends the readers before they are waited for
	var sseEvents, wsEvents atomic.Int64
	var firstID atomic.Pointer[string]
	sse := openSSE(t, ctx, in, "")
	readers.Add(1)
	go func() {
		defer readers.Done()
		readSSE(sse, func(id, _ string) {
			if sseEvents.Add(1) == 1 {
				firstID.Store(&id)
			}
		})
	}()
	ws := dialWS(t, ctx, in)
	ws.SetReadLimit(2 << 20)
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
			wsEvents.Add(1)
		}
	}()

	body := []byte(`{"topic":"mem.big","data":"` + strings.Repeat("x", eventData-2) + `"}`)
	base := liveHeap()
	for i := 1; i <= events; i++ {
		resp, err := in.Client.Post(in.URL+"/v1/publish", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("publish %d: status %d", i, resp.StatusCode)
		}
		if i%(events/16) != 0 {
			continue
		}
		// Once the subscribers have everything, only the history holds events.
		wait.For(t, time.Minute, "the subscribers to receive event "+strconv.Itoa(i), func() bool {
			return sseEvents.Load() == int64(i) && wsEvents.Load() == int64(i)
		})
		heap := liveHeap()
		t.Logf("after %d events: live heap %d MiB (%d MiB before publishing)", i, heap>>20, base>>20)
		if heap > base+uint64(bound+slack) {
			t.Fatalf("after %d events of %d bytes: live heap %d MiB, more than %d MiB above the %d MiB before publishing",
				i, eventData, heap>>20, (bound+slack)>>20, base>>20)
		}
	}

	// The first event is long gone: resuming from it is a reset.
	resumed := openSSE(t, ctx, in, *firstID.Load())
	readers.Add(1)
	reset := make(chan string, 1)
	go func() {
		defer readers.Done()
		readSSE(resumed, func(_, event string) {
			select {
			case reset <- event:
			default:
			}
		})
	}()
	select {
	case got := <-reset:
		if !strings.Contains(got, "event: herald.reset") || !strings.Contains(got, `"reason":"history_gone"`) {
			t.Fatalf("resuming from an evicted cursor: %q, want a herald.reset with history_gone", got)
		}
	case <-ctx.Done():
		t.Fatal("resuming from an evicted cursor: nothing received")
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC() // the first may leave objects that finalizers freed
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// openSSE opens a stream of every topic, resuming after lastID if set.
func openSSE(t *testing.T, ctx context.Context, in *heraldtest.Node, lastID string) io.ReadCloser {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, in.URL+"/v1/events?topic=>", nil)
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := (&http.Client{Transport: in.Client.Transport}).Do(req)
	if err != nil {
		t.Fatalf("GET /v1/events: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		t.Fatalf("GET /v1/events: status %d", resp.StatusCode)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp.Body
}

// readSSE calls fn with the id and the head of each event of the stream (up
// to its first 256 bytes), without holding whole events, until it ends.
func readSSE(r io.Reader, fn func(id, head string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	var id, head []byte
	atStart := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		if len(head) < 256 {
			head = append(head, line[:min(len(line), 256-len(head))]...)
		}
		if atStart && bytes.HasPrefix(line, []byte("id: ")) {
			id = append(id[:0], bytes.TrimSpace(line[4:])...)
		}
		complete := err == nil
		if complete && atStart && len(line) == 1 { // the blank line ending an event
			if len(id) > 0 && bytes.Contains(head, []byte("\ndata: ")) { // not a stream's start block
				fn(string(id), string(head))
			}
			id, head = id[:0], head[:0]
		}
		atStart = complete
	}
}

// dialWS opens a WebSocket subscribed to every topic.
func dialWS(t *testing.T, ctx context.Context, in *heraldtest.Node) *websocket.Conn {
	t.Helper()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(in.URL, "http")+"/v1/ws", &websocket.DialOptions{
		Subprotocols: []string{"herald.v1"},
		HTTPClient:   &http.Client{Transport: in.Client.Transport},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { c.CloseNow() })
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","ref":"1","topics":[">"]}`)); err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	if _, msg, err := c.Read(ctx); err != nil || !strings.Contains(string(msg), `"ok"`) {
		t.Fatalf("subscribe reply %s, %v", msg, err)
	}
	return c
}
