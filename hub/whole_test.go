package hub

import (
	"bytes"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// halfFormat stands for a compressed encoding: a message's frame is the
// first len/want bytes of its envelope, kept when at most half of it. It
// is registered in every test of the package, so its limit is 0 (no frame
// is kept, nothing is counted) outside the tests of this file.
var (
	halfWant    atomic.Int64 // the divisor encode uses; 0: no frame
	halfCalls   atomic.Int64
	halfOn      atomic.Bool
	halfFormat  = NewWholeFormat(halfEncode, halfLimit)
	halfEncoded = func(m *Message, div int) []byte { return m.env[:len(m.env)/div] }
)

func halfLimit(n int) int {
	if !halfOn.Load() {
		return 0
	}
	return n / 2
}

func halfEncode(dst []byte, m *Message) []byte {
	halfCalls.Add(1)
	div := int(halfWant.Load())
	if div == 0 {
		return dst
	}
	return append(dst, halfEncoded(m, div)...)
}

func wholeMessage(seq uint64, size int) *Message {
	return NewMessage(Event{ID: Cursor{Epoch: "e", Seq: seq}, Topic: "a.b", Type: "t",
		Data: []byte(`"` + strings.Repeat("x", size) + `"`), Time: time.Unix(0, 0)})
}

// TestWholeFormat checks a whole-frame format: encoded once per message
// however many writers ask, shared, and left out (an empty frame) when the
// encoder makes none or one over the format's limit.
func TestWholeFormat(t *testing.T) {
	halfOn.Store(true)
	defer halfOn.Store(false)
	for _, c := range []struct {
		name string
		div  int
		want bool
	}{{"none", 0, false}, {"over the limit", 1, false}, {"within it", 4, true}} {
		t.Run(c.name, func(t *testing.T) {
			halfWant.Store(int64(c.div))
			halfCalls.Store(0)
			m := wholeMessage(1, 1000)
			frames := make([]Frame, 8)
			var wg sync.WaitGroup
			for i := range frames {
				wg.Add(1)
				go func() { defer wg.Done(); frames[i] = m.Frame(halfFormat) }()
			}
			wg.Wait()
			for _, f := range frames {
				if len(f.Body) != 0 || f.Tail != "" {
					t.Fatalf("a whole frame has a body or a tail: %+v", f)
				}
				if c.want && !bytes.Equal(f.Head, halfEncoded(m, c.div)) || !c.want && f.Len() != 0 {
					t.Fatalf("frame of %d bytes, want it: %v", f.Len(), c.want)
				}
			}
			calls := halfCalls.Load()
			again := m.Frame(halfFormat)
			if halfCalls.Load() != calls {
				t.Fatal("a cached whole frame was encoded again")
			}
			if c.want && &again.Head[0] != &frames[0].Head[0] {
				t.Fatal("writers got different copies of the frame")
			}
		})
	}
}

// TestRetainedSizeWholeFrames checks that retainedSize stays an upper
// bound of the heap a retained message holds once it caches a whole frame
// as large as its format allows: the heap the frames of a thousand messages
// take is measured against what retainedSize counts for them.
func TestRetainedSizeWholeFrames(t *testing.T) {
	halfOn.Store(true)
	defer halfOn.Store(false)
	for _, size := range []int{600, 1900, 4000, 30000} {
		halfWant.Store(2) // frames exactly at the limit
		const n = 1000
		msgs := make([]*Message, n)
		for i := range msgs {
			msgs[i] = wholeMessage(uint64(i+1), size)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for _, m := range msgs {
			if f := m.Frame(halfFormat); f.Len() != len(m.env)/2 {
				t.Fatalf("frame of %d bytes, want %d", f.Len(), len(m.env)/2)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		held := int(after.HeapAlloc) - int(before.HeapAlloc)
		runtime.KeepAlive(msgs)
		counted := n * wholeSize(len(msgs[0].env)/2)
		t.Logf("%d-byte envelopes: their frames hold %d bytes of heap, retainedSize counts %d for them", len(msgs[0].env), held, counted)
		if held > counted {
			t.Fatalf("the frames hold %d bytes of heap, more than the %d retainedSize counts for them", held, counted)
		}
		m := msgs[0]
		if want := len(m.env) + len(m.Topic) + len(m.Type) + retainedOverhead + wholeSize(len(m.env)/2); m.retainedSize() < want {
			t.Fatalf("retainedSize %d, want at least %d", m.retainedSize(), want)
		}
	}
	halfWant.Store(0)
}
