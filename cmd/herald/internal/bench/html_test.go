package bench

import (
	"bytes"
	"errors"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// fanoutReport is shaped like a real 10-second fan-out run: a latency spike
// in second 6, a loss, and histogram buckets on the 1-2-5 series from 10 µs
// with empty ones at the low end, one empty in the middle, and one absent.
func fanoutReport() *Report {
	rep := &Report{
		Mode: ModeFanout, Transport: "ws", Subscribers: 1000, Connected: 1000, DurationS: 10,
		Published: 10000, Expected: 10000000, Delivered: 9999999,
		OfferedPerSec: 1000000, DeliveriesPerSec: 999999.9,
		Lost: 1, Duplicates: 0, OutOfOrder: 0,
		LatencyMS: Latency{P50: 1.8, P90: 3.1, P99: 7.4, P999: 18.2, Max: 41.5},
		ConnectMS: Latency{P50: 0.42, P90: 0.9, P99: 2.5, P999: 4, Max: 6.1},
		Errors:    map[string]int64{"ws_read": 2, "dial": 3},
	}
	for i := 1; i <= 10; i++ {
		s := Sample{T: float64(i) + 0.001*float64(i), Connected: 1000, Rate: 1000000 - float64(i), P50MS: 1.7 + 0.02*float64(i), P99MS: 7, MaxMS: 12}
		if i == 6 {
			s.P99MS, s.MaxMS = 22, 41.5
		}
		rep.Timeline = append(rep.Timeline, s)
	}
	// 0.01 … 0.2 empty, 0.5 … 50 filled except 20, 100 filled; 200 absent, 500 filled.
	bounds := []float64{0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 500}
	counts := []int64{0, 0, 0, 0, 0, 120, 300000, 5000000, 4500000, 180000, 0, 19000, 870, 9}
	for i, b := range bounds {
		rep.Histogram = append(rep.Histogram, Bucket{UpToMS: b, Count: counts[i]})
	}
	return rep
}

func actionsReport() *Report {
	rep := &Report{
		Mode: "actions", Transport: "ws", Subscribers: 0, Connected: 0, DurationS: 5,
		Accepted: 4990, AcceptedPerSec: 998,
		AcceptMS: &Latency{P50: 0.61, P90: 0.9, P99: 3.25, P999: 8, Max: 9.9},
	}
	for i := 1; i <= 5; i++ {
		rep.Timeline = append(rep.Timeline, Sample{T: float64(i), Rate: 998, P50MS: 0.6, P99MS: 3, MaxMS: 9.9})
	}
	for i, b := range []float64{0.2, 0.5, 1, 2, 5, 10} {
		rep.Histogram = append(rep.Histogram, Bucket{UpToMS: b, Count: []int64{0, 1200, 3000, 700, 80, 10}[i]})
	}
	return rep
}

func renderHTML(t *testing.T, rep *Report) (string, *html.Node) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteHTML(&buf, rep); err != nil {
		t.Fatalf("WriteHTML: %v", err)
	}
	out := buf.String()
	checkWellFormed(t, out)
	doc, err := html.Parse(strings.NewReader(out))
	if err != nil {
		t.Fatalf("failed to parse page: %v", err)
	}
	checkSelfContained(t, out, doc)
	checkFiniteAttrs(t, doc)
	return out, doc
}

var voidElements = map[string]bool{
	"area": true, "base": true, "br": true, "col": true, "embed": true, "hr": true, "img": true,
	"input": true, "link": true, "meta": true, "source": true, "track": true, "wbr": true,
}

// checkWellFormed asserts what a lenient parser would paper over: a
// doctype, and every element that is opened is closed, in order.
func checkWellFormed(t *testing.T, out string) {
	t.Helper()
	if !strings.HasPrefix(out, "<!DOCTYPE html>") {
		t.Errorf("page does not start with the HTML5 doctype: %.40q", out)
	}
	var stack []string
	z := html.NewTokenizer(strings.NewReader(out))
	for {
		switch z.Next() {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				t.Fatalf("tokenizer: %v", z.Err())
			}
			if len(stack) > 0 {
				t.Errorf("unclosed elements at end of page: %v", stack)
			}
			return
		case html.StartTagToken:
			name, _ := z.TagName()
			if !voidElements[string(name)] {
				stack = append(stack, string(name))
			}
		case html.EndTagToken:
			name, _ := z.TagName()
			if len(stack) == 0 || stack[len(stack)-1] != string(name) {
				t.Fatalf("end tag </%s> does not close the open element (open: %v)", name, stack)
			}
			stack = stack[:len(stack)-1]
		}
	}
}

