package ws

// This file is where transport/ws relies on how coder/websocket works
// inside, beyond its documented API. coder/websocket does the handshake,
// reads client messages and writes control frames (pings, pongs, close);
// around it, transport/ws keeps idle connections small and writes event
// frames itself. Each such assumption is listed here with the reason
// it is relied on, and the code that relies on it is in this file.
// library_test.go pins every one against the real library over a real
// socket: an upgrade of coder/websocket that changes one fails a test that
// names it (TestLibrary…), not production.
//
//  1. Hijack buffers. Accept finds http.Hijacker on the ResponseWriter it is
//     given (before following Unwrap), and keeps the bufio.Reader and
//     bufio.Writer that Hijack returns, with their buffers, as the
//     connection's for its life: it reads the conn through the reader and
//     writes every frame through the writer. Why: upgradeWriter.Hijack puts
//     corkConn under the connection, and the buffers are held while it is
//     idle: 256 and 128 bytes instead of net/http's 4 KiB each, 9.4 KB of
//     heap and stacks per idle connection instead of 17.5 to 18.4 KB
//     (docs/benchmarks.md, "The connection's buffers").
//  2. No read-ahead. Conn.Read reads the frames of one message and stops at
//     the end of its last frame: it returns without asking its reader for
//     another byte. With corkConn.Read never returning bytes past a frame
//     boundary (read.go), the reader's buffer is then empty, so the
//     session's reader can wait for the next message outside coder/websocket
//     (WaitReadable) and hand over to a fresh goroutine. Why: an idle
//     connection's stacks, 2.1 KB instead of 8.6 KB when it waits inside
//     Conn.Read, and 5.8 KB when it waits there on a fresh goroutine
//     (docs/benchmarks.md, "The idle reader outside coder/websocket").
//  3. Read errors keep the state. An error that the conn's Read returns at a
//     frame boundary comes back from Conn.Read wrapped (errors.Is finds it),
//     after any control frame before it was handled, with nothing sent and
//     the Conn ready to read the next message. Why: readMessage's
//     non-blocking Read (errWouldBlock) for the same stacks as 2: after a
//     pong, Conn.Read would otherwise wait for a data message deep in its
//     call chain.
//  4. Whole control frames. Conn writes each control frame (ping, pong,
//     close) through the Hijack writer and flushes it at once, in one Write
//     of the whole frame (at most 127 bytes, which fits writeBufferSize),
//     and holds nothing in that writer between frames. Why: corkConn.Write
//     recognises a close frame by its first byte (no data frame may follow
//     it, and a reason that is not UTF-8 is replaced), and the session's
//     data frames go out beside coder/websocket's writer (corkConn.WriteFrame)
//     without landing inside a control frame.
//  5. Close through the conn. Conn.Close writes its close frame, reads the
//     peer's answer through the conn and closes the conn; CloseNow closes
//     the conn. Why: corkConn.Close sends what a batch still holds (a close
//     frame written mid-batch) before the socket closes, and closeHandshake
//     turns non-blocking reads off so the handshake can wait for the peer.
//  6. Refusals through the ResponseWriter. Accept answers a handshake it
//     refuses with http.Error on the ResponseWriter it was given: the status
//     with WriteHeader, then the message in one Write. Why: upgradeWriter
//     turns that into the protocol's JSON error.
//  7. Compression left to the caller. Accept, with CompressionDisabled,
//     leaves a Sec-WebSocket-Extensions header that the handler set on the
//     ResponseWriter before it in the 101 response, and refuses a frame with
//     RSV1 with 1002. Why: ServeHTTP negotiates permessage-deflate itself,
//     and corkConn inflates compressed client messages before
//     coder/websocket reads them (inflate.go), which otherwise keeps a
//     4 KiB buffer per connection from the first compressed message on;
//     RSV1 that corkConn passes on (no extension, a control frame) is a
//     protocol error.
//  8. The 101 from Hijack. Accept calls WriteHeader(101) with every header
//     of the response set, then Hijack, and writes nothing else of the
//     response. Why: upgradeWriter holds the 101 back from net/http, which
//     would format it in a 4 KiB writer after sorting the headers, and
//     Hijack sends it in one write of its own (corkConn.WriteResponseHead):
//     about a tenth of the server's CPU in a connection ramp went into
//     net/http's writing of the 101 (docs/benchmarks.md, "Connection ramp").
//
// Two of transport/ws's own mechanisms stand beside the library rather
// than rely on it, each kept for a measured reason (docs/benchmarks.md,
// "Writing beside coder/websocket"): the session writes event frames itself
// (frame.go), encoded once per event and shared by every subscriber, rather
// than with Conn.Write (1.5 to 1.8 times the server CPU per delivery); and
// corkConn sends a batch in one write (cork.go), where Conn.Write flushes
// every message (6.9 to 8.9 times the CPU, and slow consumers dropped).

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/apierror"
	"github.com/heraldpush/herald/internal/wsframe"
)

