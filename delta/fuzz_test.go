package delta_test

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
)

// FuzzDelta holds the codec to its contract for any base and target: a
// delta Create offers is valid UTF-8, shorter than the target, and Apply
// turns base into target with it, as ApplyMax does with a bound of the
// target's size and not with a smaller one; and Apply and ApplyMax on
// arbitrary bytes (target taken as a delta) return an error or a text
// within their bound, never panic.
func FuzzDelta(f *testing.F) {
	for _, p := range corpus() {
		f.Add(p.base, p.target)
		if d, ok := delta.Create(p.base, p.target); ok {
			f.Add(p.base, d)
		}
	}
	f.Add([]byte("abc"), []byte("3\n3@~~~~~,0;"))
	f.Add([]byte("abc"), []byte("4\n4:ab"))
	f.Add([]byte("abcdefghijklmnopqrstuvwxyz"), []byte("A\n5@0,5@0,0;"))
	f.Add([]byte("ab"), bomb([]byte("ab"), 1000))
	f.Fuzz(func(t *testing.T, base, target []byte) {
		if d, ok := delta.Create(base, target); ok {
			if !utf8.Valid(d) {
				t.Fatalf("delta is not UTF-8: %q", d)
			}
			if len(d) >= len(target) {
				t.Fatalf("delta of %d bytes for a target of %d", len(d), len(target))
			}
			got, err := delta.Apply(base, d)
			if err != nil {
				t.Fatalf("Apply of Create's delta %q: %v", d, err)
			}
			if !bytes.Equal(got, target) {
				t.Fatalf("Apply made %q, want %q", got, target)
			}
			// A bound of exactly the target's size lets it through; one
			// byte less does not. (A max of 0 means MaxSize.)
			if got, err := delta.ApplyMax(base, d, len(target)); err != nil || !bytes.Equal(got, target) {
				t.Fatalf("ApplyMax to the target's %d bytes: %q, %v", len(target), got, err)
			}
			if len(target) > 1 {
				if got, err := delta.ApplyMax(base, d, len(target)-1); err == nil {
					t.Fatalf("ApplyMax to %d bytes made %d", len(target)-1, len(got))
				}
			}
		}
		out, err := delta.Apply(base, target)
		if err == nil && len(out) > delta.MaxSize {
			t.Fatalf("Apply made %d bytes, more than MaxSize", len(out))
		}
		// ApplyMax is Apply with a tighter bound: the same text when it
		// fits, an error when it would not, whatever the delta declares.
		limit := 1 + len(base)%64
		got, errMax := delta.ApplyMax(base, target, limit)
		switch {
		case errMax == nil && len(got) > limit:
			t.Fatalf("ApplyMax made %d bytes, more than %d", len(got), limit)
		case errMax == nil && (err != nil || !bytes.Equal(got, out)):
			t.Fatalf("ApplyMax made %q where Apply made %q, %v", got, out, err)
		case errMax != nil && err == nil && len(out) <= limit:
			t.Fatalf("ApplyMax refused what Apply made in %d bytes (bound %d): %v", len(out), limit, errMax)
		}
	})
}
