package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/heraldpush/herald/internal/wsframe"
)

// The subscriber side of a WebSocket is a hand-written RFC 6455 client
// because it has to cost well under a microsecond per received message while
// sharing two cores with the server it measures, and little memory per
// connection for tens of thousands of subscribers in one process: frames are
// parsed straight out of one bufio.Reader, an unfragmented message is handed
// over without a copy, and nothing on the per-message path allocates, locks
// or selects. Measured against coder/websocket's client, which the server
// uses (docs/benchmarks.md, "The load generator's WebSocket client"):
// 0.2–0.35 µs and no allocation per received message against 1.6–2.6 µs and
// a 512-byte allocation (BenchmarkClientRead), and 7.6 KB of heap and stacks
// per idle subscriber against 15.2 KB (TestClientMemory), so about 0.46 GB
// instead of 0.91 GB for 60,000 subscribers. It speaks only what a
// subscriber needs: permessage-deflate without context takeover if asked
// (inflate.go), no other extension, and it writes only its subscribe
// message and control replies. Frame headers and the accept key come from
// internal/wsframe, the code the server's frame writer uses too.

const (
	// wsBufferSize is the read buffer of one connection. A server that
	// coalesces frames into large writes is read in few syscalls, and pages
	// of the buffer that are never filled are never touched.
	wsBufferSize = 64 << 10
	// wsReadLimit bounds one (reassembled) message.
	wsReadLimit = 4 << 20
	// wsControlTimeout bounds writing a pong or close reply.
	wsControlTimeout = 10 * time.Second
)

// closeError is the server's close frame: the connection ended on purpose
// (slow consumer, going away, …), which a run reports by its code.
type closeError struct {
	code   int // 0: the frame had no status code
	reason string
}

func (e *closeError) Error() string {
	return fmt.Sprintf("server closed the connection: %d %s", e.code, e.reason)
}

// stampConn notes when each read returned, so that every message that came
// out of one read gets the same receive time without a clock call per
// message. Only the goroutine reading the connection touches last.
type stampConn struct {
	net.Conn
	last int64 // unix ns after the newest Read
}

func (c *stampConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.last = time.Now().UnixNano()
	return n, err
}

// wsConn is one client connection after the handshake.
//
// It is not safe for concurrent use: one goroutine reads messages and, as the
// only writer once the handshake is done, answers pings and the close
// handshake itself. Close may be called from any goroutine to unblock it.
type wsConn struct {
	conn  *stampConn
	br    *bufio.Reader
	msg   []byte // reassembly buffer for fragmented or oversize messages
	frag  bool   // a fragmented data message is in progress
	pings int    // pings answered
	ctl   [2 + 4 + 125]byte

	opts    wsOptions
	deflate bool   // permessage-deflate was negotiated
	zfrag   bool   // the fragmented message in progress is compressed
	out     []byte // the inflated message
	// compressed counts the messages that came compressed.
	compressed int64
}

// wsOptions are a connection's choices.
type wsOptions struct {
	bufSize int  // read buffer (wsBufferSize for a run that delivers events)
	deflate bool // offer permessage-deflate without context takeover
	delta   bool // subscribe with "delta":"fossil"
}

// newWSConn wraps raw with a read buffer of o.bufSize bytes.
func newWSConn(raw net.Conn, o wsOptions) *wsConn {
	c := &wsConn{conn: &stampConn{Conn: raw}, opts: o}
	c.br = bufio.NewReaderSize(c.conn, o.bufSize)
	return c
}

