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

// Apply returns the text that delta d turns base into. It fails on a
// malformed delta, or one made for another base (the checksum differs).
func Apply(base, d []byte) ([]byte, error) {
	out, err := fdelta.Apply(base, d)
	if err != nil {
		return nil, fmt.Errorf("failed to apply delta: %w", err)
	}
	return out, nil
}
