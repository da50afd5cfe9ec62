package ws

import (
	"bytes"
	"testing"

	"github.com/heraldpush/herald/internal/wsframe"
)

// FuzzFrameCutter checks the read side's frame tracking (read.go) against a
// plain reference: for a stream of client frames built from the fuzz input
// and fed in chunks of fuzzed sizes, advance must stop exactly at every
// frame's end, and between must be true exactly between messages. A wrong
// boundary would hand coder/websocket bytes of the next frame, or make the
// idle reader wait while a frame is half read.
//
// Run long with: go test -run '^$' -fuzz FuzzFrameCutter -fuzztime 10m ./transport/ws/
func FuzzFrameCutter(f *testing.F) {
	f.Add([]byte{0x81, 5, 3, 0x01, 126, 200, 0x89, 0}, []byte{1, 2, 3})
	f.Add([]byte{0x01, 0, 0x8A, 3, 0x80, 130}, []byte{7})
	f.Add([]byte{0x82, 127, 0x88, 2}, []byte{64, 1, 200})
	f.Fuzz(func(t *testing.T, spec, chunks []byte) {
		stream, ends, between := buildFrames(spec)
		if len(stream) == 0 || len(chunks) == 0 {
			return
		}
		var fc frameCutter
		pos, ci := 0, 0
		var gotEnds []int
		var gotBetween []bool
		for pos < len(stream) {
			n := int(chunks[ci%len(chunks)])%97 + 1
			ci++
			chunk := stream[pos:min(pos+n, len(stream))]
			k := fc.advance(chunk)
			if k < 1 || k > len(chunk) {
				t.Fatalf("advance returned %d for a chunk of %d", k, len(chunk))
			}
			pos += k
			if fc.n == 0 && !fc.payload {
				// At a frame end: advance stopped there, or the chunk ended there.
				gotEnds = append(gotEnds, pos)
				gotBetween = append(gotBetween, fc.between())
			}
		}
		if !equalInts(gotEnds, ends) {
			t.Fatalf("frame ends %v, want %v (stream % x)", gotEnds, ends, stream)
		}
		for i := range between {
			if gotBetween[i] != between[i] {
				t.Fatalf("between after frame %d = %v, want %v", i, gotBetween[i], between[i])
			}
		}
	})
}

// buildFrames turns fuzz bytes into masked client frames: per frame a
// descriptor byte (bit 0-1: length class, bit 2: FIN, bit 3: control) and a
// length byte. Control frames are final and short, as RFC 6455 requires;
// data frames alternate text/continuation to form fragmented messages.
// It returns the stream, the offset at which each frame ends, and whether
// the stream is between messages after each frame.
func buildFrames(spec []byte) (stream []byte, ends []int, between []bool) {
	inMessage := false
	var buf bytes.Buffer
	for i := 0; i+1 < len(spec) && buf.Len() < 1<<17; i += 2 {
		d, l := spec[i], int(spec[i+1])
		control := d&8 != 0
		fin := d&4 != 0 || control
		var op byte
		switch {
		case control:
			op = 0x9 // ping
			l %= 126
		case inMessage:
			op = 0x0
		default:
			op = 0x1
		}
		switch d & 3 {
		case 1:
			l += 126 // 16-bit length
		case 2:
			l += 65536 // 64-bit length
		}
		if control {
			l %= 126
		}
		first := op
		if fin {
			first |= 0x80
		}
		buf.Write(wsframe.AppendHeader(nil, first, true, l))
		buf.Write([]byte{1, 2, 3, 4}) // masking key
		buf.Write(make([]byte, l))
		if !control {
			inMessage = !fin
		}
		ends = append(ends, buf.Len())
		between = append(between, !inMessage)
	}
	return buf.Bytes(), ends, between
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
