package httpapi

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/felixge/httpsnoop"

	"github.com/heraldpush/herald/transport/apierror"
)

// exchange is what the access log learns about one request. Its fields are
// written through the ResponseWriter, which a handler may only use from one
// goroutine at a time and must stop using before ServeHTTP returns, so no
// lock is needed.
type exchange struct {
	code     int
	bytes    int64
	wrote    bool // the status line has gone out (WriteHeader, Write or Flush)
	hijacked bool
}

// withAccessLog wraps next with panic recovery and a Debug-level access log.
//
// The ResponseWriter is wrapped with httpsnoop, which keeps exactly the
// optional interfaces (http.Flusher, http.Hijacker, io.ReaderFrom, Unwrap)
// of the writer it wraps: SSE needs Flush and WebSocket needs Hijack, through
// a type assertion as well as through http.ResponseController.
//
// A panic becomes a 500 "internal" JSON error when nothing was written yet;
// otherwise the response is cut short with http.ErrAbortHandler, as net/http
// itself would.
func withAccessLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ex := &exchange{code: http.StatusOK}
		ww := httpsnoop.Wrap(w, ex.hooks())
		defer func() {
			v := recover()
			if v != nil && v != http.ErrAbortHandler {
				log.LogAttrs(r.Context(), slog.LevelError, "panic serving request",
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.Any("panic", v),
					slog.String("stack", string(debug.Stack())))
				if !ex.wrote && !ex.hijacked {
					apierror.Write(ww, apierror.New(http.StatusInternalServerError, apierror.Internal, "internal error"))
					v = nil
				} else {
					v = http.ErrAbortHandler
				}
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
		next.ServeHTTP(ww, r)
	})
}

func (ex *exchange) hooks() httpsnoop.Hooks {
	return httpsnoop.Hooks{
		WriteHeader: func(next httpsnoop.WriteHeaderFunc) httpsnoop.WriteHeaderFunc {
			return func(code int) {
				next(code)
				// 1xx responses are interim, except 101 which ends the
				// exchange (a WebSocket upgrade).
				if !ex.wrote && (code >= 200 || code == http.StatusSwitchingProtocols) {
					ex.code = code
					ex.wrote = true
				}
			}
		},
		Write: func(next httpsnoop.WriteFunc) httpsnoop.WriteFunc {
			return func(b []byte) (int, error) {
				n, err := next(b)
				ex.wrote = true
				ex.bytes += int64(n)
				return n, err
			}
		},
		WriteString: func(next httpsnoop.WriteStringFunc) httpsnoop.WriteStringFunc {
			return func(s string) (int, error) {
				n, err := next(s)
				ex.wrote = true
				ex.bytes += int64(n)
				return n, err
			}
		},
		ReadFrom: func(next httpsnoop.ReadFromFunc) httpsnoop.ReadFromFunc {
			return func(src io.Reader) (int64, error) {
				n, err := next(src)
				ex.wrote = true
				ex.bytes += n
				return n, err
			}
		},
		Flush: func(next httpsnoop.FlushFunc) httpsnoop.FlushFunc {
			return func() {
				next()
				ex.wrote = true
			}
		},
		Hijack: func(next httpsnoop.HijackFunc) httpsnoop.HijackFunc {
			return func() (net.Conn, *bufio.ReadWriter, error) {
				c, rw, err := next()
				if err == nil {
					ex.hijacked = true
				}
				return c, rw, err
			}
		},
	}
}
