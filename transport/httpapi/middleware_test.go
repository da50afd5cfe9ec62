package httpapi_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/internal/testkit/wait"

	"github.com/coder/websocket"
)

// TestStreamingThroughMiddleware mounts handlers that need the optional
// interfaces of the ResponseWriter, the way the SSE and WebSocket
// transports use them, and checks that the access log and recovery layers
// do not hide them.
func TestStreamingThroughMiddleware(t *testing.T) {
	released := make(chan struct{})
	flushErrs := make(chan error, 1)
	sseH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := w.(http.Flusher)
		if !ok {
			flushErrs <- errors.New("ResponseWriter is not an http.Flusher")
			http.Error(w, "no flusher", http.StatusInternalServerError)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(10 * time.Second)); err != nil {
			flushErrs <- err
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: first\n\n")
		f.Flush()
		flushErrs <- nil
		// The client must see the first event while the handler still runs.
		select {
		case <-released:
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		_, _ = io.WriteString(w, "data: last\n\n")
		_ = rc.Flush()
	})
	wsH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Hijacker); !ok {
			http.Error(w, "no hijacker", http.StatusInternalServerError)
			return
		}
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		typ, msg, err := c.Read(ctx)
		if err != nil {
			return
		}
		_ = c.Write(ctx, typ, msg)
		_ = c.Close(websocket.StatusNormalClosure, "")
	})
	logs := &syncBuffer{}
	s := newServer(t, serverOptions{sse: sseH, ws: wsH,
		logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})

	t.Run("flush", func(t *testing.T) {
		resp, err := s.client.Get(s.url + "/v1/events")
		if err != nil {
			t.Fatalf("GET /v1/events: %v", err)
		}
		defer resp.Body.Close()
		if err := <-flushErrs; err != nil {
			t.Fatalf("handler: %v", err)
		}
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "data: first\n" {
			t.Fatalf("first line = %q, %v; want it before the handler ends", line, err)
		}
		close(released)
		rest, err := io.ReadAll(br)
		if err != nil || !strings.Contains(string(rest), "data: last") {
			t.Errorf("rest = %q, %v", rest, err)
		}
	})

	t.Run("hijack", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/ws",
			&websocket.DialOptions{HTTPClient: s.client})
		if err != nil {
			status := 0
			if resp != nil {
				status = resp.StatusCode
			}
			t.Fatalf("dial through the middleware failed (status %d): %v", status, err)
		}
		defer c.CloseNow()
		if err := c.Write(ctx, websocket.MessageText, []byte("hello")); err != nil {
			t.Fatalf("write: %v", err)
		}
		_, msg, err := c.Read(ctx)
		if err != nil || string(msg) != "hello" {
			t.Fatalf("echo = %q, %v", msg, err)
		}
		_, _, err = c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Errorf("close: %v, want a normal closure", err)
		}
	})

	t.Run("access log", func(t *testing.T) {
		s.do(t, http.MethodGet, "/healthz?access_token=secret", noContentType, "")
		s.do(t, http.MethodGet, "/v1/nope", noContentType, "")
		wait.For(t, 5*time.Second, "access log lines", func() bool {
			l := logs.String()
			return strings.Contains(l, "path=/healthz status=200") &&
				strings.Contains(l, "path=/v1/nope status=404") &&
				strings.Contains(l, "path=/v1/ws status=101") &&
				strings.Contains(l, "hijacked=true")
		})
		if l := logs.String(); !strings.Contains(l, "level=DEBUG") || strings.Contains(l, "secret") {
			t.Errorf("access log must be at Debug and leave the query out:\n%s", l)
		}
	})
}

func TestPanicRecovery(t *testing.T) {
	logs := &syncBuffer{}
	panicky := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("late") != "" {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, strings.Repeat("partial ", 1024))
			http.NewResponseController(w).Flush()
		}
		panic("boom")
	})
	s := newServer(t, serverOptions{sse: panicky,
		logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})

	// Nothing written yet: a clean JSON 500.
	assertError(t, s.do(t, http.MethodGet, "/v1/events", noContentType, ""), http.StatusInternalServerError, "internal")
	wait.For(t, 5*time.Second, "the panic to be logged", func() bool {
		return strings.Contains(logs.String(), "panic serving request") && strings.Contains(logs.String(), "boom")
	})

	// Already streaming: the response is cut off, so the client cannot
	// mistake it for a complete one.
	resp, err := s.client.Get(s.url + "/v1/events?late=1")
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want the 200 already sent", resp.StatusCode)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Errorf("reading a response whose handler panicked mid-way succeeded; want an error")
	}

	// The server is still serving.
	if r := s.do(t, http.MethodGet, "/healthz", noContentType, ""); r.status != http.StatusOK {
		t.Errorf("healthz after panics: status %d", r.status)
	}
}
