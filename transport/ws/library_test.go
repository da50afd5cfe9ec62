package ws

import (
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/wsframe"
)

// These tests pin the assumptions about coder/websocket listed in
// library.go against the real library, over a real socket, set up as the
// Handler sets it up (upgradeWriter, corkConn). Each failure names the
// assumption that no longer holds.

// recConn sits between a corkConn and the socket and records what
// coder/websocket does with the connection.
type recConn struct {
	*net.TCPConn // SyscallConn too: corkConn probes the socket

	mu     sync.Mutex
	reads  []int    // len(p) of every Read
	writes [][]byte // every Write
	closed bool
}

func (c *recConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	c.reads = append(c.reads, len(p))
	c.mu.Unlock()
	return c.TCPConn.Read(p)
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	return c.TCPConn.Write(p)
}

func (c *recConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.TCPConn.Close()
}

// takeWrites returns the writes recorded since the last call.
func (c *recConn) takeWrites() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.writes
	c.writes = nil
	return w
}

// recHijacker hands net/http's connection to upgradeWriter as a recConn,
// with early as bytes net/http read past the handshake.
type recHijacker struct {
	http.ResponseWriter
	early []byte
	rec   *recConn
}

func (w *recHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.rec = &recConn{TCPConn: c.(*net.TCPConn)}
	r := bufio.NewReader(io.MultiReader(bytes.NewReader(w.early), w.rec))
	if len(w.early) > 0 {
		_, _ = r.Peek(len(w.early))
	}
	return w.rec, bufio.NewReadWriter(r, brw.Writer), nil
}

// libPair is a connection accepted by coder/websocket as the Handler
// accepts it, and the raw client socket at its other end.
type libPair struct {
	ws       *websocket.Conn
	conn     *corkConn
	rec      *recConn
	hijacked bool // upgradeWriter.Hijack ran
	// respExtensions is the Sec-WebSocket-Extensions of the response.
	respExtensions string
	peer           net.Conn
	peerR          *bufio.Reader
}

// newLibPair accepts one connection; early is what the server reads first,
// as if net/http had read it past the handshake.
func newLibPair(t *testing.T, early []byte) *libPair {
	t.Helper()
	return acceptLibPair(t, early, "", "")
}

// acceptLibPair is newLibPair with extensions set on the response header
// before Accept (none if empty), the client offering the extensions in
// offer (none if empty).
func acceptLibPair(t *testing.T, early []byte, extensions, offer string) *libPair {
	t.Helper()
	h := &Handler{opts: Options{WriteTimeout: 5 * time.Second}}
	accepted := make(chan *libPair, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rh := &recHijacker{ResponseWriter: w, early: early}
		uw := &upgradeWriter{ResponseWriter: rh, h: h}
		if extensions != "" {
			uw.Header().Set("Sec-WebSocket-Extensions", extensions)
		}
		c, err := websocket.Accept(uw, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Errorf("Accept: %v", err)
			accepted <- nil
			return
		}
		accepted <- &libPair{ws: c, conn: uw.conn, rec: rh.rec, hijacked: uw.conn != nil}
	}))
	t.Cleanup(srv.Close)
	peer, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_ = peer.SetDeadline(time.Now().Add(20 * time.Second))
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(peer, req); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(peer)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("assumption 8 (the 101 from Hijack): handshake: %v, %v", resp, err)
	}
	p := <-accepted
	if p == nil {
		t.FailNow()
	}
	// Assumption 8: the 101 went out in one write of Hijack's, and nothing
	// else of the response.
	if w := p.rec.takeWrites(); len(w) != 1 || !bytes.HasPrefix(w[0], []byte("HTTP/1.1 101 ")) {
		t.Fatalf("assumption 8 (the 101 from Hijack): the handshake's writes on the conn: %q, want one, the 101", w)
	}
	p.peer, p.peerR = peer, br
	p.respExtensions = resp.Header.Get("Sec-WebSocket-Extensions")
	t.Cleanup(func() {
		_ = p.ws.CloseNow()
		peer.Close()
	})
	return p
}

// send writes masked client frames.
func (p *libPair) send(t *testing.T, frames ...[]byte) {
	t.Helper()
	if _, err := p.peer.Write(bytes.Join(frames, nil)); err != nil {
		t.Fatal(err)
	}
}

