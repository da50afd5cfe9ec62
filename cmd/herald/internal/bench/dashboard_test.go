package bench

import (
	"encoding/json"
	"testing"
)

// A dashboard event is a 2–4 KB JSON object that opens with bseq and bts,
// and the next event of the same key differs from it in one metric's value
// besides those two.
func TestDashboardShape(t *testing.T) {
	const keys = 100
	for _, seq := range []int64{1, 99, 100, 101, 4711, 1_000_000} {
		d := appendDashboard(nil, 3, keys, seq, 1_700_000_000_000_000_000+seq)
		if len(d) < 2048 || len(d) > 4096 {
			t.Fatalf("seq %d: %d bytes", seq, len(d))
		}
		var obj map[string]any
		if err := json.Unmarshal(d, &obj); err != nil {
			t.Fatalf("seq %d: not JSON: %v\n%s", seq, err, d)
		}
		if got, sent, ok := parseData(d); !ok || got != seq || sent != 1_700_000_000_000_000_000+seq {
			t.Fatalf("seq %d: parsed %d %d %v", seq, got, sent, ok)
		}
		next := appendDashboard(nil, 3, keys, seq+keys, 1)
		var a, b map[string]any
		_ = json.Unmarshal(d, &a)
		_ = json.Unmarshal(next, &b)
		changed := 0
		am, bm := a["metrics"].([]any), b["metrics"].([]any)
		if len(am) != len(dashboardMetrics) || len(bm) != len(am) {
			t.Fatalf("seq %d: %d and %d metrics", seq, len(am), len(bm))
		}
		for i := range am {
			x, y := am[i].(map[string]any), bm[i].(map[string]any)
			if x["value"] != y["value"] {
				changed++
			}
			delete(x, "value")
			delete(y, "value")
			if !jsonEqual(x, y) {
				t.Fatalf("seq %d → %d: metric %d changed besides its value: %v → %v", seq, seq+keys, i, x, y)
			}
		}
		if changed != 1 {
			t.Fatalf("seq %d → %d: %d metrics changed, want 1", seq, seq+keys, changed)
		}
		delete(a, "metrics")
		delete(b, "metrics")
		for k, v := range a {
			if k != "bseq" && k != "bts" && !jsonEqual(v, b[k]) {
				t.Fatalf("seq %d → %d: field %s changed", seq, seq+keys, k)
			}
		}
		// Another key of the same topic is another object.
		if other := appendDashboard(nil, 3, keys, seq+1, 1); string(other[40:]) == string(next[40:]) {
			t.Fatalf("seq %d: keys share an object", seq)
		}
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
