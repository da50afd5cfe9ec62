package ws

import (
	"bytes"
	"sync"

	kflate "github.com/klauspost/compress/flate"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/wsframe"
)

// permessage-deflate (RFC 7692). The extension is negotiated with
// server_no_context_takeover and client_no_context_takeover (acceptDeflate,
// by ServeHTTP rather than coder/websocket): each message is compressed on
// its own, so a connection keeps no compressor or window between messages,
// and an event's compressed frame is the same bytes for every subscriber.
// It is encoded once per event, when the first subscriber that negotiated
// the extension writes it (deflateFormat), and cached in the hub.Message
// beside the plain frame's head.
//
// Client messages are inflated in corkConn's read path (inflate.go): the
// read limit counts inflated bytes, so a small frame that inflates past it
// closes the connection with 1009 like a large one.

// compressThreshold is the shortest envelope whose event goes compressed.
// Below it, deflate saves a few bytes at best (a short JSON object has
// little to repeat), and the frame goes plain, RSV1 clear, as RFC 7692
// allows (section 6). It is coder/websocket's own threshold without context
// takeover, for the messages it would compress.
const compressThreshold = 512

// deflateLimit is the longest compressed frame kept for an envelope of n
// bytes: half of it. A saving of less than half is not worth the memory a
// second copy of the event takes in the history while it is retained
// (hub.NewWholeFormat counts the limit in every retained message's size),
// and JSON events of this size typically compress to a third or less.
func deflateLimit(n int) int {
	if n < compressThreshold {
		return 0
	}
	return n / 2
}

// deflateFormat is an event's compressed frame: a final text frame with
// RSV1 set whose payload is the DEFLATE of the plain frame's payload,
// {"op":"event",…envelope fields…}, less the 00 00 ff ff that ends it (RFC
// 7692 section 7.2.1). Empty for an envelope under compressThreshold or one
// that does not compress to deflateLimit: the plain frame goes instead.
//
// The compressor is klauspost/compress's stateless DEFLATE: it keeps
// nothing between calls (a message is compressed on its own anyway), so
// there is no writer to reset or pool. On a 2.9 KB dashboard event it takes
// 14 to 16 µs, as fast as klauspost's level-1 writer (which holds 454 KB)
// for a frame 1 % larger, where compress/flate's writer at BestSpeed, reset
// for each message, takes 23 µs (docs/benchmarks.md, "WebSocket
// compression").
var deflateFormat = hub.NewWholeFormat(func(dst []byte, m *hub.Message) []byte {
	env := m.Envelope()
	if len(env) < compressThreshold {
		return dst
	}
	d := deflaters.Get().(*deflater)
	defer d.release()
	d.in = append(append(d.in[:0], eventOp...), env[1:]...)
	if err := kflate.StatelessDeflate(&d.out, d.in, false, nil); err != nil {
		return dst // unreachable: writing to a bytes.Buffer does not fail
	}
	p, ok := bytes.CutSuffix(d.out.Bytes(), []byte(deflateTail))
	if !ok {
		return dst // unreachable: a non-final stream ends with an empty stored block
	}
	n := wsframe.MaxHeader - 4 + len(p)
	if n > deflateLimit(len(env)) {
		return dst
	}
	if dst == nil {
		dst = make([]byte, 0, n)
	}
	dst = wsframe.AppendHeader(dst, wsframe.Fin|rsv1|wsframe.OpText, false, len(p))
	return append(dst, p...)
}, deflateLimit)

// rsv1 is the RSV1 bit of a frame's first byte: a compressed message.
const rsv1 = 0x40

// eventOp begins every event frame's payload; the envelope follows it,
// less its opening brace.
const eventOp = `{"op":"event",`

// deflateTail ends a DEFLATE stream flushed at a byte boundary, and is left
// out of a compressed message (RFC 7692 section 7.2.1).
const deflateTail = "\x00\x00\xff\xff"

// deflater is the scratch of one compression: the plain payload and its
// DEFLATE. Pooled, so that no connection holds one.
type deflater struct {
	in  []byte
	out bytes.Buffer
}

var deflaters = sync.Pool{New: func() any { return new(deflater) }}

// maxPooledDeflater bounds the scratch a pooled deflater keeps: a rare
// large event's buffers are left to the collector.
const maxPooledDeflater = 256 << 10

func (d *deflater) release() {
	if cap(d.in) > maxPooledDeflater || d.out.Cap() > maxPooledDeflater {
		return
	}
	d.out.Reset()
	deflaters.Put(d)
}