// recv reads one server frame.
func (p *libPair) recv(t *testing.T) (b0 byte, payload []byte) {
	t.Helper()
	b0, _, payload, err := wsframe.ReadFrame(p.peerR, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return b0, payload
}

// masked is a client frame: first byte b0, payload p, masked.
func masked(b0 byte, p []byte) []byte {
	key := [4]byte{9, 8, 7, 6}
	f := append(wsframe.AppendHeader(nil, b0, true, len(p)), key[:]...)
	for i, c := range p {
		f = append(f, c^key[i&3])
	}
	return f
}

// readTimeout bounds a call that the assumptions say returns at once.
func readTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// read reads a message that is all there, or the error in its place. A
// Read that waits for more than the message (which no context bounds once
// the message is read) fails the test naming assumption 2.
func (p *libPair) read(t *testing.T) ([]byte, error) {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		_, b, err := p.ws.Read(context.Background())
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(5 * time.Second):
		_ = p.conn.Abort()
		<-done
		t.Fatal("assumption 2 (no read-ahead): Read did not return a message that was all there: it waits for more")
		return nil, nil
	}
}

// Assumption 1: Accept finds upgradeWriter's Hijack (not net/http's, behind
// Unwrap) and keeps the buffers it returns.
func TestLibraryUsesHijackBuffers(t *testing.T) {
	p := newLibPair(t, nil)
	if !p.hijacked {
		t.Fatal("assumption 1 (Hijack buffers): Accept did not call upgradeWriter.Hijack")
	}
	p.send(t, masked(wsframe.Fin|wsframe.OpText, []byte("hello")))
	if b, err := p.read(t); err != nil || string(b) != "hello" {
		t.Fatalf("Read: %q, %v", b, err)
	}
	p.rec.mu.Lock()
	first := p.rec.reads[0]
	p.rec.mu.Unlock()
	if first != readBufferSize {
		t.Errorf("assumption 1 (Hijack buffers): the first read asked for %d bytes, not the %d of the Hijack reader", first, readBufferSize)
	}

	// A data message larger than the write buffer: with the Hijack writer,
	// bufio fills it (header and payload) and flushes, then writes the rest
	// straight through.
	p.rec.takeWrites()
	msg := bytes.Repeat([]byte("w"), 300)
	if err := p.ws.Write(readTimeout(t), websocket.MessageText, msg); err != nil {
		t.Fatal(err)
	}
	var sizes []int
	for _, w := range p.rec.takeWrites() {
		sizes = append(sizes, len(w))
	}
	if want := []int{writeBufferSize, 4 + len(msg) - writeBufferSize}; fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Errorf("assumption 1 (Hijack buffers): a 304-byte frame went out in writes of %v bytes, want %v from a %d-byte Hijack writer",
			sizes, want, writeBufferSize)
	}
}

// Assumption 2: Read stops at the end of a message and asks for nothing
// more: what follows stays in corkConn, not in coder/websocket's buffer.
func TestLibraryReadsNoFurtherThanAMessage(t *testing.T) {
	next := masked(wsframe.Fin|wsframe.OpText, []byte("second"))
	early := bytes.Join([][]byte{
		masked(wsframe.OpText, []byte("fir")), // a fragmented message
		masked(wsframe.Fin|wsframe.OpPing, []byte("p")),
		masked(wsframe.Fin|wsframe.OpContinuation, []byte("st")),
		next,
	}, nil)
	p := newLibPair(t, early)
	if b, err := p.read(t); err != nil || string(b) != "first" {
		t.Fatalf("Read: %q, %v", b, err)
	}
	p.conn.rmu.Lock()
	left := len(p.conn.early)
	p.conn.rmu.Unlock()
	if left != len(next) {
		t.Fatalf("assumption 2 (no read-ahead): after a message, %d bytes of the next frame are left unread, want all %d", left, len(next))
	}
	if b, err := p.read(t); err != nil || string(b) != "second" {
		t.Fatalf("Read: %q, %v", b, err)
	}
	// And over the socket: a Read returns the message it has without
	// waiting for more.
	p.send(t, masked(wsframe.Fin|wsframe.OpText, []byte("third")))
	if b, err := p.read(t); err != nil || string(b) != "third" {
		t.Fatalf("assumption 2 (no read-ahead): Read of a whole message: %q, %v", b, err)
	}
}

