package hub

import (
	"testing"
	"unsafe"
)

// clientSizeClass is the largest size Client may have. Every connection
// keeps one, and the Go allocator rounds it up to a size class; in the next
// class (352 bytes) it shares spans with the three header maps every
// connection's handshake allocates and drops (net/http's request and
// response headers), which after a connection ramp leave those spans about
// a quarter full: 0.5 KB more memory per idle connection than the size
// says (docs/benchmarks.md, "One connection writer").
const clientSizeClass = 288

func TestClientSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(Client{}); n > clientSizeClass {
		t.Fatalf("Client is %d bytes, above its size class of %d", n, clientSizeClass)
	}
}

// subSizeClass is the largest size sub may have: every idle connection
// keeps one per pattern it subscribes to, and those that use neither state
// nor presence must not pay for their fields.
const subSizeClass = 32

func TestSubSizeClass(t *testing.T) {
	if n := unsafe.Sizeof(sub{}); n > subSizeClass {
		t.Fatalf("sub is %d bytes, above its size class of %d", n, subSizeClass)
	}
}
