package ws

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/heraldpush/herald/internal/wsframe"
)

// Client messages compressed with permessage-deflate are inflated here, in
// corkConn's read path, before coder/websocket sees them: a compressed
// message (its frames, RSV1 on the first) is read whole from the socket,
// inflated into a pooled buffer, and handed to coder/websocket as one plain
// frame (masked with a zero key, which changes nothing). coder/websocket
// itself negotiates no extension. Why not let it inflate: once a connection
// has read one compressed message, coder/websocket keeps the 4 KiB
// bufio.Reader it inflates through until the connection closes, and
// browsers compress every message they send, so each browser connection
// would hold it idle (docs/benchmarks.md, "WebSocket compression"). Here
// nothing is kept between messages.
//
// Control frames that arrive between the frames of a compressed message
// are handed over after it, in their order: coder/websocket answers a ping
// a message later, which the protocol allows.
//
// Bad input: RSV1 on a connection that did not negotiate the extension, or
// on a control frame, reaches coder/websocket unchanged and is refused with
// 1002; RSV1 (or RSV2, RSV3) on a continuation frame, a data frame that is
// not a continuation inside a message, or an unmasked frame is
// errDeflateProtocol (1002); a payload that does not inflate is
// errInflate (1007); a message that inflates past the read limit, or whose
// compressed bytes exceed it, is ErrMessageTooBig (1009), as a plain one.

// deflateResponse is the extension the server answers every acceptable
// offer with.
const deflateResponse = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// acceptDeflate reports whether the request offers permessage-deflate with
// parameters the server can honour while compressing each message on its
// own (RFC 7692 section 7.1): any window size for the client (it needs no
// answer), the server's only at 15 bits.
func acceptDeflate(h http.Header) bool {
	for _, v := range h.Values("Sec-WebSocket-Extensions") {
		for _, offer := range strings.Split(v, ",") {
			params := strings.Split(offer, ";")
			if !strings.EqualFold(strings.TrimSpace(params[0]), "permessage-deflate") {
				continue
			}
			ok := true
			for _, p := range params[1:] {
				p = strings.TrimSpace(p)
				name, _, _ := strings.Cut(p, "=")
				switch {
				case p == "client_no_context_takeover", p == "server_no_context_takeover",
					name == "client_max_window_bits", p == "server_max_window_bits=15":
				default:
					ok = false
				}
			}
			if ok {
				return true
			}
		}
	}
	return false
}

var (
	// errDeflateProtocol is a compressed message that breaks RFC 7692's
	// framing rules (section 6.1): a protocol error.
	errDeflateProtocol = errors.New("the client broke permessage-deflate's framing")
	// errInflate is a compressed message whose payload does not inflate.
	errInflate = errors.New("the client sent a compressed message that does not inflate")
)

// inflation is the scratch of one compressed message: its compressed
// bytes and the frames handed to coder/websocket. Pooled: an idle
// connection holds none.
type inflation struct {
	in  []byte
	out bytes.Buffer
}

var inflations = sync.Pool{New: func() any { return new(inflation) }}

// flateReaders holds compress/flate's decompressors (about 40 KB each)
// between messages.
var flateReaders sync.Pool

// maxPooledInflation bounds the scratch kept in the pool.
const maxPooledInflation = 256 << 10

func (f *inflation) release() {
	if cap(f.in) > maxPooledInflation || f.out.Cap() > maxPooledInflation {
		return
	}
	f.in = f.in[:0]
	f.out.Reset()
	inflations.Put(f)
}

// readInflated serves Read on a connection that negotiated
// permessage-deflate: what an inflated message left to hand over, else, at
// the start of a frame, that frame's first byte alone, or the whole of a
// compressed message, inflated. ok is false where Read's usual path
// applies (inside a plain frame).
func (c *corkConn) readInflated(p []byte) (n int, ok bool, err error) {
	c.rmu.Lock()
	if c.inflated != nil {
		n = copy(p, c.inflated.out.Next(len(p)))
		if c.inflated.out.Len() == 0 {
			c.inflated.release()
			c.inflated = nil
		}
		c.rmu.Unlock()
		return n, true, nil
	}
	c.rmu.Unlock()
	if c.frame.n != 0 || c.frame.payload || len(p) == 0 {
		return 0, false, nil
	}
	var b0 [1]byte
	if n, err = c.readRaw(b0[:]); n == 0 {
		return 0, true, err
	}
	op := b0[0] & 0x0F
	if b0[0]&rsv1 == 0 || c.frame.inMessage || (op != wsframe.OpText && op != wsframe.OpBinary) {
		p[0] = b0[0] // coder/websocket reads the frame, and refuses what is wrong with it
		return 1, true, nil
	}
	f := inflations.Get().(*inflation)
	if err := c.inflateMessage(f, b0[0]); err != nil {
		f.release()
		return 0, true, err
	}
	c.rmu.Lock()
	c.inflated = f
	c.rmu.Unlock()
	return c.readInflated(p)
}

