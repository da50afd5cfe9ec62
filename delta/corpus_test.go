package delta_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
)

// pair is a base and a target the codec must carry between them.
type pair struct {
	name         string
	base, target []byte
}

// dashboard is a realistic keyed event's data: a 2-4 KB JSON document of
// widgets, the kind a page redraws from its latest value. seed picks the
// numbers; widgets the size.
func dashboard(seed uint64, widgets int) map[string]any {
	r := rand.New(rand.NewPCG(seed, 7))
	ws := make([]any, widgets)
	for i := range ws {
		series := make([]float64, 12)
		for j := range series {
			series[j] = float64(r.IntN(100000)) / 100
		}
		ws[i] = map[string]any{
			"id":      fmt.Sprintf("w%02d", i),
			"title":   []string{"CPU", "Memory", "Requests/s", "p99 latency", "Errors", "Queue depth"}[i%6],
			"unit":    []string{"%", "GiB", "req/s", "ms", "err/min", "jobs"}[i%6],
			"value":   float64(r.IntN(10000)) / 10,
			"series":  series,
			"status":  []string{"ok", "warn", "critical"}[r.IntN(3)],
			"updated": fmt.Sprintf("2026-12-06T13:%02d:%02d.%03dZ", r.IntN(60), r.IntN(60), r.IntN(1000)),
		}
	}
	return map[string]any{"dashboard": "ops-eu-west", "version": 41, "owner": "platform", "widgets": ws}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// corpus is what the codec is held to: realistic dashboards with one
// changed field (a number, a status, a whole series), non-ASCII text,
// empty texts, identical texts, and unrelated ones.
func corpus() []pair {
	var ps []pair
	for i, n := range []int{10, 14, 18} {
		d := dashboard(uint64(i), n)
		base := mustJSON(d)
		w := d["widgets"].([]any)
		w[n/2].(map[string]any)["value"] = 123.4
		ps = append(ps, pair{fmt.Sprintf("dashboard %d B, one value", len(base)), base, mustJSON(d)})
		w[0].(map[string]any)["status"] = "critical-now"
		ps = append(ps, pair{fmt.Sprintf("dashboard %d B, a status too", len(base)), base, mustJSON(d)})
		w[n-1].(map[string]any)["series"] = []float64{1, 2, 3}
		ps = append(ps, pair{fmt.Sprintf("dashboard %d B, a series shortened", len(base)), base, mustJSON(d)})
	}
	text := `{"title":"Größenänderung — 東京 🚀","body":"` + strings.Repeat("naïve café ñandú Ωμέγα 日本語 ", 20) + `","n":1}`
	ps = append(ps,
		pair{"non-ASCII, one digit", []byte(text), []byte(strings.Replace(text, `"n":1`, `"n":2`, 1))},
		pair{"non-ASCII, a character replaced", []byte(text), []byte(strings.Replace(text, "東京", "大阪", 1))},
		pair{"non-ASCII inserted into ASCII", mustJSON(dashboard(9, 4)), []byte(strings.Replace(string(mustJSON(dashboard(9, 4))), "ops-eu-west", "運用-🌍", 1))},
		pair{"empty to empty", []byte{}, []byte{}},
		pair{"empty to text", []byte{}, []byte(`{"a":1}`)},
		pair{"text to empty", []byte(`{"a":1}`), []byte{}},
		pair{"identical small", []byte(`{"a":1}`), []byte(`{"a":1}`)},
		pair{"identical dashboard", mustJSON(dashboard(3, 10)), mustJSON(dashboard(3, 10))},
		pair{"unrelated", mustJSON(dashboard(4, 8)), mustJSON(dashboard(5, 8))},
		pair{"short base", []byte(`1`), []byte(`{"a":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18]}`)},
	)
	// Random edits of a dashboard: inserts, deletions and replacements of
	// ASCII and multi-byte text, anywhere (a literal may then cut a
	// character, which Create must not send).
	r := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"x", "42", `"é"`, "東京", "🚀", `,"k":1`, strings.Repeat("z", 30)}
	for i := range 40 {
		base := []rune(string(mustJSON(dashboard(uint64(100+i), 10))))
		target := append([]rune(nil), base...)
		for range 1 + r.IntN(4) {
			at := r.IntN(len(target))
			cut := min(len(target)-at, r.IntN(50))
			var ins []rune
			if r.IntN(3) > 0 {
				ins = []rune(pieces[r.IntN(len(pieces))])
			}
			target = append(append(append([]rune(nil), target[:at]...), ins...), target[at+cut:]...)
		}
		ps = append(ps, pair{fmt.Sprintf("random edit %d", i), []byte(string(base)), []byte(string(target))})
	}
	return ps
}