// Buffer sizes of the bufio pair coder/websocket keeps for the life of a
// connection (assumption 1). Both are small because they are held while the
// connection is idle. The read buffer holds any frame header (at most 14
// bytes); payloads pass through it into the message. The write buffer holds
// the largest control frame (2 + 125 bytes), the only frames coder/websocket
// writes (assumption 4), so each is one Write.
const (
	readBufferSize  = 256
	writeBufferSize = 2 + 125 + 1
)

// upgradeWriter is the ResponseWriter handed to websocket.Accept. Its Hijack
// puts a corkConn under the connection (assumption 1), and it turns the
// plain-text errors Accept writes for a bad handshake into the protocol's
// JSON errors (assumption 6).
//
// coder/websocket finds Hijack on it directly (it looks for an http.Hijacker
// before following Unwrap), so no Unwrap is needed for Accept; it has one for
// http.ResponseController.
type upgradeWriter struct {
	http.ResponseWriter
	h    *Handler
	conn *corkConn // set by a successful Hijack

	status    int  // an error status Accept set; its body is rewritten as JSON
	switching bool // Accept set 101: Hijack sends it (assumption 8)
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader holds back error statuses until Write supplies the message,
// and the 101 until Hijack sends it (assumption 8).
func (w *upgradeWriter) WriteHeader(status int) {
	switch {
	case status >= 400:
		w.status = status
	case status == http.StatusSwitchingProtocols:
		w.switching = true
	default:
		w.ResponseWriter.WriteHeader(status)
	}
}

// Write sends an error held back by WriteHeader as a JSON error.
func (w *upgradeWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		return w.ResponseWriter.Write(p)
	}
	status := w.status
	w.status = 0
	w.Header().Del("Content-Type")
	w.Header().Del("X-Content-Type-Options")
	w.Header().Del("Sec-WebSocket-Extensions")
	apierror.Write(w.ResponseWriter, apierror.New(status, handshakeCode(status), strings.TrimSpace(string(p))))
	return len(p), nil
}

// flushError sends an error status that Accept set without a body.
func (w *upgradeWriter) flushError() {
	if w.status != 0 {
		_, _ = w.Write([]byte(http.StatusText(w.status)))
	}
}

// handshakeCode names the failures websocket.Accept reports.
func handshakeCode(status int) string {
	switch status {
	case http.StatusForbidden:
		return apierror.Forbidden
	case http.StatusMethodNotAllowed:
		return apierror.MethodNotAllowed
	case http.StatusBadRequest, http.StatusUpgradeRequired:
		return apierror.InvalidRequest
	default:
		return apierror.Internal
	}
}

