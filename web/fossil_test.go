package web_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/testkit/nodews"
)

// herald.js applies fossil deltas itself (it is an embedded module with no
// imports). These tests run its applyFossilDelta in node, through
// internal/testkit/nodews/fossil.mjs, on the deltas of the npm fossil-delta
// package (2.0.0) and of package delta (what the server sends): it must
// rebuild the target exactly, and refuse a delta for another base.

func runFossilJS(t *testing.T, cases []nodews.FossilCase) []nodews.FossilResult {
	return nodews.Fossil(t, filepath.Join(webDir(), "herald.js"), cases)
}

// board is a dashboard's data of about 3 KB; v changes one value.
func board(v int) []byte {
	var b strings.Builder
	b.WriteString(`{"dashboard":"ops","widgets":[`)
	for i := range 24 {
		if i > 0 {
			b.WriteByte(',')
		}
		val := i * 37 % 1000
		if i == 11 {
			val = v
		}
		fmt.Fprintf(&b, `{"id":"w%02d","title":"Requests per second, région %d — 東京","value":%d,"status":"ok","series":[%d,%d,%d]}`, i, i, val, i, i*2, i*3)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// TestHeraldJSApplyFossil: herald.js rebuilds every target from npm's deltas
// and from the server's, and throws on a delta it cannot apply.
func TestHeraldJSApplyFossil(t *testing.T) {
	type pair struct {
		name         string
		base, target string
	}
	pairs := []pair{
		{"dashboard, one value", string(board(1)), string(board(2))},
		{"dashboard, identical", string(board(5)), string(board(5))},
		{"non-ASCII", `{"t":"` + strings.Repeat("Größe 東京 🚀 ", 30) + `"}`, `{"t":"` + strings.Repeat("Größe 東京 🚀 ", 29) + `Größe 大阪 🚀 "}`},
		{"empty to text", ``, `{"a":1}`},
		{"text to empty", `{"a":1}`, ``},
		{"unrelated", `{"a":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}`, `{"zzz":"` + strings.Repeat("q", 40) + `"}`},
	}
	// And random edits of a dashboard: inserts, deletions and replacements
	// of ASCII and multi-byte text, anywhere.
	r := rand.New(rand.NewPCG(1, 2))
	pieces := []string{"x", "42", `"é"`, "東京", "🚀", `,"k":1`, strings.Repeat("z", 30)}
	for i := range 60 {
		base := []rune(string(board(i)))
		target := append([]rune(nil), base...)
		for range 1 + r.IntN(4) {
			at := r.IntN(len(target))
			cut := min(len(target)-at, r.IntN(50))
			ins := []rune(pieces[r.IntN(len(pieces))])
			if r.IntN(3) == 0 {
				ins = nil
			}
			target = append(append(append([]rune(nil), target[:at]...), ins...), target[at+cut:]...)
		}
		pairs = append(pairs, pair{fmt.Sprintf("random edit %d", i), string(base), string(target)})
	}
	// Each pair's target is made from npm's delta, then from package
	// delta's (raw when Create would not send one, to cover every pair).
	var cases []nodews.FossilCase
	for _, p := range pairs {
		cases = append(cases, nodews.FossilCase{Op: "create", A: []byte(p.base), B: []byte(p.target)})
	}
	created := runFossilJS(t, cases)
	cases = cases[:0]
	for i, p := range pairs {
		if created[i].Error != "" {
			t.Fatalf("%s: npm createDelta: %s", p.name, created[i].Error)
		}
		cases = append(cases, nodews.FossilCase{Op: "herald-apply", A: []byte(p.base), B: created[i].Out})
		d, ok := delta.Create([]byte(p.base), []byte(p.target))
		if strings.HasPrefix(p.name, "dashboard, one") && !ok {
			t.Fatalf("%s: no delta from package delta", p.name)
		}
		if !ok {
			d = created[i].Out
		}
		cases = append(cases, nodews.FossilCase{Op: "herald-apply", A: []byte(p.base), B: d})
	}
	// Refusals: another base (its copied bytes differ: the checksum), a
	// truncated delta, malformed ones.
	d, _ := delta.Create(board(1), board(2))
	cases = append(cases,
		nodews.FossilCase{Op: "herald-apply", A: bytes.Replace(board(1), []byte(`"ops"`), []byte(`"opx"`), 1), B: d},
		nodews.FossilCase{Op: "herald-apply", A: board(1), B: d[:len(d)-3]},
		nodews.FossilCase{Op: "herald-apply", A: []byte("abc"), B: []byte("4\n4:ab")},
		nodews.FossilCase{Op: "herald-apply", A: []byte("abc"), B: []byte("3\n3@~~~~~,0;")},
		nodews.FossilCase{Op: "herald-apply", A: []byte("abc"), B: []byte("~~~~~~\n1:a0;")},
	)
	res := runFossilJS(t, cases)
	for i, p := range pairs {
		for j, from := range []string{"npm's delta", "package delta's delta"} {
			r := res[2*i+j]
			if r.Error != "" || string(r.Out) != p.target {
				t.Errorf("%s, %s: herald.js made %q (error %q), want %q", p.name, from, r.Out, r.Error, p.target)
			}
		}
	}
	for i, r := range res[2*len(pairs):] {
		if r.Error == "" {
			t.Errorf("refusal %d: herald.js accepted it and made %q", i, r.Out)
		}
	}
}

// webDir is this package's directory, where herald.js is.
func webDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}
