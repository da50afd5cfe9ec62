package delta_test

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/heraldpush/herald/delta"
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
