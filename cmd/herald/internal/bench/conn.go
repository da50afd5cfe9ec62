package bench

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
// subscriber's per-event state for as long as read runs. close may be
// called from any goroutine, also during read, which it ends.
type subConn interface {
	read(ctx context.Context) error
	close()
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

// connect opens s's connection from src and subscribes it to its topic;
// since, if not empty, is the cursor to resume after.
func (r *run) connect(ctx context.Context, kind string, s *subscriber, src source, since string) (subConn, error) {
	topic := fmt.Sprintf("%s.%d", r.cfg.Prefix, s.topic)
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if kind == "sse" {
		return dialSSE(cctx, r, s, src.dialer, topic, since)
	}
	c, err := dialWS(cctx, src.dialer, r.cfg.TLS, r.cfg.nodeURL(s.node), wsOptions{
		bufSize: r.readBufferSize("ws"),
		deflate: r.cfg.WSCompression,
		delta:   r.cfg.Delta,
	})
	if err != nil {
		return nil, err
	}
	if err := c.subscribe(cctx, topic, since); err != nil {
		c.Close()
		return nil, err
	}
	r.wsConns.Add(1)
	if c.deflate {
		r.deflateConns.Add(1)
	}
	w := &wsSub{r: r, s: s, c: c}
	if r.cfg.Delta {
		w.ds = newDeltaState(r.texts)
	}
	return w, nil
}

// Control messages a subscriber counts: the server's word that it missed
// events it cannot replay.
var (
	wsReset  = []byte(`{"op":"reset"`)
	sseReset = []byte("event: herald.reset")
	wsEvent  = []byte(`{"op":"event"`)
)

// received handles one event of s (p is its WebSocket message or SSE data
// line) with its parsed fields. The first one also tells the epoch of the
// log, which a resume needs along with the cursor's sequence.
func (r *run) received(s *subscriber, p []byte, cursor uint64, seq, sent, now int64) {
	if s.epoch == "" {
		if e := epochOf(p); e != "" {
			s.epoch = e
			s.resumable.Store(true)
		}
	}
	r.observe(s, cursor, seq, sent, now)
}

// epochOf returns the epoch of the first "id" of an event's JSON: the text
// before the cursor's last '-'.
func epochOf(p []byte) string {
	i := bytes.Index(p, []byte(`"id":"`))
	if i < 0 {
		return ""
	}
	id := p[i+len(`"id":"`):]
	j := bytes.IndexByte(id, '"')
	if j < 0 {
		return ""
	}
	k := bytes.LastIndexByte(id[:j], '-')
	if k <= 0 {
		return ""
	}
	return string(id[:k])
}

type wsSub struct {
	r  *run
	s  *subscriber
	c  *wsConn
	ds *deltaState // with Config.Delta
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
		if w.ds != nil {
			w.deltaMessage(p)
		} else if cur, seq, sent, ok := parsePayload(p); ok {
			w.s.payload.Add(frameSize(len(p)))
			w.r.received(w.s, p, cur, seq, sent, w.c.conn.last)
		} else if bytes.HasPrefix(p, wsReset) {
			w.r.resets.Add(1)
		}
	}
}

// deltaMessage handles message p of a connection that asked for deltas: a
// keyed event's data, whole or rebuilt from a delta, must be what was
// published, and becomes the base of its key. An event that fails is
// counted as a "delta_mismatch" and not as received (so it is also lost).
func (w *wsSub) deltaMessage(p []byte) {
	if !bytes.HasPrefix(p, wsEvent) {
		if bytes.HasPrefix(p, wsReset) {
			w.r.resets.Add(1)
			w.ds.reset()
		}
		return
	}
	ev, keyed, err := w.ds.keyed(p)
	if !keyed {
		if cur, seq, sent, ok := parsePayload(p); ok {
			w.s.payload.Add(frameSize(len(p)))
			w.r.received(w.s, p, cur, seq, sent, w.c.conn.last)
		}
		return
	}
	if err != nil {
		w.ds.forget(ev.key)
		w.r.failWith("delta_mismatch", err)
		return
	}
	// What the server sent, right or wrong, is the base of its next delta.
	w.ds.keep(ev.key, ev.data)
	cur, okc := parseCursor(p)
	seq, sent, okd := parseData(ev.data.b)
	if !okc || !okd {
		w.r.failWith("delta_mismatch", fmt.Errorf("event without a cursor or bseq and bts: %.300s (data %.300s)", p, ev.data.b))
		return
	}
	if want := w.r.pubLogs[w.s.topic].get(seq); want != ev.data.hash {
		w.r.failWith("delta_mismatch", fmt.Errorf("data of bseq %d (delta %v) is not what was published: %.300s", seq, ev.isDelta, ev.data.b))
		return
	}
	if ev.isDelta {
		w.s.deltas++
	}
	w.s.payload.Add(frameSize(ev.fullSize))
	w.r.received(w.s, p, cur, seq, sent, w.c.conn.last)
}

func (w *wsSub) close() { w.c.Close() }

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

func dialSSE(ctx context.Context, r *run, s *subscriber, d *net.Dialer, topic, lastEventID string) (subConn, error) {
	e, err := newEndpoint(r.cfg.nodeURL(s.node), "/v1/events?topic="+url.QueryEscape(topic), r.cfg.TLS, d)
	if err != nil {
		return nil, err
	}
	var sc *stampConn
	var br *bufio.Reader
	var resp *http.Response
	_, err = e.open(ctx, func(raw net.Conn) error {
		req := "GET " + e.path + " HTTP/1.1\r\nHost: " + e.host +
			"\r\nAccept: text/event-stream\r\nUser-Agent: herald-bench\r\n"
		if lastEventID != "" {
			req += "Last-Event-ID: " + lastEventID + "\r\n"
		}
		req += "\r\n"
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
				s.r.received(s.s, line, cur, seq, sent, s.conn.last)
			}
		} else if bytes.HasPrefix(line, sseReset) {
			s.r.resets.Add(1)
		}
	}
}

func (s *sseSub) close() { s.conn.Close() }

// errorKind names a reader's failure in the report: a WebSocket the server
// closed on purpose by its close code, one that broke the protocol as
// "ws_protocol", anything else as "read".
func errorKind(err error) string {
	var ce *closeError
	if errors.As(err, &ce) {
		return fmt.Sprintf("ws_close_%d", ce.code)
	}
	var pe *protocolError
	if errors.As(err, &pe) {
		return "ws_protocol"
	}
	return "read"
}

func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