// next returns the next data message's payload, inflated if it came
// compressed. It answers pings and the close handshake on the way, and
// returns a *closeError after a close frame and a *protocolError when the
// server breaks RFC 6455 or RFC 7692. The payload is valid until the next
// call.
func (c *wsConn) next() ([]byte, error) {
	for {
		hdr, err := c.br.Peek(2)
		if err != nil {
			return nil, err
		}
		b0, b1 := hdr[0], hdr[1]
		if b1&0x80 != 0 {
			return nil, protoErrorf("server frames must not be masked")
		}
		rsv1 := b0&0x40 != 0
		if b0&0x30 != 0 || rsv1 && !c.deflate {
			return nil, protoErrorf("reserved bits set")
		}
		fin, op := b0&0x80 != 0, b0&0x0f
		// RSV1 marks a compressed message on its first frame only, never
		// on a continuation or a control frame (RFC 7692 §6).
		if rsv1 && (op == wsframe.OpContinuation || op >= wsframe.OpClose) {
			return nil, protoErrorf("RSV1 set on a frame of opcode %d", op)
		}
		n, hlen := int64(b1&0x7f), 2
		switch n {
		case 126:
			hlen = 4
		case 127:
			hlen = 10
		}
		if hlen > 2 {
			if hdr, err = c.br.Peek(hlen); err != nil {
				return nil, err
			}
			if hlen == 4 {
				n = int64(binary.BigEndian.Uint16(hdr[2:]))
			} else {
				n = int64(binary.BigEndian.Uint64(hdr[2:]))
			}
		}
		_, _ = c.br.Discard(hlen) // peeked: cannot fail
		if n < 0 || n > wsReadLimit {
			return nil, protoErrorf("a frame of %d bytes is over the limit", uint64(n))
		}

		if op >= wsframe.OpClose {
			if !fin || n > 125 {
				return nil, protoErrorf("bad control frame")
			}
			p, err := c.payload(int(n))
			if err != nil {
				return nil, err
			}
			if err := c.control(op, p); err != nil {
				return nil, err
			}
			continue
		}

		switch {
		case op == wsframe.OpContinuation && !c.frag:
			return nil, protoErrorf("continuation without a message")
		case op != wsframe.OpContinuation && c.frag:
			return nil, protoErrorf("new message inside a fragmented one")
		case op != wsframe.OpContinuation && op != wsframe.OpText && op != wsframe.OpBinary:
			return nil, protoErrorf("unknown opcode %d", op)
		}
		if fin && !c.frag {
			// The common case: a whole message in one frame, in the buffer.
			p, err := c.payload(int(n))
			if err != nil || !rsv1 {
				return p, err
			}
			return c.inflate(p)
		}
		// A fragment: collect it.
		if !c.frag {
			c.msg = c.msg[:0]
			c.frag = true
			c.zfrag = rsv1
		}
		if int64(len(c.msg))+n > wsReadLimit {
			return nil, protoErrorf("a message is over %d bytes", wsReadLimit)
		}
		if err := c.appendPayload(int(n)); err != nil {
			return nil, err
		}
		if fin {
			c.frag = false
			if c.zfrag {
				return c.inflate(c.msg)
			}
			return c.msg, nil
		}
	}
}

// inflate returns the compressed message p inflated: in c.out, or a
// read-only slice shared with other connections (inflateShared).
func (c *wsConn) inflate(p []byte) ([]byte, error) {
	out, shared, err := inflateShared(c.out, p, wsReadLimit)
	if err != nil {
		return nil, err
	}
	if !shared {
		c.out = out
	}
	c.compressed++
	return out, nil
}

// payload returns the next n bytes: a view of the read buffer when they fit,
// otherwise a copy in c.msg (which must not hold a fragment in progress).
func (c *wsConn) payload(n int) ([]byte, error) {
	if n <= c.br.Size() {
		p, err := c.br.Peek(n)
		if err != nil {
			return nil, err
		}
		_, _ = c.br.Discard(n) // the bytes stay put until the next read
		return p, nil
	}
	c.msg = c.msg[:0]
	if err := c.appendPayload(n); err != nil {
		return nil, err
	}
	return c.msg, nil
}

// appendPayload appends the next n bytes to c.msg.
func (c *wsConn) appendPayload(n int) error {
	c.msg = grow(c.msg, n)
	start := len(c.msg)
	c.msg = c.msg[:start+n]
	_, err := io.ReadFull(c.br, c.msg[start:])
	return err
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), max(2*cap(b), len(b)+n))
	copy(nb, b)
	return nb
}

// control handles a ping, pong or close frame whose payload is p.
func (c *wsConn) control(op byte, p []byte) error {
	switch op {
	case wsframe.OpPing:
		// The server drops a connection whose pings go unanswered.
		c.pings++
		return c.writeControl(wsframe.OpPong, p)
	case wsframe.OpClose:
		e := &closeError{}
		if len(p) >= 2 {
			e.code = int(binary.BigEndian.Uint16(p))
			e.reason = string(p[2:])
			// Echo the status code, as RFC 6455 §5.5.1 asks.
			_ = c.writeControl(wsframe.OpClose, p[:2])
		} else {
			_ = c.writeControl(wsframe.OpClose, nil)
		}
		return e
	case wsframe.OpPong:
		return nil
	default:
		return protoErrorf("unknown opcode %d", op)
	}
}

// writeControl writes one masked control frame.
func (c *wsConn) writeControl(op byte, p []byte) error {
	f := appendFrame(c.ctl[:0], op, p)
	_ = c.conn.SetWriteDeadline(time.Now().Add(wsControlTimeout))
	defer c.conn.SetWriteDeadline(time.Time{})
	if _, err := c.conn.Write(f); err != nil {
		return fmt.Errorf("failed to write control frame: %w", err)
	}
	return nil
}

