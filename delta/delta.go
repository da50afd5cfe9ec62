// Package delta makes and applies the fossil deltas of protocol v1.1
// ("Deltas (keyed topics)"): the delta format of the Fossil SCM, as
// Centrifugo uses it, between the JSON texts of two events' data.
//
// The encoder is github.com/shadowspore/fossil-delta, the implementation
// centrifugal/centrifuge ships; this package adds the protocol's rules on
// top of it: a delta travels as a JSON string, so one that is not valid
// UTF-8 (a literal cut inside a multi-byte character) is not used, nor one
// that saves nothing.
//
// Concurrency: every function is safe for concurrent use.
package delta

import (
	"fmt"
	"unicode/utf8"

	fdelta "github.com/shadowspore/fossil-delta"
)

// Create returns the fossil delta that turns base into target, and false
// when target should go whole instead: the delta is not valid UTF-8 (it
// could not travel in a JSON string unchanged), or it is not shorter than
// target.
func Create(base, target []byte) ([]byte, bool) {
	d := fdelta.Create(base, target)
	if len(d) >= len(target) || !utf8.Valid(d) {
		return nil, false
	}
	return d, true
}

// MaxSize bounds the text Apply makes: a delta is a few bytes that can
// declare gigabytes, and what it makes is an event's data, far smaller.
const MaxSize = 64 << 20

// Apply returns the text that delta d turns base into. It fails on a
// malformed delta, one made for another base (the checksum differs), or
// one that declares a text longer than MaxSize.
func Apply(base, d []byte) ([]byte, error) { return ApplyMax(base, d, MaxSize) }

// ApplyMax is Apply for a caller whose texts are bounded more tightly
// than by MaxSize (a client's largest message, say): it fails, before
// making anything, on a delta that declares a text longer than max. A
// delta of a few bytes, copying the same part of the base over and over,
// would otherwise make MaxSize bytes each time. A max that is not positive
// or is above MaxSize is MaxSize.
func ApplyMax(base, d []byte, max int) (out []byte, err error) {
	if max <= 0 || max > MaxSize {
		max = MaxSize
	}
	// The library checks that the delta makes no more than the size it
	// declares, so refusing the size bounds the text.
	if n, ok := declaredSize(d); ok && n > uint64(max) {
		return nil, fmt.Errorf("failed to apply delta: it makes %d bytes, more than %d", n, max)
	}
	// The library trusts the delta's counts when it slices (an offset and a
	// count whose uint32 sum wraps, an insert past the delta's end), so a
	// malformed delta panics there; it is an error like any other here.
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("failed to apply delta: malformed delta (%v)", r)
		}
	}()
	out, err = fdelta.Apply(base, d)
	if err != nil {
		return nil, fmt.Errorf("failed to apply delta: %w", err)
	}
	return out, nil
}

// declaredSize reads the size a delta starts with (base-64 digits of the
// fossil alphabet, then a newline); ok is false when it does not start so,
// which the library then reports.
func declaredSize(d []byte) (n uint64, ok bool) {
	for i, c := range d {
		if c == '\n' {
			return n, i > 0
		}
		v := digit(c)
		if v < 0 || n > MaxSize {
			return n, n > MaxSize
		}
		n = n<<6 | uint64(v)
	}
	return 0, false
}

// digit is the value of one fossil base-64 digit, -1 for another byte.
// It ignores the top bit, as the library's reader does.
func digit(c byte) int {
	c &= 0x7f
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	case c == '_':
		return 36
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 37
	case c == '~':
		return 63
	}
	return -1
}