// Assumption 3: an error of the conn's Read at a frame boundary comes back
// from Read wrapped, after the control frames before it were handled, and
// the next Read reads the next message.
func TestLibraryReadErrorKeepsState(t *testing.T) {
	p := newLibPair(t, nil)
	p.conn.SetNonblocking(true)
	if _, err := p.read(t); !errors.Is(err, errWouldBlock) {
		t.Fatalf("assumption 3 (read errors keep the state): Read on an empty socket: %v, want errWouldBlock", err)
	}
	// A ping alone: answered, then errWouldBlock again.
	p.send(t, masked(wsframe.Fin|wsframe.OpPing, []byte("are you there")))
	if err := p.conn.WaitReadable(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.read(t); !errors.Is(err, errWouldBlock) {
		t.Fatalf("assumption 3 (read errors keep the state): Read after a ping: %v, want errWouldBlock", err)
	}
	if b0, b := p.recv(t); b0 != wsframe.Fin|wsframe.OpPong || string(b) != "are you there" {
		t.Fatalf("assumption 3 (read errors keep the state): the ping got %#x %q, want its pong", b0, b)
	}
	p.send(t, masked(wsframe.Fin|wsframe.OpText, []byte("still here")))
	if err := p.conn.WaitReadable(); err != nil {
		t.Fatal(err)
	}
	if b, err := p.read(t); err != nil || string(b) != "still here" {
		t.Fatalf("assumption 3 (read errors keep the state): Read after errWouldBlock: %q, %v", b, err)
	}
	if p.conn.Closing() {
		t.Fatal("assumption 3 (read errors keep the state): errWouldBlock closed the connection")
	}
	p.conn.mu.Lock()
	closeOut := p.conn.closeOut
	p.conn.mu.Unlock()
	if closeOut {
		t.Fatal("assumption 3 (read errors keep the state): errWouldBlock made coder/websocket send a close frame")
	}
}

// Assumption 4: every control frame reaches the conn as one Write of the
// whole frame, with nothing left in the writer.
func TestLibraryWritesWholeControlFrames(t *testing.T) {
	p := newLibPair(t, nil)
	check := func(what string, b0 byte, n int) {
		t.Helper()
		ws := p.rec.takeWrites()
		if len(ws) != 1 || len(ws[0]) != 2+n || ws[0][0] != b0 {
			var got []string
			for _, w := range ws {
				got = append(got, fmt.Sprintf("%d bytes starting %#x", len(w), w[0]))
			}
			t.Fatalf("assumption 4 (whole control frames): %s reached the conn as %v, want one write of %d bytes starting %#x",
				what, got, 2+n, b0)
		}
	}

	// A pong for the largest ping, written while Read handles the ping.
	ping := bytes.Repeat([]byte("p"), 125)
	p.send(t, masked(wsframe.Fin|wsframe.OpPing, ping), masked(wsframe.Fin|wsframe.OpText, []byte("m")))
	p.rec.takeWrites()
	if _, err := p.read(t); err != nil {
		t.Fatal(err)
	}
	check("a pong", wsframe.Fin|wsframe.OpPong, 125)
	if b0, _ := p.recv(t); b0 != wsframe.Fin|wsframe.OpPong {
		t.Fatalf("peer got %#x, want a pong", b0)
	}

	// A ping of its own.
	pinged := make(chan error, 1)
	pingCtx := readTimeout(t)
	go func() { pinged <- p.ws.Ping(pingCtx) }()
	b0, payload := p.recv(t)
	if b0 != wsframe.Fin|wsframe.OpPing {
		t.Fatalf("peer got %#x, want a ping", b0)
	}
	check("a ping", wsframe.Fin|wsframe.OpPing, len(payload))
	p.send(t, masked(wsframe.Fin|wsframe.OpPong, payload))
	go func() { _, _, _ = p.ws.Read(context.Background()) }() // reads the pong, then the close
	if err := <-pinged; err != nil {
		t.Fatal(err)
	}

	// The largest close frame, answered by the peer.
	reason := strings.Repeat("r", maxCloseReason)
	closed := make(chan error, 1)
	go func() { closed <- p.ws.Close(websocket.StatusGoingAway, reason) }()
	b0, payload = p.recv(t)
	if b0 != wsframe.Fin|wsframe.OpClose || len(payload) != 125 {
		t.Fatalf("peer got %#x with %d bytes, want the close frame", b0, len(payload))
	}
	check("a close frame", wsframe.Fin|wsframe.OpClose, 125)
	p.send(t, masked(wsframe.Fin|wsframe.OpClose, payload[:2]))
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
}

// Assumption 5: Close reads the peer's close frame through the conn and
// closes it; so does CloseNow.
func TestLibraryClosesThroughTheConn(t *testing.T) {
	t.Run("Close", func(t *testing.T) {
		p := newLibPair(t, nil)
		closed := make(chan error, 1)
		go func() { closed <- closeHandshake(p.ws, p.conn, websocket.StatusNormalClosure, "bye") }()
		b0, payload := p.recv(t)
		if b0 != wsframe.Fin|wsframe.OpClose {
			t.Fatalf("peer got %#x, want the close frame", b0)
		}
		p.send(t, masked(wsframe.Fin|wsframe.OpClose, payload[:2]))
		select {
		case err := <-closed:
			if err != nil {
				t.Fatalf("assumption 5 (close through the conn): the handshake did not read the peer's close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("assumption 5 (close through the conn): Close did not return after the peer's close frame")
		}
		if !p.conn.Closing() {
			t.Fatal("assumption 5 (close through the conn): Close did not close corkConn")
		}
	})
	t.Run("CloseNow", func(t *testing.T) {
		p := newLibPair(t, nil)
		if err := p.ws.CloseNow(); err != nil {
			t.Fatal(err)
		}
		if !p.conn.Closing() {
			t.Fatal("assumption 5 (close through the conn): CloseNow did not close corkConn")
		}
		p.rec.mu.Lock()
		closed := p.rec.closed
		p.rec.mu.Unlock()
		if !closed {
			t.Fatal("assumption 5 (close through the conn): CloseNow did not close the socket")
		}
	})
}

// refusalRecorder records how Accept answers a refused handshake.
type refusalRecorder struct {
	http.ResponseWriter
	calls []string
}

func (r *refusalRecorder) WriteHeader(status int) {
	r.calls = append(r.calls, fmt.Sprintf("WriteHeader(%d)", status))
	r.ResponseWriter.WriteHeader(status)
}

func (r *refusalRecorder) Write(p []byte) (int, error) {
	r.calls = append(r.calls, fmt.Sprintf("Write(%q)", p))
	return r.ResponseWriter.Write(p)
}

// Assumption 6: Accept refuses a handshake with WriteHeader and then the
// message in one Write.
func TestLibraryRefusesThroughTheResponseWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header http.Header
		status int
	}{
		{"not an upgrade", http.Header{}, http.StatusUpgradeRequired},
		{"foreign origin", http.Header{
			"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"http://elsewhere.example"},
		}, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "http://herald.example/v1/ws", nil)
			r.Header = tc.header
			rec := &refusalRecorder{ResponseWriter: httptest.NewRecorder()}
			if _, err := websocket.Accept(rec, r, nil); err == nil {
				t.Fatal("Accept accepted")
			}
			if len(rec.calls) != 2 || rec.calls[0] != fmt.Sprintf("WriteHeader(%d)", tc.status) || !strings.HasPrefix(rec.calls[1], "Write(") {
				t.Fatalf("assumption 6 (refusals through the ResponseWriter): Accept made %v, want WriteHeader(%d) and one Write", rec.calls, tc.status)
			}
		})
	}
}