var urlRE = regexp.MustCompile(`(?i)https?://[^\s"'<>)]*`)

// checkSelfContained asserts the page fetches nothing and runs nothing.
func checkSelfContained(t *testing.T, out string, doc *html.Node) {
	t.Helper()
	for _, u := range urlRE.FindAllString(out, -1) {
		if u != "http://www.w3.org/2000/svg" {
			t.Errorf("page refers to %q", u)
		}
	}
	for _, bad := range []string{"url(", "@import", "ZgotmplZ"} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	for _, n := range findAll(doc, func(n *html.Node) bool { return n.Type == html.ElementNode }) {
		switch n.Data {
		case "script", "link", "img", "iframe", "object", "embed":
			t.Errorf("page has a <%s> element", n.Data)
		}
		for _, a := range n.Attr {
			if a.Key == "src" || a.Key == "href" || strings.HasPrefix(a.Key, "on") {
				t.Errorf("<%s> has attribute %s=%q", n.Data, a.Key, a.Val)
			}
		}
	}
	if len(findAll(doc, func(n *html.Node) bool {
		return n.Type == html.ElementNode && n.Data == "meta" && attr(n, "charset") == "utf-8"
	})) != 1 {
		t.Error(`page lacks <meta charset="utf-8">`)
	}
	titles := findAll(doc, func(n *html.Node) bool {
		return n.Type == html.ElementNode && n.Data == "title" && n.Parent != nil && n.Parent.Data == "head"
	})
	if len(titles) != 1 || strings.TrimSpace(text(titles[0])) == "" {
		t.Errorf("page has %d non-empty <title> elements in <head>, want 1", len(titles))
	}
}

var numericAttrs = map[string]bool{
	"x": true, "y": true, "x1": true, "x2": true, "y1": true, "y2": true, "width": true, "height": true,
}

var pathNumRE = regexp.MustCompile(`-?[0-9.]+`)

// checkFiniteAttrs asserts every coordinate in the SVG is a finite number.
func checkFiniteAttrs(t *testing.T, doc *html.Node) {
	t.Helper()
	for _, n := range findAll(doc, func(n *html.Node) bool { return n.Type == html.ElementNode && n.Namespace == "svg" }) {
		for _, a := range n.Attr {
			switch {
			case strings.Contains(a.Val, "NaN") || strings.Contains(a.Val, "Inf"):
				t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
			case numericAttrs[a.Key]:
				if v, err := strconv.ParseFloat(a.Val, 64); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
					t.Errorf("<%s %s=%q> is not a finite number", n.Data, a.Key, a.Val)
				}
			case a.Key == "d":
				if strings.Trim(a.Val, "MLh0123456789.- ") != "" {
					t.Errorf("<path d=%q> has unexpected characters", a.Val)
				}
				for _, f := range pathNumRE.FindAllString(a.Val, -1) {
					if _, err := strconv.ParseFloat(f, 64); err != nil {
						t.Errorf("<path d=%q> has a bad number %q", a.Val, f)
					}
				}
			}
		}
	}
}

func findAll(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	for c := range n.Descendants() {
		if match(c) {
			out = append(out, c)
		}
	}
	return out
}

func elements(doc *html.Node, tag, class string) []*html.Node {
	return findAll(doc, func(n *html.Node) bool {
		return n.Type == html.ElementNode && n.Data == tag && (class == "" || hasClass(n, class))
	})
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	for _, c := range strings.Fields(attr(n, "class")) {
		if c == class {
			return true
		}
	}
	return false
}

func text(n *html.Node) string {
	var b strings.Builder
	for c := range n.Descendants() {
		if c.Type == html.TextNode {
			b.WriteString(c.Data)
		}
	}
	return b.String()
}

// figure returns the summary cell labelled label, nil if there is none.
func figure(doc *html.Node, label string) *html.Node {
	for _, tr := range elements(doc, "tr", "") {
		th := tr.FirstChild
		if th != nil && th.Data == "th" && text(th) == label && th.NextSibling != nil {
			return th.NextSibling
		}
	}
	return nil
}

