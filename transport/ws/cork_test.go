package ws

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/hub"
)

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() {
		server.Close()
		client.Close()
	})
	return server, client
}

// readN reads exactly n bytes from c.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func TestCorkConnSendsABatchInOneWrite(t *testing.T) {
	server, client := tcpPair(t)
	var writes atomic.Int64
	cc := newCorkConn(server, nil, time.Second, &writes)

	cc.Cork(time.Now().Add(5 * time.Second))
	var want []byte
	for i := range 100 {
		p := []byte(fmt.Sprintf("frame %03d;", i))
		want = append(want, p...)
		if n, err := cc.Write(p); err != nil || n != len(p) {
			t.Fatalf("corked write: %d, %v", n, err)
		}
	}
	if n := writes.Load(); n != 0 {
		t.Fatalf("%d socket writes while corked, want 0", n)
	}
	if err := cc.Uncork(); err != nil {
		t.Fatal(err)
	}
	if n := writes.Load(); n != 1 {
		t.Fatalf("%d socket writes for the batch, want 1", n)
	}
	if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("peer got %q, want %q", got, want)
	}
	if cc.buf != nil {
		t.Fatal("the batch buffer is still held after Uncork")
	}

	// Uncorked, a write goes straight out (a pong or close frame written by
	// another goroutine between batches).
	if _, err := cc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if got := readN(t, client, 4); string(got) != "pong" || writes.Load() != 2 {
		t.Fatalf("peer got %q after %d writes", got, writes.Load())
	}
}

func TestCorkConnLargeBatches(t *testing.T) {
	server, client := tcpPair(t)
	var writes atomic.Int64
	cc := newCorkConn(server, nil, time.Second, &writes)
	done := make(chan []byte, 1)
	var want []byte

	cc.Cork(time.Now().Add(5 * time.Second))
	small := bytes.Repeat([]byte("s"), 1000)
	for range 100 { // 100 KB: more than one cork buffer
		want = append(want, small...)
		if _, err := cc.Write(small); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte("B"), corkLimit+1) // written through, not copied
	want = append(want, big...)
	go func() {
		b := make([]byte, len(want))
		_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _ := io.ReadFull(client, b)
		done <- b[:n]
	}()
	if _, err := cc.Write(big); err != nil {
		t.Fatal(err)
	}
	if err := cc.Uncork(); err != nil {
		t.Fatal(err)
	}
	if got := <-done; !bytes.Equal(got, want) {
		t.Fatal("peer got the bytes out of order")
	}
	if n := writes.Load(); n < 2 || n > 4 {
		t.Fatalf("%d socket writes for %d bytes, want 2 to 4", n, len(want))
	}
}

func TestCorkConnBatchMissingItsDeadline(t *testing.T) {
	server, _ := tcpPair(t) // the peer never reads
	var writes atomic.Int64
	cc := newCorkConn(server, nil, time.Second, &writes)
	cc.Cork(time.Now().Add(100 * time.Millisecond))
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	var err error
	for i := 0; i < 1000 && err == nil; i++ { // up to 32 MB, far beyond socket buffers
		_, err = cc.Write(chunk)
	}
	if uerr := cc.Uncork(); err == nil {
		err = uerr
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("got %v, want a deadline error", err)
	}
	if cc.Closing() {
		t.Fatal("Closing reports true before Close")
	}
	if _, err := cc.Write([]byte("more")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after a failed one: %v, want the same failure", err)
	}
}

func TestCorkConnCloseSendsWhatTheBatchHolds(t *testing.T) {
	server, client := tcpPair(t)
	var writes atomic.Int64
	cc := newCorkConn(server, nil, time.Second, &writes)
	cc.Cork(time.Now().Add(5 * time.Second))
	if _, err := cc.Write([]byte("close frame")); err != nil {
		t.Fatal(err)
	}
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "close frame" {
		t.Fatalf("peer got %q, %v; want the held bytes then EOF", got, err)
	}
	if _, err := cc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := cc.Uncork(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Uncork after Close: %v", err)
	}
}

