package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
	"unsafe"
)

// subConn is one subscriber connection; read consumes events until ctx ends
// or the connection fails. The goroutine that calls read owns the
// subscriber's per-event state for as long as read runs.
type subConn interface {
	read(ctx context.Context) error
}

// source is one loopback source address: a dialer bound to it for WebSocket
// connections, and an HTTP client on that dialer for SSE streams.
type source struct {
	dialer *net.Dialer
	client *http.Client
}

// newSources returns one source per address 127.0.0.1 … 127.0.0.n; a run
// closes their clients' idle connections when it ends.
func newSources(base, n int, tlsConf *tls.Config) []source {
	out := make([]source, n)
	for i := range out {
		d := &net.Dialer{
			Timeout:   10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+base+i))},
			Control:   bindNoPort,
		}
		out[i] = source{dialer: d, client: &http.Client{Transport: &http.Transport{
			DialContext:           d.DialContext,
			TLSClientConfig:       tlsConf,
			DisableCompression:    true,
			ResponseHeaderTimeout: 15 * time.Second,
			MaxIdleConnsPerHost:   -1,
			// A stream is read in large pieces when the server coalesces.
			ReadBufferSize: sseBufferSize,
		}}}
	}
	return out
}

// sseBufferSize is the read buffer of an SSE stream (and of its transport).
const sseBufferSize = 64 << 10

func (r *run) connect(ctx context.Context, kind string, s *subscriber, src source) (subConn, error) {
	topic := fmt.Sprintf("%s.%d", r.cfg.Prefix, s.topic)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "sse" {
		return dialSSE(cctx, ctx, r, s, src.client, topic)
	}
	c, err := dialWS(cctx, src.dialer, r.cfg.TLS, r.cfg.URL)
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

type sseSub struct {
	r    *run
	s    *subscriber
	body io.ReadCloser
}

func dialSSE(dialCtx, runCtx context.Context, r *run, s *subscriber, hc *http.Client, topic string) (subConn, error) {
	// The request lives as long as the run; only the wait for headers is bounded by dialCtx.
	req, err := http.NewRequestWithContext(runCtx, http.MethodGet, r.cfg.URL+"/v1/events?topic="+topic, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := hc.Do(req)
		done <- result{resp, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-dialCtx.Done():
		// hc.Do still owns the request; it ends when runCtx does.
		go func() {
			if r := <-done; r.resp != nil {
				r.resp.Body.Close()
			}
		}()
		return nil, fmt.Errorf("failed to open stream: %w", dialCtx.Err())
	}
	if res.err != nil {
		return nil, fmt.Errorf("failed to open stream: %w", res.err)
	}
	if res.resp.StatusCode != http.StatusOK {
		res.resp.Body.Close()
		return nil, fmt.Errorf("failed to open stream: %s", res.resp.Status)
	}
	return &sseSub{r: r, s: s, body: res.resp.Body}, nil
}

// stampReader notes when each read returned, like stampConn: every event
// that came out of one read gets the same receive time.
type stampReader struct {
	r    io.Reader
	last int64 // unix ns after the newest Read
}

func (s *stampReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.last = time.Now().UnixNano()
	return n, err
}

func (s *sseSub) read(ctx context.Context) error {
	defer s.body.Close()
	defer s.r.flush(s.s)
	sr := &stampReader{r: s.body}
	br := bufio.NewReaderSize(sr, sseBufferSize)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer is not one of ours; skip it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
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
				s.r.observe(s.s, cur, seq, sent, sr.last)
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
