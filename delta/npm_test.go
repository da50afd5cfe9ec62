package delta_test

import (
	"bytes"
	"testing"

	fdelta "github.com/shadowspore/fossil-delta"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/internal/testkit/nodews"
)

// The differential tests hold this package to the npm fossil-delta package
// (2.0.0, the JavaScript implementation of the format), run by node through
// internal/testkit/nodews/fossil.mjs: `make testdeps` installs it, and a
// missing one fails the test rather than skipping it.

func runFossilJS(t *testing.T, cases []nodews.FossilCase) []nodews.FossilResult {
	return nodews.Fossil(t, "", cases)
}

// TestNPMInterop: every delta Create offers, npm's applyDelta turns
// the base into the target, byte for byte; and every delta npm makes,
// Apply turns the base into the target. The corpus has realistic
// dashboards with one changed field, non-ASCII text, empty and identical
// texts.
func TestNPMInterop(t *testing.T) {
	ps := corpus()
	var cases []nodews.FossilCase
	var goDeltas [][]byte
	for _, p := range ps {
		d, ok := delta.Create(p.base, p.target)
		if !ok {
			// A delta this package would not send must still be one npm reads.
			d = fdelta.Create(p.base, p.target)
		}
		goDeltas = append(goDeltas, d)
		cases = append(cases, nodews.FossilCase{Op: "apply", A: p.base, B: d}, nodews.FossilCase{Op: "create", A: p.base, B: p.target})
	}
	res := runFossilJS(t, cases)
	for i, p := range ps {
		apply, create := res[2*i], res[2*i+1]
		if apply.Error != "" || !bytes.Equal(apply.Out, p.target) {
			t.Errorf("%s: npm applying the Go delta %q made %q (error %q), want %q", p.name, goDeltas[i], apply.Out, apply.Error, p.target)
		}
		if create.Error != "" {
			t.Errorf("%s: npm createDelta: %s", p.name, create.Error)
			continue
		}
		got, err := delta.Apply(p.base, create.Out)
		if err != nil || !bytes.Equal(got, p.target) {
			t.Errorf("%s: applying npm's delta %q made %q (%v), want %q", p.name, create.Out, got, err, p.target)
		}
	}
}

// TestNPMRejectsWrongBase: a delta made for another base fails the
// checksum in both implementations, so neither shows wrong data.
func TestNPMRejectsWrongBase(t *testing.T) {
	base := mustJSON(dashboard(1, 8))
	d, ok := delta.Create(base, bytes.Replace(base, []byte(`"version":41`), []byte(`"version":43`), 1))
	if !ok {
		t.Fatal("no delta")
	}
	other := bytes.Replace(base, []byte(`"owner":"platform"`), []byte(`"owner":"platfxrm"`), 1)
	if _, err := delta.Apply(other, d); err == nil {
		t.Error("Apply accepted a delta for another base")
	}
	if res := runFossilJS(t, []nodews.FossilCase{{Op: "apply", A: other, B: d}}); res[0].Error == "" {
		t.Errorf("npm accepted a delta for another base and made %q", res[0].Out)
	}
}
