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
	"strings"
	"time"
	"unsafe"

	"github.com/coder/websocket"
)

// subConn is one subscriber connection; read consumes events until ctx ends.
type subConn interface {
	read(ctx context.Context) error
}

// newClients returns one HTTP client per source address; a run closes
// their idle connections when it ends.
func newClients(n int) []*http.Client {
	out := make([]*http.Client, n)
	for i := range out {
		d := &net.Dialer{
			Timeout:   10 * time.Second,
			LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))},
		}
		out[i] = &http.Client{Transport: &http.Transport{
			DialContext:           d.DialContext,
			DisableCompression:    true,
			ResponseHeaderTimeout: 15 * time.Second,
			MaxIdleConnsPerHost:   -1,
		}}
	}
	return out
}

func (r *run) connect(ctx context.Context, kind string, s *subscriber, hc *http.Client) (subConn, error) {
	topic := fmt.Sprintf("%s.%d", r.cfg.Prefix, s.topic)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "sse" {
		return dialSSE(cctx, ctx, r, s, hc, topic)
	}
	return dialWS(cctx, r, s, hc, topic)
}

type wsSub struct {
	r *run
	s *subscriber
	c *websocket.Conn
}

func dialWS(ctx context.Context, r *run, s *subscriber, hc *http.Client, topic string) (subConn, error) {
	u := "ws" + strings.TrimPrefix(r.cfg.URL, "http") + "/v1/ws"
	c, _, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: hc, Subprotocols: []string{"herald.v1"}})
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s: %w", u, err)
	}
	c.SetReadLimit(4 << 20)
	msg := fmt.Sprintf(`{"op":"subscribe","ref":1,"topics":[%q]}`, topic)
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("failed to subscribe: %w", err)
	}
	_, reply, err := c.Read(ctx)
	if err != nil {
		c.CloseNow()
		return nil, fmt.Errorf("failed to read subscribe reply: %w", err)
	}
	if !bytes.Contains(reply, []byte(`"op":"ok"`)) {
		c.CloseNow()
		return nil, fmt.Errorf("subscribe refused: %s", reply)
	}
	return &wsSub{r: r, s: s, c: c}, nil
}

func (w *wsSub) read(ctx context.Context) error {
	defer w.c.CloseNow()
	buf := make([]byte, 0, 4096)
	for {
		_, rd, err := w.c.Reader(ctx)
		if err != nil {
			return err
		}
		buf = buf[:0]
		for {
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)]
			}
			n, err := rd.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		now := time.Now()
		if seq, sent, ok := parsePayload(buf); ok {
			w.r.observe(w.s, seq, sent, now)
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

func (s *sseSub) read(ctx context.Context) error {
	defer s.body.Close()
	br := bufio.NewReaderSize(s.body, 16<<10)
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
			if seq, sent, ok := parsePayload(line); ok {
				s.r.observe(s.s, seq, sent, time.Now())
			}
		}
	}
}

func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