// deflateMessage is msg as a permessage-deflate payload.
func deflateMessage(t *testing.T, msg []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = w.Write(msg)
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte(deflateTail))
}

// closeWritten returns the code of the close frame coder/websocket wrote to
// the conn since the last call, or 0 if it wrote none.
func (p *libPair) closeWritten() int {
	for _, w := range p.rec.takeWrites() {
		if len(w) >= 4 && w[0]&0x0F == wsframe.OpClose {
			return int(w[2])<<8 | int(w[3])
		}
	}
	return 0
}

// Assumption 7: Accept, with compression disabled, leaves a
// Sec-WebSocket-Extensions header set on the ResponseWriter before it in the
// response, and refuses a frame with RSV1 with 1002 (on such a connection,
// corkConn hands it over only when the extension was not negotiated). And
// a message that corkConn inflates (inflate.go) reads as a plain one,
// keeping assumptions 2 and 3: nothing of the next message is read, and a
// non-blocking Read then fails with errWouldBlock.
func TestLibraryCompression(t *testing.T) {
	p := acceptLibPair(t, nil, deflateResponse, "permessage-deflate")
	if p.respExtensions != deflateResponse {
		t.Fatalf("assumption 7 (compression): the response's extensions %q, want %q", p.respExtensions, deflateResponse)
	}
	p.conn.deflate, p.conn.readLimit = true, 1000
	msg := []byte(`{"op":"ping","ref":"` + strings.Repeat("compressed ", 50) + `"}`)
	p.send(t, masked(wsframe.Fin|rsv1|wsframe.OpText, deflateMessage(t, msg)), masked(wsframe.Fin|wsframe.OpText, []byte("next")))
	if b, err := p.read(t); err != nil || !bytes.Equal(b, msg) {
		t.Fatalf("assumption 7 (compression): Read of an inflated message: %q, %v", b, err)
	}
	if b, err := p.read(t); err != nil || string(b) != "next" {
		t.Fatalf("assumption 7 (compression): Read after an inflated message: %q, %v", b, err)
	}
	p.conn.SetNonblocking(true)
	if _, err := p.read(t); !errors.Is(err, errWouldBlock) {
		t.Fatalf("assumption 7 (compression): Read on an empty socket after inflated messages: %v, want errWouldBlock", err)
	}
	p.conn.SetNonblocking(false)
	p.rec.takeWrites()

	// RSV1 reaching coder/websocket: 1002.
	p = acceptLibPair(t, nil, "", "")
	p.send(t, masked(wsframe.Fin|rsv1|wsframe.OpText, deflateMessage(t, msg)))
	if _, err := p.read(t); err == nil {
		t.Fatal("assumption 7 (compression): RSV1 was read")
	}
	if code := p.closeWritten(); code != 1002 {
		t.Fatalf("assumption 7 (compression): RSV1: close %d written, want 1002", code)
	}
}