// Hijack takes the connection from net/http and returns it wrapped in a
// corkConn, with small buffers for coder/websocket (assumption 1), once it
// has sent the 101 response that Accept set (assumption 8).
//
// net/http may already have read bytes the client sent right behind the
// handshake. coder/websocket keeps whatever the returned reader has buffered
// and then reads from the returned conn; the reader returned here has nothing
// buffered, and the corkConn hands out those early bytes before reading the
// socket, so none is lost and net/http's 4 KiB buffers are not kept.
func (w *upgradeWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, fmt.Errorf("failed to hijack connection: %w", err)
	}
	var early []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		early = bytes.Clone(b)
	}
	if brw.Writer.Buffered() > 0 {
		// net/http flushes the 101 response before handing the conn over;
		// anything left would be lost with its buffer.
		if err := brw.Writer.Flush(); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("failed to flush handshake: %w", err)
		}
	}
	w.conn = newCorkConn(c, early, w.h.opts.WriteTimeout, &w.h.writes)
	if w.switching {
		if err := w.conn.WriteResponseHead(http.StatusSwitchingProtocols, w.Header()); err != nil {
			_ = w.conn.Abort()
			return nil, nil, fmt.Errorf("failed to write handshake: %w", err)
		}
	}
	return w.conn, libraryBuffers(w.conn), nil
}

// libraryBuffers is the bufio pair coder/websocket reads and writes c
// through (assumption 1).
func libraryBuffers(c net.Conn) *bufio.ReadWriter {
	return bufio.NewReadWriter(bufio.NewReaderSize(c, readBufferSize), bufio.NewWriterSize(c, writeBufferSize))
}

// Write implements net.Conn for coder/websocket, which writes only control
// frames (the writer sends data frames with WriteFrame), each in one Write
// (assumption 4). While corked it appends p to the batch; otherwise it
// writes p to the socket under the write timeout. A close frame goes out as
// validClose has it.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	frame := p
	if len(p) > 0 && p[0]&0x0F == wsframe.OpClose {
		c.closeOut = true
		frame = validClose(p)
	}
	n, err := c.appendLocked(frame)
	if err == nil {
		n = len(p)
	}
	return n, err
}

// errWouldBlock is corkConn.Read's answer, in non-blocking mode, when no
// message has begun and the socket has nothing to read (read.go).
var errWouldBlock = errors.New("no message to read yet")

// readMessage reads the next message, or fails with errWouldBlock if only
// control frames came (assumptions 2 and 3): coder/websocket has handled
// them, and the reader should wait again with WaitReadable. It is called by
// the session's reader only, once WaitReadable has returned.
func (s *session) readMessage() (websocket.MessageType, []byte, error) {
	// No deadline: the reader ends when the session closes the connection.
	s.conn.SetNonblocking(true)
	typ, b, err := s.ws.Read(context.Background())
	s.conn.SetNonblocking(false)
	return typ, b, err
}

// closeHandshake sends a close frame with code and reason and waits for the
// peer's, then closes the connection (assumption 5). The reads it makes
// wait for the peer, so non-blocking reads end for good first.
func closeHandshake(ws *websocket.Conn, conn *corkConn, code websocket.StatusCode, reason string) error {
	conn.StartHandshake()
	return ws.Close(code, reason)
}

// WriteResponseHead sends an HTTP/1.1 response head with status and header,
// in one write under the write timeout, on a buffer of corkPool. A value's
// line breaks become spaces, as net/http has them.
func (c *corkConn) WriteResponseHead(status int, header http.Header) error {
	bp := corkPool.Get().(*[]byte)
	b := fmt.Appendf((*bp)[:0], "HTTP/1.1 %03d %s\r\n", status, http.StatusText(status))
	for k, vs := range header {
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			for i := range len(v) {
				if ch := v[i]; ch == '\r' || ch == '\n' {
					b = append(b, ' ')
				} else {
					b = append(b, ch)
				}
			}
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "\r\n"...)
	c.mu.Lock()
	_, err := c.appendLocked(b)
	c.mu.Unlock()
	*bp = b[:0]
	corkPool.Put(bp)
	return err
}
