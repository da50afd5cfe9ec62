package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// The publishing side of a run sends its requests through posters: plain
// HTTP/1.1 keep-alive connections, one request at a time, each request one
// write. net/http's client costs two goroutines and several channel hand-offs
// per connection and request, which on this kind of box made the load
// generator, not the server, the limit of a publish run. Responses are still
// read with http.ReadResponse, so any well-formed answer (chunked, close
// delimited, with a body or not) is understood.

const (
	// posterTimeout bounds one request, from its write to the end of its
	// answer.
	posterTimeout = 10 * time.Second
	// posterBufferSize is a poster's read buffer: answers are small.
	posterBufferSize = 4 << 10
)

// endpoint is where posters connect and what they request.
type endpoint struct {
	addr    string // host:port to dial
	host    string // Host header
	path    string // request path
	tls     *tls.Config
	dialer  *net.Dialer
	headers string // fixed header lines, each ending in \r\n
}

// newEndpoint parses base (http or https) and appends path to its path.
func newEndpoint(base, path string, tlsConf *tls.Config, d *net.Dialer) (*endpoint, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("failed to parse %q: %w", base, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("failed to use %s: unsupported scheme %q", base, u.Scheme)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	e := &endpoint{addr: addr, host: u.Host, path: u.Path + path, dialer: d}
	if u.Scheme == "https" {
		conf := tlsConf.Clone()
		if conf == nil {
			conf = &tls.Config{}
		}
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		conf.NextProtos = []string{"http/1.1"}
		e.tls = conf
	}
	if e.dialer == nil {
		e.dialer = &net.Dialer{Timeout: posterTimeout}
	}
	return e, nil
}

// open dials the endpoint and runs handshake on the new connection, within
// ctx: cancelling ctx or reaching its deadline interrupts both. The
// connection returned has no deadline and outlives ctx.
func (e *endpoint) open(ctx context.Context, handshake func(net.Conn) error) (net.Conn, error) {
	raw, err := e.dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, fmt.Errorf("failed to dial %s: %w", e.addr, err)
	}
	if e.tls != nil {
		raw = tls.Client(raw, e.tls)
	}
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	if err := handshake(raw); err != nil {
		stop()
		raw.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", err, ctx.Err())
		}
		return nil, err
	}
	if !stop() {
		raw.Close()
		return nil, ctx.Err()
	}
	_ = raw.SetDeadline(time.Time{})
	return raw, nil
}

// poster is one keep-alive connection to an endpoint. It is used by one
// goroutine at a time: a pool hands it out and takes it back.
type poster struct {
	e    *endpoint
	conn net.Conn
	br   *bufio.Reader
	buf  []byte // the request being written, reused
	stop func() bool
}

