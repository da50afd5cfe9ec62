package nodews

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// FossilCase is one operation for fossil.mjs: Op names it (see fossil.mjs:
// npm fossil-delta's create and apply, and herald.js's applyFossilDelta),
// A and B are its operands.
type FossilCase struct {
	Op string `json:"op"`
	A  []byte `json:"a"`
	B  []byte `json:"b"`
}

// FossilResult is fossil.mjs's answer to one FossilCase.
type FossilResult struct {
	Out   []byte `json:"out"`
	Error string `json:"error"`
}

// Fossil runs cases through fossil.mjs with node, in order, and returns its
// results; heraldJS, if not empty, is the path of the herald.js whose
// applyFossilDelta the herald ops use. A missing node or npm package fails
// t rather than skipping.
func Fossil(t testing.TB, heraldJS string, cases []FossilCase) []FossilResult {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("failed to find node (make testdeps installs it): %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir(), "node_modules", "fossil-delta")); err != nil {
		t.Fatalf("the npm fossil-delta package is not installed: run make testdeps (%v)", err)
	}
	req := map[string]any{"cases": cases}
	if heraldJS != "" {
		req["herald"] = heraldJS
	}
	in, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "fossil.mjs")
	cmd.Dir = dir()
	cmd.Stdin = bytes.NewReader(in)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("failed to run fossil.mjs: %v", err)
	}
	var res []FossilResult
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(cases) {
		t.Fatalf("fossil.mjs answered %d results for %d cases (%v): %.200s", len(res), len(cases), err, out)
	}
	return res
}