// rawReader reads the socket through corkConn's frame-bounded path.
type rawReader struct{ c *corkConn }

func (r rawReader) Read(p []byte) (int, error) { return r.c.readRaw(p) }

// inflateMessage reads the rest of a compressed message whose first byte
// was b0, and leaves in f.out the control frames that came with it, then the
// message as one plain frame.
func (c *corkConn) inflateMessage(f *inflation, b0 byte) error {
	r := rawReader{c}
	first := b0
	for {
		var h [wsframe.MaxHeader]byte
		h[0] = b0
		if _, err := io.ReadFull(r, h[1:2]); err != nil {
			return err
		}
		n := uint64(h[1] & 0x7F)
		ext := 0
		switch n {
		case 126:
			ext = 2
		case 127:
			ext = 8
		}
		if h[1]&0x80 == 0 {
			return fmt.Errorf("%w: an unmasked frame", errDeflateProtocol)
		}
		if _, err := io.ReadFull(r, h[2:2+ext+4]); err != nil {
			return err
		}
		switch ext {
		case 2:
			n = uint64(binary.BigEndian.Uint16(h[2:4]))
		case 8:
			n = binary.BigEndian.Uint64(h[2:10])
		}
		key := h[2+ext : 2+ext+4]
		control := b0&0x08 != 0
		if control {
			// Handed over as it came, masked, after the message (or at once,
			// for a close: the message is abandoned).
			if n > 125 {
				return fmt.Errorf("%w: a control frame of %d bytes", errDeflateProtocol, n)
			}
			// They wait for the message's end, so they count against the
			// read limit with its own bytes: pings sent forever inside a
			// message that never ends must not grow f.out forever, and the
			// two together stay within the one limit.
			if uint64(len(f.in))+uint64(f.out.Len())+uint64(2+ext+4)+n > uint64(c.readLimit) {
				return fmt.Errorf("%w: control frames inside a compressed message over %d bytes", websocket.ErrMessageTooBig, c.readLimit)
			}
			f.out.Write(h[:2+ext+4])
			if _, err := io.CopyN(&f.out, r, int64(n)); err != nil {
				return err
			}
			if b0&0x0F == wsframe.OpClose {
				return nil
			}
		} else {
			if b0 != first && (b0&0x70 != 0 || b0&0x0F != wsframe.OpContinuation) {
				return fmt.Errorf("%w: frame %#x inside a compressed message", errDeflateProtocol, b0)
			}
			if uint64(len(f.in))+uint64(f.out.Len())+n > uint64(c.readLimit) {
				return fmt.Errorf("%w: a compressed message over %d bytes", websocket.ErrMessageTooBig, c.readLimit)
			}
			start := len(f.in)
			f.in = append(f.in, make([]byte, n)...)
			if _, err := io.ReadFull(r, f.in[start:]); err != nil {
				return err
			}
			for i := range f.in[start:] {
				f.in[start+i] ^= key[i&3]
			}
			if b0&wsframe.Fin != 0 {
				return c.inflateInto(f, first&0x0F)
			}
		}
		var next [1]byte
		if _, err := io.ReadFull(r, next[:]); err != nil {
			return err
		}
		b0 = next[0]
	}
}

// inflateInto inflates f.in and appends it to f.out as one final, masked
// frame of opcode op, with a zero key.
func (c *corkConn) inflateInto(f *inflation, op byte) error {
	src := io.MultiReader(bytes.NewReader(f.in), strings.NewReader(deflateTail))
	fr, _ := flateReaders.Get().(io.ReadCloser)
	if fr == nil {
		fr = flate.NewReader(src)
	} else if err := fr.(flate.Resetter).Reset(src, nil); err != nil {
		return err
	}
	defer flateReaders.Put(fr)
	// The header goes in front once the length is known: leave room for
	// the longest, then move it up against the payload.
	at := f.out.Len()
	f.out.Write(make([]byte, wsframe.MaxHeader))
	n, err := io.Copy(&f.out, io.LimitReader(fr, c.readLimit+1))
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		// The message ends at the flush (RFC 7692 section 7.2.2), not with
		// a final block, hence ErrUnexpectedEOF for every good one.
		return fmt.Errorf("%w: %w", errInflate, err)
	}
	if n > c.readLimit {
		return fmt.Errorf("%w: a message inflating past %d bytes", websocket.ErrMessageTooBig, c.readLimit)
	}
	hdr := append(wsframe.AppendHeader(nil, wsframe.Fin|op, true, int(n)), 0, 0, 0, 0)
	b := f.out.Bytes()
	shift := wsframe.MaxHeader - len(hdr)
	copy(b[at+shift:], hdr)
	// Drop the unused front of the reserved header room.
	copy(b[at:], b[at+shift:])
	f.out.Truncate(len(b) - shift)
	return nil
}
