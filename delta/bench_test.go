package delta_test

import (
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
