package delta_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/testkit/fossiltest"
)

// TestRoundTrip holds Create and Apply to the corpus: a delta, when used,
// rebuilds the target exactly, is valid UTF-8 and is shorter than the
// target; on a realistic dashboard with one field changed it is much
// shorter, which is the point of deltas.
func TestRoundTrip(t *testing.T) {
	for _, p := range corpus() {
		t.Run(p.name, func(t *testing.T) {
			d, ok := delta.Create(p.base, p.target)
			if !ok {
				if strings.HasPrefix(p.name, "dashboard") || strings.HasPrefix(p.name, "identical dashboard") {
					t.Fatalf("no delta for %d bytes", len(p.target))
				}
				return
			}
			if !utf8.Valid(d) {
				t.Fatalf("delta is not UTF-8: %q", d)
			}
			if len(d) >= len(p.target) {
				t.Fatalf("delta of %d bytes for a target of %d", len(d), len(p.target))
			}
			got, err := delta.Apply(p.base, d)
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !bytes.Equal(got, p.target) {
				t.Fatalf("Apply made %q, want %q", got, p.target)
			}
			if strings.Contains(p.name, "one value") && len(d)*10 > len(p.target) {
				t.Errorf("delta of %d bytes for one changed value in %d: not a tenth", len(d), len(p.target))
			}
		})
	}
}

// TestApplyRejects shows that Apply refuses, with an error and no panic,
// a delta for another base, a truncated one, malformed ones that make the
// library slice out of range, and one that declares an enormous text.
func TestApplyRejects(t *testing.T) {
	base := mustJSON(dashboard(1, 6))
	target := mustJSON(dashboard(2, 6))
	d, ok := delta.Create(base, []byte(strings.Replace(string(base), "ops-eu-west", "ops-us-east", 1)))
	if !ok {
		t.Fatal("no delta")
	}
	other := bytes.Replace(base, []byte(`"version":41`), []byte(`"version":42`), 1)
	cases := map[string]struct{ base, d []byte }{
		"another base (checksum)": {other, d},
		"truncated":               {base, d[:len(d)/2]},
		"empty":                   {base, nil},
		"no size":                 {base, []byte("\n")},
		"copy past the base":      {[]byte("abc"), []byte("3\n3@2,0;")},
		"copy offset wraps":       {[]byte("abc"), []byte("3\n3@~~~~~,0;")},
		"insert past the delta":   {base, []byte("4\n4:ab")},
		"huge declared size":      {base, []byte("~~~~~\n1:a0;")},
		"huge size, high bits":    {base, []byte("\xfe\xfe\xfe\xfe\xfe\n1:a0;")},
		"unknown operator":        {base, []byte("3\n3?abc0;")},
		"unrelated text":          {base, target},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			out, err := delta.Apply(c.base, c.d)
			if err == nil {
				t.Fatalf("Apply accepted it and made %q", out)
			}
			if !strings.HasPrefix(err.Error(), "failed to apply delta") {
				t.Errorf("error %q", err)
			}
		})
	}
}

// A delta of a few bytes that copies the base over and over declares a
// text far larger than itself: ApplyMax refuses it as soon as it reads
// that size, and takes it within a bound as large.
func TestApplyMaxRefusesABomb(t *testing.T) {
	base := []byte(`{"a":"0123456789012345678901234567890123456789012345678901234"}`)
	d := bomb(base, 1000)
	want := bytes.Repeat(base, 1000)
	if out, err := delta.Apply(base, d); err != nil || !bytes.Equal(out, want) {
		t.Fatalf("Apply of the bomb (%d bytes): %d bytes, %v; want %d", len(d), len(out), err, len(want))
	}
	if out, err := delta.ApplyMax(base, d, len(want)); err != nil || !bytes.Equal(out, want) {
		t.Fatalf("ApplyMax within its bound: %d bytes, %v", len(out), err)
	}
	for _, max := range []int{len(want) - 1, 1 << 10, 1} {
		out, err := delta.ApplyMax(base, d, max)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("makes %d bytes, more than %d", len(want), max)) {
			t.Fatalf("ApplyMax(%d) of a delta declaring %d bytes: %d bytes, %v", max, len(want), len(out), err)
		}
	}
}

// bomb returns a delta that makes n copies of base: a few bytes per copy.
func bomb(base []byte, n int) []byte {
	d := fossiltest.AppendInt(nil, uint32(n*len(base)))
	d = append(d, '\n')
	for range n {
		d = fossiltest.AppendInt(d, uint32(len(base)))
		d = append(d, "@0,"...)
	}
	d = fossiltest.AppendInt(d, fossiltest.Checksum(bytes.Repeat(base, n)))
	return append(d, ';')
}