// post sends body as a JSON POST and reads the whole answer. It returns the
// status; any error leaves the poster closed, and the next post redials.
func (p *poster) post(ctx context.Context, body []byte) (int, error) {
	if p.conn == nil {
		if err := p.dial(ctx); err != nil {
			return 0, err
		}
	}
	p.buf = append(p.buf[:0], "POST "...)
	p.buf = append(p.buf, p.e.path...)
	p.buf = append(p.buf, " HTTP/1.1\r\nHost: "...)
	p.buf = append(p.buf, p.e.host...)
	p.buf = append(p.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	p.buf = strconv.AppendInt(p.buf, int64(len(body)), 10)
	p.buf = append(p.buf, "\r\n"...)
	p.buf = append(p.buf, p.e.headers...)
	p.buf = append(p.buf, "\r\n"...)
	p.buf = append(p.buf, body...)
	_ = p.conn.SetDeadline(time.Now().Add(posterTimeout))
	if _, err := p.conn.Write(p.buf); err != nil {
		return 0, p.fail(ctx, err)
	}
	if code, ok, err := p.readSimple(); ok || err != nil {
		if err != nil {
			return 0, p.fail(ctx, err)
		}
		return code, nil
	}
	resp, err := http.ReadResponse(p.br, nil)
	if err != nil {
		return 0, p.fail(ctx, err)
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, p.fail(ctx, err)
	}
	if resp.Close {
		p.close()
	}
	return resp.StatusCode, nil
}

// readSimple reads the common answer, a status line and headers with a
// Content-Length and nothing that changes how the body is framed, without
// building an http.Response: that was a tenth of the load generator's CPU.
// It reports false, having consumed nothing, for any other answer, which
// post then reads with http.ReadResponse.
func (p *poster) readSimple() (code int, ok bool, err error) {
	var head []byte
	for n := 1; ; n = p.br.Buffered() + 1 {
		if n > p.br.Size() {
			// A head larger than the buffer: left to http.ReadResponse.
			return 0, false, nil
		}
		// Peek(n) waits for one byte more than was buffered, at most one
		// read; then everything buffered is searched.
		if _, err := p.br.Peek(n); err != nil {
			if p.br.Buffered() > 0 {
				// A short answer: http.ReadResponse reports what is wrong.
				return 0, false, nil
			}
			return 0, false, err
		}
		head, _ = p.br.Peek(p.br.Buffered())
		if i := bytes.Index(head, []byte("\r\n\r\n")); i >= 0 {
			head = head[:i+4]
			break
		}
	}
	// "HTTP/1.1 200 OK\r\n"
	if len(head) < 12 || !bytes.HasPrefix(head, []byte("HTTP/1.1 ")) || head[12] != ' ' && head[12] != '\r' {
		return 0, false, nil
	}
	code, err = strconv.Atoi(string(head[9:12]))
	if err != nil || code < 200 {
		return 0, false, nil
	}
	length := -1
	lines := head[bytes.IndexByte(head, '\n')+1 : len(head)-2]
	for len(lines) > 0 {
		i := bytes.IndexByte(lines, '\n')
		line := bytes.TrimRight(lines[:i], "\r")
		lines = lines[i+1:]
		name, value, found := bytes.Cut(line, []byte(":"))
		if !found {
			return 0, false, nil
		}
		value = bytes.TrimSpace(value)
		switch {
		case asciiEqualFold(name, "Content-Length"):
			n, err := strconv.Atoi(string(value))
			if err != nil || n < 0 || length >= 0 {
				return 0, false, nil
			}
			length = n
		case asciiEqualFold(name, "Transfer-Encoding"), asciiEqualFold(name, "Connection"):
			return 0, false, nil
		}
	}
	if length < 0 {
		return 0, false, nil
	}
	if _, err := p.br.Discard(len(head)); err != nil {
		return 0, true, err
	}
	if _, err := p.br.Discard(length); err != nil {
		return 0, true, err
	}
	return code, true, nil
}

// asciiEqualFold reports whether b equals s, ignoring ASCII case.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i]|0x20, s[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

func (p *poster) dial(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, posterTimeout)
	defer cancel()
	c, err := p.e.dialer.DialContext(dctx, "tcp", p.e.addr)
	if err != nil {
		return fmt.Errorf("failed to dial %s: %w", p.e.addr, err)
	}
	if p.e.tls != nil {
		tc := tls.Client(c, p.e.tls)
		if err := tc.HandshakeContext(dctx); err != nil {
			c.Close()
			return fmt.Errorf("failed to complete TLS handshake with %s: %w", p.e.addr, err)
		}
		c = tc
	}
	p.conn = c
	if p.br == nil {
		p.br = bufio.NewReaderSize(c, posterBufferSize)
	} else {
		p.br.Reset(c)
	}
	// One registration per connection, not per request: cancelling the run
	// interrupts whatever request is in flight.
	p.stop = context.AfterFunc(ctx, func() { c.Close() })
	return nil
}

// fail closes the connection and names ctx's end as the cause when the run
// was cancelled.
func (p *poster) fail(ctx context.Context, err error) error {
	p.close()
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

func (p *poster) close() {
	if p.conn == nil {
		return
	}
	p.stop()
	p.conn.Close()
	p.conn = nil
}

// posterPool holds the idle posters of one endpoint. Its size is bounded by
// how many callers use it at once: a poster is created only when none is
// idle, and goes back after each request.
type posterPool struct {
	e    *endpoint
	mu   sync.Mutex
	idle []*poster
}

func (pp *posterPool) get() *poster {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if n := len(pp.idle); n > 0 {
		p := pp.idle[n-1]
		pp.idle = pp.idle[:n-1]
		return p
	}
	return &poster{e: pp.e}
}

func (pp *posterPool) put(p *poster) {
	pp.mu.Lock()
	pp.idle = append(pp.idle, p)
	pp.mu.Unlock()
}

// closeAll closes the idle posters; posters still in use must not be put
// back afterwards.
func (pp *posterPool) closeAll() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, p := range pp.idle {
		p.close()
	}
	pp.idle = nil
}

// postWant posts body through the pool and checks the status.
func (pp *posterPool) postWant(ctx context.Context, body []byte, want int) error {
	p := pp.get()
	code, err := p.post(ctx, body)
	pp.put(p)
	if err != nil {
		return err
	}
	if code != want {
		return statusError{code}
	}
	return nil
}
