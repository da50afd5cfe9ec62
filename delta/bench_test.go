package delta_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/heraldpush/herald/delta"
)

// realistic is the benchmarks' payload: a dashboard of about 3 KB whose
// next version changes one value, the case deltas are for.
func realistic(b *testing.B) (base, target, d []byte) {
	doc := dashboard(11, 14)
	base = mustJSON(doc)
	doc["widgets"].([]any)[4].(map[string]any)["value"] = 123.4
	target = mustJSON(doc)
	d, ok := delta.Create(base, target)
	if !ok {
		b.Fatal("no delta for the realistic payload")
	}
	return base, target, d
}

// BenchmarkCreate is the server's cost per keyed event per delta
// connection group: one Create per event.
func BenchmarkCreate(b *testing.B) {
	base, target, d := realistic(b)
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		delta.Create(base, target)
	}
	// After the loop: b.Loop's first call clears earlier metrics.
	b.ReportMetric(float64(len(target)), "target-bytes")
	b.ReportMetric(float64(len(d)), "delta-bytes")
}

// BenchmarkApply is the client's cost per delta (herald sub --delta).
func BenchmarkApply(b *testing.B) {
	base, target, d := realistic(b)
	b.SetBytes(int64(len(target)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := delta.Apply(base, d); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCreateRepetitive is Create's worst case known: a base of one
// repeated byte puts every block of it in one hash chain, and a target
// whose every window finds that chain makes Create compare each window
// with up to 250 blocks (the walk's bound, as in C Fossil) for a match of
// 16 bytes. It stays linear, but with a constant some 70 times the usual
// one: what a publisher can make the server spend per byte of keyed data.
func BenchmarkCreateRepetitive(b *testing.B) {
	for _, n := range []int{16 << 10, 64 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			base := bytes.Repeat([]byte("a"), n)
			target := bytes.Repeat([]byte("aaaaaaaaaaaaaaaab"), n/17)
			b.SetBytes(int64(len(target)))
			for b.Loop() {
				delta.Create(base, target)
			}
		})
	}
}
