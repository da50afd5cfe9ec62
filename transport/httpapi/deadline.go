package httpapi

import (
	"net/http"
	"time"
)

// withDeadlines bounds a request's exchange with the client in time.
//
// A request with a body gets read to deliver it, from the moment its
// headers have been read: a client that announces a body and then trickles
// it, or sends nothing more, holds its connection (and its file
// descriptor, which --max-conns does not count) for that long at most. The
// handler's read then fails, and readJSONBody answers 408.
//
// Every response gets write to be written: a client that stops reading
// (a full receive window) would otherwise hold the connection, the
// handler's goroutine and the response (a page of history may be
// megabytes) for ever, since TCP keeps answering the server's probes. The
// recorder sets the deadline when the response begins and moves it on as
// it is written (see recorder.prepare), so a large response that keeps
// moving is not cut; a stream route turns that off (routed). It is not set
// before: on HTTP/2 a write deadline resets the stream when it passes,
// writing or not, which would cut a handler still reading a slow body (up
// to the read deadline) or waiting for the broker.
//
// The deadlines are set on this request alone (http.ResponseController), not
// as http.Server.ReadTimeout or WriteTimeout, which would cut the streams:
// net/http lifts the read deadline as soon as the body has been read to its
// end (HTTP/1.x; on HTTP/2 it only ever applies to the body), lifts the
// write deadline once the response is finished, before the next request on
// the connection, and a hijacked connection (the WebSocket, an HTTP/1.x SSE
// stream) starts without either.
func withDeadlines(read, write time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		// A writer that cannot set deadlines (a test's recorder) has no
		// connection to hold.
		rc := http.NewResponseController(w)
		if r.ContentLength != 0 { // a body follows: known length (> 0) or chunked (-1)
			_ = rc.SetReadDeadline(now.Add(read))
		}
		if rec, ok := w.(*recorder); ok {
			rec.timeout = write
		}
		next.ServeHTTP(w, r)
	})
}

// writeChunk is the most one write of a response sends under one
// deadline: a larger body is written in parts, each with the deadline
// moved on, so that a client reading at least writeChunk bytes per half
// write timeout (13 KB/s at the default 10 s) gets a response of any size.
const writeChunk = 64 << 10
