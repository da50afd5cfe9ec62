package httpapi

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/heraldpush/herald/apierror"
)

// recorder is the ResponseWriter the access log and panic recovery see: it
// notes the status, the bytes written and whether the connection was taken
// over, and it keeps the write deadline of a response that is not a stream
// moving as the response is written (withDeadlines). Its fields are
// written through the ResponseWriter, which a handler may only use from one
// goroutine at a time and must stop using before ServeHTTP returns, so no
// lock is needed.
//
// It is one small struct per request, where a hook-based wrapper
// (httpsnoop) costs about twenty allocations: on the publish path that was a
// quarter of all of them. Optional interfaces stay reachable: Flush,
// FlushError and Hijack are methods that go through
// http.ResponseController, and Unwrap exposes the writer underneath, which
// http.ResponseController and coder/websocket follow.
type recorder struct {
	w        http.ResponseWriter
	route    string // the matched route's pattern (see routed)
	code     int
	bytes    int64
	wrote    bool // the status line has gone out (WriteHeader, Write or Flush)
	hijacked bool
	// timeout is the write timeout (0: none, or a stream's own); deadline
	// the write deadline last set (zero: none yet).
	timeout  time.Duration
	deadline time.Time
}

// prepare gives the write about to be made at least half of the timeout:
// it sets the deadline at the response's first write, and moves it only
// when less is left (moving it is a timer update in the runtime poller, and
// most responses are written within the first).
func (rec *recorder) prepare() {
	if rec.timeout == 0 {
		return
	}
	if now := time.Now(); rec.deadline.IsZero() || rec.deadline.Sub(now) < rec.timeout/2 {
		rec.deadline = now.Add(rec.timeout)
		_ = http.NewResponseController(rec.w).SetWriteDeadline(rec.deadline)
	}
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

// Unwrap lets http.ResponseController reach the writer's other methods
// (SetWriteDeadline, EnableFullDuplex).
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

func (rec *recorder) WriteHeader(code int) {
	rec.prepare()
	rec.w.WriteHeader(code)
	// 1xx responses are interim, except 101 which ends the exchange (a
	// WebSocket upgrade).
	if !rec.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
		rec.code = code
		rec.wrote = true
	}
}

func (rec *recorder) Write(b []byte) (int, error) {
	rec.wrote = true
	written := 0
	for {
		part := b[written:]
		if rec.timeout != 0 && len(part) > writeChunk {
			part = part[:writeChunk]
		}
		rec.prepare()
		n, err := rec.w.Write(part)
		written += n
		rec.bytes += int64(n)
		if err != nil || written == len(b) {
			return written, err
		}
	}
}

func (rec *recorder) WriteString(s string) (int, error) {
	if rec.timeout != 0 && len(s) > writeChunk {
		return rec.Write([]byte(s))
	}
	rec.prepare()
	n, err := io.WriteString(rec.w, s)
	rec.wrote = true
	rec.bytes += int64(n)
	return n, err
}

// Flush makes recorder an http.Flusher for handlers that assert it; on a
// writer that cannot flush it does nothing, as FlushError reports.
func (rec *recorder) Flush() { _ = rec.FlushError() }

func (rec *recorder) FlushError() error {
	rec.prepare()
	rec.wrote = true
	return http.NewResponseController(rec.w).Flush()
}

// Hijack makes recorder an http.Hijacker; on HTTP/2 it fails with
// http.ErrNotSupported. A handler that hijacks with an Upgrade header set
// and no status written sends its 101 on the connection itself
// (transport/ws): it is recorded as 101.
func (rec *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(rec.w).Hijack()
	if err == nil {
		rec.hijacked = true
		if !rec.wrote && rec.w.Header().Get("Upgrade") != "" {
			rec.code = http.StatusSwitchingProtocols
			rec.wrote = true
		}
	}
	return c, rw, err
}

// withAccessLog wraps next with panic recovery, a Debug-level access log
// and, when observe is set, the request metrics.
//
// A panic becomes a 500 "internal" JSON error when nothing was written yet;
// otherwise the response is cut short with http.ErrAbortHandler, as net/http
// itself would.
func withAccessLog(log *slog.Logger, observe func(route string, code int, d time.Duration), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ex := &recorder{w: w, code: http.StatusOK}
		defer func() {
			v := recover()
			if v != nil && v != http.ErrAbortHandler {
				log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.Any("panic", v),
					slog.String("stack", string(debug.Stack())))
				if !ex.wrote && !ex.hijacked {
					apierror.Write(ex, apierror.New(http.StatusInternalServerError, apierror.Internal, "internal error"))
					v = nil
				} else {
					v = http.ErrAbortHandler
				}
			}
			if observe != nil {
				code := ex.code
				if v != nil {
					code = http.StatusInternalServerError
				}
				observe(ex.route, code, time.Since(start))
			}
			if log.Enabled(r.Context(), slog.LevelDebug) {
				// The query is left out: it may carry an access token.
				log.LogAttrs(r.Context(), slog.LevelDebug, "http request",
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.Int("status", ex.code),
					slog.Int64("bytes", ex.bytes),
					slog.Bool("hijacked", ex.hijacked),
					slog.Duration("duration", time.Since(start)),
					slog.String("remote", r.RemoteAddr))
			}
			if v != nil {
				panic(v)
			}
		}()
		next.ServeHTTP(ex, r)
	})
}
