package httpapi

import (
	"net/http"
	"time"
)

// withBodyDeadline gives a request with a body d to deliver it, from the
// moment its headers have been read: a client that announces a body and
// then trickles it, or sends nothing more, holds its connection (and its
// file descriptor, which --max-conns does not count) for that long at
// most. The handler's read then fails, and readJSONBody answers 408.
//
// The deadline is set on this request alone (http.ResponseController), not
// as http.Server.ReadTimeout: requests without a body, the SSE stream and
// the WebSocket handshake among them, get none, and net/http lifts it as
// soon as the body has been read to its end (HTTP/1.x), or it only ever
// applies to the body (HTTP/2). A hijacked connection starts without
// deadlines. So a stream is never cut by it.
func withBodyDeadline(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 { // a body follows: known length (> 0) or chunked (-1)
			// A writer that cannot set deadlines (a test's recorder)
			// has no connection to hold.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(d))
		}
		next.ServeHTTP(w, r)
	})
}
