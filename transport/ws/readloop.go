package ws

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/apierror"
)

// readLoop is the reader: it handles client messages until the connection
// closes, then cancels the session's context with the reason. Every reply is
// queued on the client, so replies and events reach the client in the order
// they were queued. A bad message gets an error reply and the connection
// stays open; a message over the read limit makes coder/websocket close it
// with 1009, and a text message that is not UTF-8 closes it with 1007
// (RFC 6455 section 8.1): nothing of it is handled, so no part of it is ever
// echoed (a ref goes back byte for byte).
//
// Having handled a message, it waits for the next one in a fresh goroutine
// unless bytes of it are already here (see read.go).
func (s *session) readLoop() {
	defer s.tasks.Done()
	for {
		if err := s.conn.WaitReadable(); err != nil {
			s.stop(err)
			return
		}
		typ, b, err := s.readMessage()
		if errors.Is(err, errWouldBlock) {
			// Only control frames came (a pong): wait again on a fresh stack.
			s.tasks.Add(1)
			go s.readLoop()
			return
		}
		if err != nil {
			s.stop(err)
			return
		}
		if s.flood != nil && !s.flood.Allow() {
			s.stop(errFlood)
			return
		}
		switch {
		case typ != websocket.MessageText:
			s.replyError(nil, apierror.New(http.StatusUnsupportedMediaType, apierror.UnsupportedMediaType,
				"binary frames are not supported: send each message as a JSON object in a text frame"))
		case !utf8.Valid(b):
			s.stop(errInvalidUTF8)
			return
		default:
			s.handle(b)
		}
		if !s.conn.Buffered() {
			s.tasks.Add(1)
			go s.readLoop()
			return
		}
	}
}
