package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
	"unsafe"
)

// subConn is one subscriber connection; read consumes events until ctx ends
// or the connection fails. The goroutine that calls read owns the
// subscriber's per-event state for as long as read runs.
type subConn interface {
	read(ctx context.Context) error
}

// source is one loopback source address: a dialer bound to it.
type source struct {
	dialer *net.Dialer
}

// newSources returns one source per address 127.0.0.1 … 127.0.0.n.
func newSources(base, n int) []source {
	out := make([]source, n)
	for i := range out {
		out[i] = source{dialer: &net.Dialer{
			Timeout:   10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+base+i))},
			Control:   bindNoPort,
		}}
	}
	return out
}

// sseBufferSize is the read buffer of an SSE stream in a run that delivers
// events.
const sseBufferSize = 64 << 10

// idleBufferSize is the read buffer of a subscriber in the connect and idle
// modes, which deliver no events: 64 KiB per connection made the load
// generator's own allocations a cost of the ramp it measures.
const idleBufferSize = 4 << 10

// readBufferSize is the read buffer of each subscriber connection of a run.
func (r *run) readBufferSize(kind string) int {
	switch {
	case r.cfg.Mode == ModeConnect || r.cfg.Mode == ModeIdle:
		return idleBufferSize
	case kind == "sse":
		return sseBufferSize
	default:
		return wsBufferSize
	}
}

func (r *run) connect(ctx context.Context, kind string, s *subscriber, src source) (subConn, error) {
	topic := fmt.Sprintf("%s.%d", r.cfg.Prefix, s.topic)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "sse" {
		return dialSSE(cctx, r, s, src.dialer, topic)
	}
	c, err := dialWS(cctx, src.dialer, r.cfg.TLS, r.cfg.URL, r.readBufferSize("ws"))
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(cctx, topic); err != nil {
		c.Close()
		return nil, err
	}
	return &wsSub{r: r, s: s, c: c}, nil
}

type wsSub struct {
	r *run
	s *subscriber
	c *wsConn
}

func (w *wsSub) read(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { w.c.Close() })
	defer stop()
	defer w.c.Close()
	defer w.r.flush(w.s)
	for {
		p, err := w.c.next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if cur, seq, sent, ok := parsePayload(p); ok {
			w.r.observe(w.s, cur, seq, sent, w.c.conn.last)
		}
	}
}

// sseSub reads one event stream. It is a plain HTTP/1.1 GET on a
// connection of its own, like the WebSocket client and for the same reason:
// net/http's Transport keeps two goroutines and its own buffers per
// connection and was half of the load generator's cost of opening a stream.
type sseSub struct {
	r    *run
	s    *subscriber
	conn *stampConn
	br   *bufio.Reader // the stream: the connection's reader, or one over a chunked body
}

func dialSSE(ctx context.Context, r *run, s *subscriber, d *net.Dialer, topic string) (subConn, error) {
	e, err := newEndpoint(r.cfg.URL, "/v1/events?topic="+url.QueryEscape(topic), r.cfg.TLS, d)
	if err != nil {
		return nil, err
	}
	var sc *stampConn
	var br *bufio.Reader
	var resp *http.Response
	_, err = e.open(ctx, func(raw net.Conn) error {
		req := "GET " + e.path + " HTTP/1.1\r\nHost: " + e.host +
			"\r\nAccept: text/event-stream\r\nUser-Agent: herald-bench\r\n\r\n"
		if _, err := io.WriteString(raw, req); err != nil {
			return err
		}
		sc = &stampConn{Conn: raw}
		br = bufio.NewReaderSize(sc, r.readBufferSize("sse"))
		var rerr error
		if resp, rerr = http.ReadResponse(br, nil); rerr != nil {
			return rerr
		}
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open stream: %w", err)
	}
	if len(resp.TransferEncoding) > 0 {
		// A chunked stream (a proxy, or another server): events are read
		// from the decoded body, a second buffer on top of the first.
		br = bufio.NewReaderSize(resp.Body, sseBufferSize)
	}
	return &sseSub{r: r, s: s, conn: sc, br: br}, nil
}

func (s *sseSub) read(ctx context.Context) error {
	defer s.conn.Close()
	defer s.r.flush(s.s)
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	for {
		line, err := s.br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer is not one of ours; skip it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = s.br.ReadSlice('\n')
			}
			continue
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if bytes.HasPrefix(line, []byte("data: ")) {
			if cur, seq, sent, ok := parsePayload(line); ok {
				s.r.observe(s.s, cur, seq, sent, s.conn.last)
			}
		}
	}
}

// errorKind names a reader's failure in the report: a WebSocket the server
// closed on purpose by its close code, anything else as "read".
func errorKind(err error) string {
	var ce *closeError
	if errors.As(err, &ce) {
		return fmt.Sprintf("ws_close_%d", ce.code)
	}
	return "read"
}

func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
