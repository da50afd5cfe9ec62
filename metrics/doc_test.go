package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every metric Herald exports has a row in docs/operations.md, which the
// README points operators to for what each one means.
func TestEveryMetricDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	m := New("test")
	descs := make(chan *prometheus.Desc)
	go func() { // Describe sends as many as there are: take them as they come
		defer close(descs)
		for _, c := range append(m.own(), &collector{}) {
			c.Describe(descs)
		}
	}()
	name := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	var names []string
	for d := range descs {
		match := name.FindStringSubmatch(d.String())
		if match == nil {
			t.Fatalf("no name in %s", d)
		}
		names = append(names, match[1])
	}
	if len(names) < 30 {
		t.Fatalf("found %d metrics: %v", len(names), names)
	}
	for _, n := range names {
		if !strings.Contains(string(doc), "| `"+n+"` |") {
			t.Errorf("%s has no row in docs/operations.md", n)
		}
	}
}