// pathPoints counts the points of an SVG path as drawn by pathD.
func pathPoints(d string) int { return strings.Count(d, "M") + strings.Count(d, "L") }

func TestHTMLFanout(t *testing.T) {
	rep := fanoutReport()
	out, doc := renderHTML(t, rep)

	if got := len(elements(doc, "svg", "")); got != 3 {
		t.Errorf("got %d <svg> elements, want 3 (latency, rate, histogram)", got)
	}
	for _, class := range []string{"s-p50", "s-p99", "s-max", "s-rate"} {
		paths := elements(doc, "path", class)
		if len(paths) != 1 {
			t.Errorf("got %d paths of class %s, want 1", len(paths), class)
			continue
		}
		if got := pathPoints(attr(paths[0], "d")); got != len(rep.Timeline) {
			t.Errorf("%s path has %d points, want %d: %q", class, got, len(rep.Timeline), attr(paths[0], "d"))
		}
	}

	// One bar per non-empty bucket, left to right in bound order, the
	// tallest for the largest count.
	var want []Bucket
	for _, b := range rep.Histogram {
		if b.Count > 0 {
			want = append(want, b)
		}
	}
	bars := elements(doc, "rect", "bar")
	if len(bars) != len(want) {
		t.Fatalf("got %d bars, want %d (one per non-empty bucket)", len(bars), len(want))
	}
	prevX, tallest, tallestH := -1.0, "", 0.0
	for i, bar := range bars {
		x, _ := strconv.ParseFloat(attr(bar, "x"), 64)
		h, _ := strconv.ParseFloat(attr(bar, "height"), 64)
		if x <= prevX {
			t.Errorf("bar %d at x=%v is not right of the previous one at %v", i, x, prevX)
		}
		prevX = x
		if tip := text(bar); !strings.Contains(tip, fmtCount(want[i].Count)) || !strings.Contains(tip, fmtBound(want[i].UpToMS)+" ms") {
			t.Errorf("bar %d tooltip %q does not show bucket ≤%v ms with %d", i, tip, want[i].UpToMS, want[i].Count)
		}
		if h > tallestH {
			tallest, tallestH = text(bar), h
		}
	}
	if !strings.Contains(tallest, "5,000,000") {
		t.Errorf("tallest bar is %q, want the 5,000,000 bucket", tallest)
	}
	// The absent 200 ms bucket is still a place on the axis: the gap
	// between the 100 and 500 bars is two slots, not one.
	x := func(i int) float64 { v, _ := strconv.ParseFloat(attr(bars[i], "x"), 64); return v }
	if step, gap := x(1)-x(0), x(len(bars)-1)-x(len(bars)-2); math.Abs(gap-2*step) > 0.5 {
		t.Errorf("100→500 ms bars are %v apart, want two slots of %v", gap, step)
	}
	if got := len(elements(doc, "line", "marker")); got != 2 {
		t.Errorf("got %d percentile markers, want 2 (p50, p99)", got)
	}

	// The summary has every fan-out figure; only the non-zero problems are red.
	for label, value := range map[string]string{
		"published": "10,000", "expected": "10,000,000", "delivered": "9,999,999",
		"offered/s": "1,000,000", "achieved/s": "1,000,000", "lost": "1", "duplicates": "0", "out of order": "0",
	} {
		td := figure(doc, label)
		if td == nil {
			t.Errorf("summary lacks %q", label)
			continue
		}
		if text(td) != value {
			t.Errorf("%s = %q, want %q", label, text(td), value)
		}
		if bad := hasClass(td, "bad"); bad != (label == "lost") {
			t.Errorf("%s marked bad = %v", label, bad)
		}
	}
	for label, cells := range map[string][]string{
		"publish → receive": {"1.80", "3.10", "7.40", "18.2", "41.5"},
		"connect":           {"0.420", "0.900", "2.50", "4.00", "6.10"},
	} {
		td := figure(doc, label)
		for i, want := range cells {
			if td == nil || text(td) != want {
				t.Errorf("%s latency column %d: got %v, want %q", label, i, td, want)
				break
			}
			td = td.NextSibling
		}
	}
	for _, h := range []string{"p50", "p90", "p99", "p99.9", "max"} {
		if !strings.Contains(out, ">"+h+"</th>") {
			t.Errorf("latency table lacks column %s", h)
		}
	}
	// Errors are listed sorted by kind and marked.
	if i, j := strings.Index(out, ">dial<"), strings.Index(out, ">ws_read<"); i < 0 || j < 0 || i > j {
		t.Errorf("errors not listed in kind order (dial at %d, ws_read at %d)", i, j)
	}
	if td := figure(doc, "errors"); td == nil || text(td) != "5" || !hasClass(td, "bad") {
		t.Errorf("errors total is not a red 5")
	}
	for _, s := range []string{"deliveries/s", "Latency over time", "Latency histogram", "10.0 s"} {
		if !strings.Contains(out, s) {
			t.Errorf("page lacks %q", s)
		}
	}
	if strings.Contains(out, "no samples") {
		t.Error(`full report shows "no samples"`)
	}
}

