package delta_test

import (
	"bytes"
	"testing"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
)

// FuzzDelta holds the codec to its contract for any base and target: a
// delta Create offers is valid UTF-8, shorter than the target, and Apply
// turns base into target with it; and Apply on arbitrary bytes (target
// taken as a delta) returns an error or a text, never panics.
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
		}
		if out, err := delta.Apply(base, target); err == nil && len(out) > delta.MaxSize {
			t.Fatalf("Apply made %d bytes, more than MaxSize", len(out))
		}
	})
}