func TestCorkConnReadsEarlyBytesFirst(t *testing.T) {
	server, client := tcpPair(t)
	var writes atomic.Int64
	cc := newCorkConn(server, []byte("early,"), time.Second, &writes)
	if _, err := client.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	_ = cc.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(io.LimitReader(cc, 10))
	if err != nil || string(got) != "early,late" {
		t.Fatalf("read %q, %v; want \"early,late\"", got, err)
	}
}

// A drained batch of many events goes out in far fewer socket writes than
// frames, and a lone event on an idle connection goes out at once.
func TestWritesAreCoalesced(t *testing.T) {
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	handler := New(Options{Hub: h})
	srv := httptest.NewServer(handler)
	defer func() {
		h.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := handler.Wait(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"subscribe","topics":["co.t"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || !bytes.HasPrefix(b, []byte(`{"op":"ok"`)) {
		t.Fatalf("subscribe reply %s, %v", b, err)
	}

	// Many events at once.
	const total, batch = 2000, 100
	frames0, writes0 := handler.frames.Load(), handler.writes.Load()
	received := make(chan error, 1)
	go func() {
		var prev uint64
		for i := 0; i < total; i++ {
			_, b, err := c.Read(ctx)
			if err != nil {
				received <- err
				return
			}
			var ev hub.Event
			if err := json.Unmarshal(b, &ev); err != nil || ev.ID.Seq <= prev {
				received <- fmt.Errorf("frame %d: %s: %v", i, b, err)
				return
			}
			prev = ev.ID.Seq
		}
		received <- nil
	}()
	drafts := make([]hub.Draft, batch)
	for i := range drafts {
		drafts[i] = hub.Draft{Topic: "co.t", Data: json.RawMessage(`{"n":1}`)}
	}
	for range total / batch {
		if _, err := h.Publish(ctx, drafts...); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-received; err != nil {
		t.Fatal(err)
	}
	frames, writes := handler.frames.Load()-frames0, handler.writes.Load()-writes0
	t.Logf("%d frames in %d socket writes (%.1f frames per write)", frames, writes, float64(frames)/float64(writes))
	if frames != total {
		t.Fatalf("%d frames written, want %d", frames, total)
	}
	if writes*4 > frames {
		t.Fatalf("%d socket writes for %d frames: not coalesced", writes, frames)
	}

	// One event at a time on an idle connection: no added delay.
	var lat []time.Duration
	for range 20 {
		start := time.Now()
		if _, err := h.Publish(ctx, drafts[0]); err != nil {
			t.Fatal(err)
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	t.Logf("single event latency: median %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 20*time.Millisecond {
		t.Fatalf("median latency of a lone event %v: delivery is delayed", lat[len(lat)/2])
	}
}

// Read never returns bytes past the end of a frame, whatever the frames
// and however they arrive, and returns every byte in order.
func TestReadStopsAtFrameBoundaries(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var stream []byte
	var ends []int // offsets where frames end
	for range 400 {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 0
		case 1:
			n = rng.IntN(126)
		case 2:
			n = 126 + rng.IntN(2000)
		default:
			n = 65536 + rng.IntN(5000)
		}
		stream = append(stream, 0x81)
		masked := rng.IntN(4) != 0
		var mbit byte
		if masked {
			mbit = 0x80
		}
		switch {
		case n < 126 && rng.IntN(8) != 0:
			stream = append(stream, mbit|byte(n))
		case n <= 0xFFFF && rng.IntN(8) != 0:
			stream = append(stream, mbit|126, byte(n>>8), byte(n))
		default: // 127 is valid to parse even for small lengths
			stream = append(stream, mbit|127)
			stream = binary.BigEndian.AppendUint64(stream, uint64(n))
		}
		if masked {
			stream = append(stream, 1, 2, 3, 4)
		}
		for range n {
			stream = append(stream, byte(rng.IntN(256)))
		}
		ends = append(ends, len(stream))
	}

	server, client := tcpPair(t)
	var writes atomic.Int64
	split := rng.IntN(len(stream) / 4)
	cc := newCorkConn(server, slices.Clone(stream[:split]), time.Second, &writes)
	wrng := rand.New(rand.NewPCG(3, 4))
	go func() {
		rest := stream[split:]
		for len(rest) > 0 { // arbitrary segments
			k := min(len(rest), 1+wrng.IntN(9000))
			if _, err := client.Write(rest[:k]); err != nil {
				return
			}
			rest = rest[k:]
		}
	}()
	_ = cc.SetReadDeadline(time.Now().Add(20 * time.Second))
	var got []byte
	next := 0 // index into ends
	sizes := []int{1, 2, 7, 16, 256, 4096, 70000}
	for len(got) < len(stream) {
		p := make([]byte, sizes[rng.IntN(len(sizes))])
		n, err := cc.Read(p)
		if err != nil {
			t.Fatalf("read at %d: %v", len(got), err)
		}
		if n == 0 {
			t.Fatalf("empty read at %d", len(got))
		}
		for next < len(ends) && ends[next] <= len(got) {
			next++
		}
		if end := ends[next]; len(got)+n > end {
			t.Fatalf("read of %d bytes at %d crosses the frame end at %d", n, len(got), end)
		}
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, stream) {
		t.Fatal("bytes differ from what was sent")
	}
}

// After a message or a control frame, the session's reader waits for the
// next one in WaitReadable, not inside coder/websocket's Read, whose deeper
// stack would stay with the idle connection (see read.go).
func TestIdleReaderWaitsOutsideCoderRead(t *testing.T) {
	h, err := hub.New(hub.Options{})
	if err != nil {
		t.Fatal(err)
	}
	handler := New(Options{Hub: h})
	srv := httptest.NewServer(handler)
	defer func() {
		h.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := handler.Wait(ctx); err != nil {
			t.Error(err)
		}
		srv.Close()
		if err := h.Close(ctx); err != nil {
			t.Error(err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()

	// where reports whether the server's reader is parked in WaitReadable
	// and whether it is inside coder/websocket's Read.
	where := func() (waiting, inRead bool) {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			if !strings.Contains(g, "ws.(*session).readLoop") {
				continue
			}
			waiting = waiting || strings.Contains(g, "ws.(*corkConn).WaitReadable")
			inRead = inRead || strings.Contains(g, "websocket.(*Conn).Read")
		}
		return waiting, inRead
	}
	settled := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			waiting, inRead := where()
			if waiting && !inRead {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %s: reader waiting in WaitReadable %v, inside coder's Read %v", what, waiting, inRead)
			}
			time.Sleep(time.Millisecond)
		}
	}
	settled("the handshake")

	if err := c.Write(ctx, websocket.MessageText, []byte(`{"op":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	settled("a message")

	// A control frame alone: coder/websocket answers it and would go on
	// waiting for a data message.
	reading := make(chan error, 1)
	rctx, rcancel := context.WithCancel(ctx)
	go func() { // answers the pong for Ping
		_, _, err := c.Read(rctx)
		reading <- err
	}()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	settled("a ping")
	rcancel()
	<-reading
}

// TestNoDataFrameAfterClose: once coder/websocket has written a close frame,
// the writer's data frames are refused, in a batch or not, so the peer never
// sees data after the close (RFC 6455 section 5.5.1).
func TestNoDataFrameAfterClose(t *testing.T) {
	server, client := tcpPair(t)
	var writes atomic.Int64
	cc := newCorkConn(server, nil, time.Second, &writes)

	cc.Cork(time.Now().Add(5 * time.Second))
	data := appendTextHeader(nil, 2)
	data = append(data, "hi"...)
	if err := cc.WriteFrame(data, nil); err != nil {
		t.Fatal(err)
	}
	closeFrame := []byte{0x88, 2, 0x03, 0xE9} // close 1001
	if _, err := cc.Write(closeFrame); err != nil {
		t.Fatal(err)
	}
	if err := cc.WriteFrame(data, nil); err == nil {
		t.Fatal("a data frame was accepted after a close frame")
	}
	if err := cc.Uncork(); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, data...), closeFrame...)
	if got := readN(t, client, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("peer got % x, want % x", got, want)
	}
	if err := cc.WriteFrame(data, nil); err == nil {
		t.Fatal("a data frame was accepted after a close frame, uncorked")
	}
}