func TestHTMLEmptyReport(t *testing.T) {
	out, doc := renderHTML(t, &Report{Mode: ModeFanout, Transport: "sse"})
	if got := len(elements(doc, "svg", "")); got != 0 {
		t.Errorf("got %d <svg> elements for a report without samples, want 0", got)
	}
	if got := strings.Count(out, "no samples"); got != 3 {
		t.Errorf(`"no samples" appears %d times, want 3 (latency, rate, histogram)`, got)
	}
	// An all-empty histogram is no histogram either.
	rep := fanoutReport()
	for i := range rep.Histogram {
		rep.Histogram[i].Count = 0
	}
	_, doc = renderHTML(t, rep)
	if got := len(elements(doc, "svg", "")); got != 2 {
		t.Errorf("got %d <svg> elements with an all-zero histogram, want 2", got)
	}
}

func TestHTMLActions(t *testing.T) {
	rep := actionsReport()
	out, doc := renderHTML(t, rep)
	if got := len(elements(doc, "svg", "")); got != 3 {
		t.Errorf("got %d <svg> elements, want 3", got)
	}
	if got := len(elements(doc, "rect", "bar")); got != 5 {
		t.Errorf("got %d bars, want 5", got)
	}
	if paths := elements(doc, "path", "s-rate"); len(paths) != 1 || pathPoints(attr(paths[0], "d")) != 5 {
		t.Errorf("rate line missing or not 5 points")
	}
	if td := figure(doc, "accepted"); td == nil || text(td) != "4,990" {
		t.Errorf("accepted figure missing or wrong")
	}
	if td := figure(doc, "accepted/s"); td == nil || text(td) != "998" {
		t.Errorf("accepted/s figure missing or wrong")
	}
	if td := figure(doc, "202 answer"); td == nil || text(td) != "0.610" {
		t.Errorf("202 answer p50 missing or wrong")
	}
	if !strings.Contains(out, "<h3>accepted/s</h3>") {
		t.Error("rate chart is not titled accepted/s")
	}
	for _, label := range []string{"lost", "duplicates", "published", "connect"} {
		if figure(doc, label) != nil {
			t.Errorf("actions summary shows fan-out figure %q", label)
		}
	}
	if got := len(elements(doc, "line", "marker")); got != 2 {
		t.Errorf("got %d percentile markers, want 2", got)
	}

	// Without an accept summary the page still renders, without markers.
	rep.AcceptMS = nil
	_, doc = renderHTML(t, rep)
	if got := len(elements(doc, "line", "marker")); got != 0 {
		t.Errorf("got %d markers without accept_ms, want 0", got)
	}
}

