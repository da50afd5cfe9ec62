package bench

import (
	"bytes"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/flate"
)

// permessage-deflate (RFC 7692) on the subscriber side. The client offers
// it only with both no-context-takeover parameters, so no message depends
// on an earlier one: a connection holds no inflater between messages, and
// the inflaters (about 40 KB each, most of it the 32 KiB window) are shared
// through a pool by however many connections are inflating at that moment,
// which is about the number of cores, not the number of connections.
//
// Inflating is the costly part of a compressed message: 13 µs or more for a
// dashboard event on this box (BenchmarkInflate), which at 100,000
// deliveries a second would be more than a core of the two the server
// being measured shares. But the server compresses an event once and sends
// the same bytes to every subscriber, and without context takeover the
// same bytes always inflate to the same message. So connections share the
// messages recently inflated (inflateCache), found by the compressed
// bytes themselves, compared in full: a subscriber gets exactly what
// inflating its own bytes would give, and an event is inflated about once
// per run, not once per subscriber (BenchmarkInflateShared).

// deflateOffer is the extension offer of a client run with compression.
const deflateOffer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover"

// deflateTail ends a message's DEFLATE data: the 00 00 ff ff the sender
// removed (RFC 7692 §7.2.2), then an empty final stored block, so the
// inflater reaches the end of its stream with io.EOF instead of asking for
// more input.
const deflateTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"

// inflater is one pooled DEFLATE decoder with the input buffer it reads.
type inflater struct {
	in []byte        // the message and deflateTail
	br bytes.Reader  // over in; the decoder's fastest input type
	fr io.ReadCloser // a klauspost flate decoder, also a flate.Resetter
}

var inflaters = sync.Pool{New: func() any {
	f := &inflater{}
	f.fr = flate.NewReader(&f.br)
	return f
}}

// inflated is one entry of inflateCache: a compressed message and what it
// inflates to. Immutable once stored.
type inflated struct {
	hash uint64
	comp []byte
	out  []byte
}

// inflateCache holds recently inflated messages, direct-mapped by the hash
// of their compressed bytes: a colliding message replaces the entry, which
// costs a later lookup an inflate, never a wrong answer.
var (
	inflateCache [1024]atomic.Pointer[inflated]
	inflateSeed  = maphash.MakeSeed()
)

// Messages larger than these are inflated each time: the cache holds at
// most 1024 × (16 + 64) KiB.
const (
	cacheMaxComp = 16 << 10
	cacheMaxOut  = 64 << 10
)

// inflateShared is inflate with the messages of other connections: it
// returns a shared, read-only slice when p was inflated recently, and
// otherwise inflates into dst and shares the result.
func inflateShared(dst, p []byte, limit int) (out []byte, shared bool, err error) {
	if len(p) > cacheMaxComp {
		out, err = inflate(dst, p, limit)
		return out, false, err
	}
	h := maphash.Bytes(inflateSeed, p)
	slot := &inflateCache[h%uint64(len(inflateCache))]
	if e := slot.Load(); e != nil && e.hash == h && bytes.Equal(e.comp, p) {
		return e.out, true, nil
	}
	out, err = inflate(dst, p, limit)
	if err != nil || len(out) > cacheMaxOut {
		return out, false, err
	}
	slot.Store(&inflated{hash: h, comp: bytes.Clone(p), out: bytes.Clone(out)})
	return out, false, nil
}

// protocolError is a violation of RFC 6455 or RFC 7692 by the server. The
// connection ends with it, and a run counts it as "ws_protocol".
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "failed to read frame: " + e.msg }

func protoErrorf(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// inflate decodes the compressed message p into dst[:0] and returns it; at
// most limit bytes of output are accepted.
func inflate(dst, p []byte, limit int) ([]byte, error) {
	f := inflaters.Get().(*inflater)
	defer inflaters.Put(f)
	f.in = append(append(f.in[:0], p...), deflateTail...)
	f.br.Reset(f.in)
	_ = f.fr.(flate.Resetter).Reset(&f.br, nil) // cannot fail without a checkpoint
	dst = dst[:0]
	for {
		if len(dst) == cap(dst) {
			dst = grow(dst, max(len(p)*4, 512))
		}
		n, err := f.fr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return nil, protoErrorf("inflated message is over %d bytes", limit)
		}
		if errors.Is(err, io.EOF) {
			return dst, nil
		}
		if err != nil {
			return nil, protoErrorf("failed to inflate message: %v", err)
		}
	}
}

// parseDeflateAnswer checks the server's Sec-WebSocket-Extensions answer
// to deflateOffer: nothing (compression declined), or permessage-deflate
// with server_no_context_takeover, which a server that accepts the offer
// must echo (RFC 7692 §7.1.1.1), and optionally client_no_context_takeover.
// Anything else, a window size the client did not offer included, is an
// error.
func parseDeflateAnswer(values []string) (bool, error) {
	h := strings.TrimSpace(strings.Join(values, ","))
	if h == "" {
		return false, nil
	}
	if strings.Contains(h, ",") {
		return false, fmt.Errorf("server chose several extensions %q, one offered", h)
	}
	params := strings.Split(h, ";")
	if strings.TrimSpace(params[0]) != "permessage-deflate" {
		return false, fmt.Errorf("server chose extension %q, not the permessage-deflate offered", h)
	}
	var server, client bool
	for _, p := range params[1:] {
		switch strings.TrimSpace(p) {
		case "server_no_context_takeover":
			if server {
				return false, fmt.Errorf("server repeated server_no_context_takeover in %q", h)
			}
			server = true
		case "client_no_context_takeover":
			if client {
				return false, fmt.Errorf("server repeated client_no_context_takeover in %q", h)
			}
			client = true
		default:
			return false, fmt.Errorf("server answered permessage-deflate with parameter %q, not offered", strings.TrimSpace(p))
		}
	}
	if !server {
		return false, fmt.Errorf("server accepted permessage-deflate without server_no_context_takeover: %q", h)
	}
	return true, nil
}