// appendFrame appends p as one final, masked client frame (RFC 6455 §5.3).
func appendFrame(dst []byte, op byte, p []byte) []byte {
	dst = wsframe.AppendHeader(dst, wsframe.Fin|op, true, len(p))
	var key [4]byte
	binary.LittleEndian.PutUint32(key[:], mrand.Uint32())
	dst = append(dst, key[:]...)
	start := len(dst)
	dst = append(dst, p...)
	for i := range p {
		dst[start+i] ^= key[i&3]
	}
	return dst
}

// dialWS opens a WebSocket to base+"/v1/ws" from the dialer's source address
// and performs the opening handshake; ctx bounds the handshake only.
func dialWS(ctx context.Context, d *net.Dialer, tlsConf *tls.Config, base string, o wsOptions) (*wsConn, error) {
	e, err := newEndpoint(base, "/v1/ws", tlsConf, d)
	if err != nil {
		return nil, err
	}
	var c *wsConn
	_, err = e.open(ctx, func(raw net.Conn) error {
		c = newWSConn(raw, o)
		return c.handshake(e.host, e.path)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open WebSocket: %w", err)
	}
	return c, nil
}

// handshake sends the upgrade request and checks the server's answer
// (RFC 6455 §4.1).
func (c *wsConn) handshake(host, path string) error {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	ext := ""
	if c.opts.deflate {
		ext = "Sec-WebSocket-Extensions: " + deflateOffer + "\r\n"
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.v1\r\n"+
		"%sUser-Agent: herald-bench\r\n\r\n", path, host, key, ext)
	if _, err := io.WriteString(c.conn, req); err != nil {
		return fmt.Errorf("failed to send handshake: %w", err)
	}
	resp, err := http.ReadResponse(c.br, &http.Request{Method: http.MethodGet})
	if err != nil {
		return fmt.Errorf("failed to read handshake response: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return fmt.Errorf("failed to open WebSocket: %s %s", resp.Status, bytes.TrimSpace(body))
	}
	if !headerHas(resp.Header, "Upgrade", "websocket") || !headerHas(resp.Header, "Connection", "upgrade") {
		return errors.New("failed to open WebSocket: response lacks Upgrade: websocket / Connection: Upgrade")
	}
	if got, want := resp.Header.Get("Sec-WebSocket-Accept"), wsframe.AcceptKey(key); got != want {
		return fmt.Errorf("failed to open WebSocket: Sec-WebSocket-Accept %q, want %q", got, want)
	}
	if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != "" && p != "herald.v1" {
		return fmt.Errorf("failed to open WebSocket: server chose subprotocol %q", p)
	}
	exts := resp.Header.Values("Sec-WebSocket-Extensions")
	if !c.opts.deflate {
		if e := strings.Join(exts, ", "); e != "" {
			return fmt.Errorf("failed to open WebSocket: server chose extensions %q, none offered", e)
		}
		return nil
	}
	if c.deflate, err = parseDeflateAnswer(exts); err != nil {
		return fmt.Errorf("failed to open WebSocket: %w", err)
	}
	return nil
}

// headerHas reports whether a comma-separated header contains token.
func headerHas(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for f := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(f), token) {
				return true
			}
		}
	}
	return false
}

// subscribe sends a subscribe message, with since if it is not empty, and
// waits for its ok; ctx bounds the wait.
func (c *wsConn) subscribe(ctx context.Context, topic, since string) error {
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetDeadline(dl)
	}
	err := c.sendSubscribe(topic, since)
	if !stop() {
		return fmt.Errorf("failed to subscribe: %w", ctx.Err())
	}
	_ = c.conn.SetDeadline(time.Time{})
	return err
}

func (c *wsConn) sendSubscribe(topic, since string) error {
	msg := fmt.Appendf(nil, `{"op":"subscribe","ref":1,"topics":[%q]`, topic)
	if since != "" {
		msg = fmt.Appendf(msg, `,"since":%q`, since)
	}
	if c.opts.delta {
		msg = append(msg, `,"delta":"fossil"`...)
	}
	msg = append(msg, '}')
	if _, err := c.conn.Write(appendFrame(nil, wsframe.OpText, msg)); err != nil {
		return fmt.Errorf("failed to subscribe: %w", err)
	}
	reply, err := c.next()
	if err != nil {
		return fmt.Errorf("failed to read subscribe reply: %w", err)
	}
	if !bytes.Contains(reply, []byte(`"op":"ok"`)) {
		return fmt.Errorf("subscribe refused: %s", reply)
	}
	return nil
}

// Close closes the connection without a close handshake; it unblocks a
// pending next.
func (c *wsConn) Close() error { return c.conn.Close() }