func TestHTMLConnectAndIdle(t *testing.T) {
	rep := &Report{Mode: ModeConnect, Transport: "mixed", Subscribers: 5000, Connected: 4990, ConnectsPerSec: 2480.4,
		ConnectMS: Latency{P50: 1.1, P99: 9}, Timeline: []Sample{{T: 1, Rate: 2480, P50MS: 1.1, P99MS: 9, MaxMS: 12}}}
	out, doc := renderHTML(t, rep)
	if td := figure(doc, "connects/s"); td == nil || text(td) != "2,480" {
		t.Errorf("connects/s missing or wrong")
	}
	if !strings.Contains(out, "<h3>connections/s</h3>") {
		t.Error("rate chart is not titled connections/s")
	}
	if n := elements(doc, "b", "bad"); len(n) != 1 || text(n[0]) != "4,990" {
		t.Error("connected below subscribers is not marked")
	}
	// A single sample is still drawn, as a dot.
	if paths := elements(doc, "path", "s-p50"); len(paths) != 1 || pathPoints(attr(paths[0], "d")) != 1 {
		t.Error("single-sample p50 line missing")
	}

	rep = &Report{Mode: ModeIdle, Transport: "ws", Subscribers: 100, Connected: 100,
		ServerRSSKBBefore: 10240, ServerRSSKBAfter: 12288, RSSPerConnBytes: 20972}
	_, doc = renderHTML(t, rep)
	for label, want := range map[string]string{
		"server RSS before": "10.0 MiB", "server RSS after": "12.0 MiB", "RSS per connection": "20.5 KiB",
	} {
		if td := figure(doc, label); td == nil || text(td) != want {
			t.Errorf("%s missing or not %q", label, want)
		}
	}
}

func TestHTMLEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script>`
	rep := fanoutReport()
	rep.Transport = evil
	rep.Mode = `"><img src=x onerror=alert(2)>`
	rep.Errors = map[string]int64{`<b onmouseover=alert(3)>`: 1}
	out, doc := renderHTML(t, rep) // also fails on any <script>, <img> or on* attribute
	if strings.Contains(out, evil) {
		t.Error("transport was written unescaped")
	}
	var found bool
	for _, n := range findAll(doc, func(n *html.Node) bool { return n.Type == html.TextNode }) {
		found = found || strings.Contains(n.Data, evil)
	}
	if !found {
		t.Error("transport is not shown as text")
	}
}

func TestHTMLNonFinite(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	rep := fanoutReport()
	rep.DurationS, rep.OfferedPerSec, rep.DeliveriesPerSec = inf, nan, math.Inf(-1)
	rep.LatencyMS = Latency{P50: nan, P90: inf, P99: nan, P999: inf, Max: nan}
	rep.Timeline[0].T = nan
	rep.Timeline[3].P50MS = nan
	rep.Timeline[2].P99MS = inf
	rep.Timeline[3].MaxMS = math.Inf(-1)
	rep.Timeline[4].Rate = nan
	rep.Histogram = append(rep.Histogram, Bucket{UpToMS: nan, Count: 5}, Bucket{UpToMS: inf, Count: 3})
	out, doc := renderHTML(t, rep)
	for _, s := range []string{"NaN", "Inf"} {
		if i := strings.Index(out, s); i >= 0 {
			t.Errorf("page contains %q: …%s…", s, out[max(i-80, 0):min(i+40, len(out))])
		}
	}
	if got := len(elements(doc, "svg", "")); got != 3 {
		t.Errorf("got %d <svg> elements, want 3: finite values are still drawn", got)
	}
	// The sample without a time is left out; the NaN p50 leaves a gap.
	if d := attr(elements(doc, "path", "s-p50")[0], "d"); pathPoints(d) != 8 || strings.Count(d, "M") != 2 {
		t.Errorf("p50 path %q: want 8 points in 2 runs", d)
	}
	if got := len(elements(doc, "rect", "bar")); got != 9 {
		t.Errorf("got %d bars, want 9 (8 finite buckets and the open-ended one)", got)
	}

	// Nothing finite at all: axes without lines, still no NaN.
	rep = &Report{Mode: "actions", AcceptMS: &Latency{P50: nan}, AcceptedPerSec: nan,
		Timeline:  []Sample{{T: 1, Rate: nan, P50MS: nan, P99MS: inf, MaxMS: nan}, {T: inf}},
		Histogram: []Bucket{{UpToMS: nan, Count: 1}}}
	out, _ = renderHTML(t, rep)
	if strings.Contains(out, "NaN") || strings.Contains(out, "Inf") {
		t.Error("page contains NaN or Inf")
	}
}

func TestHTMLErrors(t *testing.T) {
	if err := WriteHTML(io.Discard, nil); err == nil {
		t.Error("nil report: no error")
	}
	err := WriteHTML(failWriter{}, fanoutReport())
	if !errors.Is(err, errFailWrite) {
		t.Errorf("write failure: got %v, want it wrapped", err)
	}
}

var errFailWrite = errors.New("disk full")

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errFailWrite }
