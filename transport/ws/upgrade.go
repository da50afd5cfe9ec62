package ws

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/heraldpush/herald/apierror"
)

// Buffer sizes of the bufio pair coder/websocket keeps for the life of a
// connection. Both are small because they are held while the connection is
// idle. A frame larger than the write buffer costs no extra socket write:
// bufio.Writer tops the buffer up, flushes it and hands the rest of the
// payload on uncopied, all into the corked batch. The largest control frame
// (2 + 125 bytes) fits, so a ping, pong or close outside a batch is one write.
const (
	readBufferSize  = 256
	writeBufferSize = 2 + 125 + 1
)

// upgradeWriter is the ResponseWriter handed to websocket.Accept. Its Hijack
// puts a corkConn under the connection, and it turns the plain-text errors
// Accept writes for a bad handshake into the protocol's JSON errors.
//
// coder/websocket finds Hijack on it directly (it looks for an http.Hijacker
// before following Unwrap), so no Unwrap is needed for Accept; it has one for
// http.ResponseController.
type upgradeWriter struct {
	http.ResponseWriter
	h    *Handler
	conn *corkConn // set by a successful Hijack

	status int // an error status Accept set; its body is rewritten as JSON
}

func (w *upgradeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// WriteHeader holds back error statuses until Write supplies the message.
func (w *upgradeWriter) WriteHeader(status int) {
	if status >= 400 {
		w.status = status
		return
	}
	w.ResponseWriter.WriteHeader(status)
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
// corkConn, with small buffers for coder/websocket.
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
	rw := bufio.NewReadWriter(bufio.NewReaderSize(w.conn, readBufferSize), bufio.NewWriterSize(w.conn, writeBufferSize))
	return w.conn, rw, nil
}
