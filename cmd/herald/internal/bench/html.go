package bench

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// WriteHTML renders rep as one self-contained HTML page: a header with the
// run's shape, a summary of the figures that matter for rep.Mode (with loss,
// duplicates, reordering and errors marked when they are not zero), the
// per-second latency (p50, p99, max) and rate as SVG line charts, and
// rep.Histogram as an SVG bar chart with the p50 and p99 marked.
//
// The page needs nothing beyond itself: CSS and SVG are inline and there is
// no script, font or remote resource, so it can be archived or mailed and
// opened from disk. Every string taken from rep is HTML-escaped. Numbers
// that are not finite are shown as "–" in the tables and left out of the
// charts, so no NaN or Inf reaches the markup; an empty Timeline or
// Histogram is shown as "no samples" instead of a chart.
//
// The page is rendered in full before anything is written, so a rendering
// failure leaves w untouched.
func WriteHTML(w io.Writer, rep *Report) error {
	if rep == nil {
		return errors.New("failed to render report: no report")
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, buildPage(rep)); err != nil {
		return fmt.Errorf("failed to render report: %w", err)
	}
	if _, err := buf.WriteTo(w); err != nil {
		return fmt.Errorf("failed to write report: %w", err)
	}
	return nil
}

// htmlPage is everything the template shows, already formatted, so the
// template holds no logic beyond loops and conditions.
type htmlPage struct {
	Title        string
	Mode         string
	Transport    string
	Subscribers  string
	Connected    string
	ConnectedBad bool
	Duration     string

	Figures     []htmlFigure
	LatencyRows []htmlLatencyRow
	Errors      []htmlFigure

	LatencyNote string // what the mode's main latency measures
	RateTitle   string
	Latency     *svgChart // nil: no samples
	Rate        *svgChart
	Histogram   *svgChart
}

// htmlFigure is one labelled value of the summary; Bad marks it red.
type htmlFigure struct {
	Label, Value string
	Bad          bool
}

// htmlLatencyRow is one distribution of the summary, in milliseconds.
type htmlLatencyRow struct {
	Label                    string
	P50, P90, P99, P999, Max string
}

// svgChart is one chart, laid out in viewBox units: the plot area spans
// X0…X1 horizontally and Y0 (top) … Y1 (bottom) vertically.
type svgChart struct {
	W, H           int
	Label          string
	X0, X1, Y0, Y1 string
	YTickX, XTickY string // where y tick labels end, and the x tick labels' baseline
	XTickEnd       string // bottom end of the x tick marks
	XTicks, YTicks []svgTick
	Lines          []svgLine
	Bars           []svgBar
	Markers        []svgMarker
	Legend         []svgLegend
	XTitle, YTitle string
	XTitleX        string // right end of the x axis title
	XTitleY        string
	YTitleY        string
}

type svgTick struct{ Pos, Label string }

type svgLine struct{ Class, D string }

type svgBar struct{ X, Y, W, H, Tip string }

type svgMarker struct{ Class, X, LabelY, Label string }

type svgLegend struct{ Class, X, X2, TextX, Label string }

// Layout of every chart, in viewBox units; the page scales them to its width.
const (
	chartW      = 960
	chartLeft   = 64
	chartRight  = 20
	chartTop    = 30
	chartBottom = 40
	latencyH    = 320
	rateH       = 190
	histogramH  = 320
	maxHistBars = 80 // beyond this the 1-2-5 fill-in would drown the chart
)

func buildPage(rep *Report) htmlPage {
	mode := rep.Mode
	if mode == "" {
		mode = ModeFanout
	}
	p := htmlPage{
		Title:        fmt.Sprintf("Herald bench: %s over %s", mode, rep.Transport),
		Mode:         mode,
		Transport:    rep.Transport,
		Subscribers:  fmtCount(int64(rep.Subscribers)),
		Connected:    fmtCount(int64(rep.Connected)),
		ConnectedBad: rep.Connected < rep.Subscribers,
		Duration:     fmtSeconds(rep.DurationS),
	}
	if rep.Transport == "" {
		p.Title = "Herald bench: " + mode
	}

	latLabel, lat := mainLatency(rep, mode)
	p.LatencyNote = latLabel
	connectRow := htmlLatencyRow{Label: "connect"}
	fillLatency(&connectRow, rep.ConnectMS)
	var errTotal int64
	for _, n := range rep.Errors {
		errTotal += n
	}
	count := func(label string, n int64, bad bool) htmlFigure {
		return htmlFigure{Label: label, Value: fmtCount(n), Bad: bad}
	}
	switch mode {
	case "actions":
		p.RateTitle = "accepted/s"
		p.Figures = []htmlFigure{
			count("accepted", rep.Accepted, false),
			{Label: "accepted/s", Value: fmtRate(rep.AcceptedPerSec)},
		}
		if rep.AcceptMS != nil {
			row := htmlLatencyRow{Label: "202 answer"}
			fillLatency(&row, *rep.AcceptMS)
			p.LatencyRows = append(p.LatencyRows, row)
		}
		if rep.ConnectMS != (Latency{}) {
			p.LatencyRows = append(p.LatencyRows, connectRow)
		}
	case ModeConnect:
		p.RateTitle = "connections/s"
		p.Figures = []htmlFigure{
			{Label: "connects/s", Value: fmtRate(rep.ConnectsPerSec)},
		}
		p.LatencyRows = []htmlLatencyRow{connectRow}
	case ModeIdle:
		p.RateTitle = "connections/s"
		p.Figures = []htmlFigure{
			{Label: "server RSS before", Value: fmtKB(rep.ServerRSSKBBefore)},
			{Label: "server RSS after", Value: fmtKB(rep.ServerRSSKBAfter)},
			{Label: "RSS per connection", Value: fmtBytes(rep.RSSPerConnBytes)},
		}
		p.LatencyRows = []htmlLatencyRow{connectRow}
	default: // fanout, and anything unknown shows the fullest set
		p.RateTitle = "deliveries/s"
		p.Figures = []htmlFigure{
			count("published", rep.Published, false),
			count("expected", rep.Expected, false),
			count("delivered", rep.Delivered, false),
			{Label: "offered/s", Value: fmtRate(rep.OfferedPerSec)},
			{Label: "achieved/s", Value: fmtRate(rep.DeliveriesPerSec)},
			count("lost", rep.Lost, rep.Lost > 0),
			count("duplicates", rep.Duplicates, rep.Duplicates > 0),
			count("out of order", rep.OutOfOrder, rep.OutOfOrder > 0),
		}
		row := htmlLatencyRow{Label: "publish → receive"}
		fillLatency(&row, rep.LatencyMS)
		p.LatencyRows = []htmlLatencyRow{row, connectRow}
	}
	p.Figures = append(p.Figures, count("errors", errTotal, errTotal > 0))

	kinds := make([]string, 0, len(rep.Errors))
	for k := range rep.Errors {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	for _, k := range kinds {
		p.Errors = append(p.Errors, count(k, rep.Errors[k], rep.Errors[k] > 0))
	}

	p.Latency, p.Rate = timelineCharts(rep.Timeline, p.RateTitle)
	p.Histogram = histogramChart(rep.Histogram, lat)
	return p
}

// mainLatency returns what the mode's histogram measures and its summary,
// nil if the report has none.
func mainLatency(rep *Report, mode string) (string, *Latency) {
	switch mode {
	case "actions":
		return "time to the 202 answer", rep.AcceptMS
	case ModeConnect, ModeIdle:
		return "connect time", &rep.ConnectMS
	default:
		return "publish → receive", &rep.LatencyMS
	}
}

func fillLatency(row *htmlLatencyRow, l Latency) {
	row.P50, row.P90, row.P99, row.P999, row.Max = fmtMS(l.P50), fmtMS(l.P90), fmtMS(l.P99), fmtMS(l.P999), fmtMS(l.Max)
}

// timelineCharts draws the per-second latencies and rate over a shared time
// axis; both are nil if no sample has a usable time.
func timelineCharts(timeline []Sample, rateTitle string) (lat, rate *svgChart) {
	var ss []Sample
	for _, s := range timeline {
		if isFinite(s.T) {
			ss = append(ss, s)
		}
	}
	if len(ss) == 0 {
		return nil, nil
	}
	sort.SliceStable(ss, func(i, j int) bool { return ss[i].T < ss[j].T })
	lo, hi := math.Min(0, ss[0].T), ss[len(ss)-1].T
	if !(hi > lo) || !isFinite(hi-lo) {
		hi = lo + 1
	}
	ts := make([]float64, len(ss))
	p50, p99, mx, rt := make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss)), make([]float64, len(ss))
	for i, s := range ss {
		ts[i], p50[i], p99[i], mx[i], rt[i] = s.T, s.P50MS, s.P99MS, s.MaxMS, s.Rate
	}
	lat = lineChart(latencyH, "latency per second in ms", lo, hi, ts, "ms", false, []chartSeries{
		{"max", "max", mx}, {"p99", "p99", p99}, {"p50", "p50", p50},
	})
	rate = lineChart(rateH, rateTitle+" per second", lo, hi, ts, rateTitle, true, []chartSeries{
		{"rate", rateTitle, rt},
	})
	return lat, rate
}

// chartSeries is one line of a chart; values that are not finite leave a gap.
type chartSeries struct {
	class, label string
	ys           []float64
}

// lineChart draws series over xs (ascending, within lo…hi) on a y axis from
// 0 to a round number above the largest value.
func lineChart(h int, label string, lo, hi float64, xs []float64, yTitle string, compact bool, ss []chartSeries) *svgChart {
	c := newChart(h, label)
	c.XTitle, c.YTitle = "t (s)", yTitle
	x0, x1, y0, y1 := float64(chartLeft), float64(chartW-chartRight), float64(chartTop), float64(h-chartBottom)
	sx := func(t float64) float64 { return x0 + (t-lo)/(hi-lo)*(x1-x0) }

	ymax := 0.0
	for _, s := range ss {
		for _, y := range s.ys {
			if isFinite(y) && y > ymax {
				ymax = y
			}
		}
	}
	top, step := niceTop(ymax, 5)
	sy := func(v float64) float64 { return y1 - clampTo(v/top, 0, 1)*(y1-y0) }
	c.YTicks = yTicks(top, step, sy, compact)

	xstep := niceStep(hi-lo, 8)
	for k, n := math.Ceil(lo/xstep), 0; k*xstep <= hi*(1+1e-12) && n < 50; k, n = k+1, n+1 {
		c.XTicks = append(c.XTicks, svgTick{Pos: svgNum(sx(k * xstep)), Label: tickLabel(k*xstep, xstep, false)})
	}

	for _, s := range ss {
		c.Lines = append(c.Lines, svgLine{Class: "line s-" + s.class, D: pathD(xs, s.ys, sx, sy)})
	}
	if len(ss) > 1 {
		// Right-aligned above the plot, the main lines first.
		for i := range ss {
			s := ss[len(ss)-1-i]
			x := x1 - float64(len(ss)-i)*76
			c.Legend = append(c.Legend, svgLegend{Class: "line s-" + s.class, X: svgNum(x), X2: svgNum(x + 20), TextX: svgNum(x + 26), Label: s.label})
		}
	}
	return c
}

// pathD is the SVG path of the points (sx(x), sy(y)); a value that is not
// finite ends the current run, so the line shows a gap rather than a
// made-up value. A run of one point becomes a zero-length segment, which
// round line caps draw as a dot.
func pathD(xs, ys []float64, sx, sy func(float64) float64) string {
	var b strings.Builder
	run := 0
	for i, x := range xs {
		y := ys[i]
		if !isFinite(y) {
			if run == 1 {
				b.WriteString("h0")
			}
			run = 0
			continue
		}
		cmd := "L"
		if run == 0 {
			cmd = "M"
		}
		b.WriteString(cmd + svgNum(sx(x)) + " " + svgNum(sy(y)))
		run++
	}
	if run == 1 {
		b.WriteString("h0")
	}
	return b.String()
}

// histSlot is one bar position of the histogram: values in (lower, upper].
type histSlot struct {
	lower, upper float64
	count        int64
	label        string
}

// histogramChart draws buckets as equal-width bars, which is a log scale
// because the bounds grow geometrically. Bounds on the 1-2-5 series are laid
// on that series with any missing bucket filled in as empty, so a gap in
// the data stays a gap on the axis; other bounds are drawn as given. Empty
// bars at either end are dropped. lat, if not nil, adds p50 and p99 markers.
func histogramChart(buckets []Bucket, lat *Latency) *svgChart {
	slots := histSlots(buckets)
	for len(slots) > 0 && slots[0].count == 0 {
		slots = slots[1:]
	}
	for len(slots) > 0 && slots[len(slots)-1].count == 0 {
		slots = slots[:len(slots)-1]
	}
	if len(slots) == 0 {
		return nil
	}

	c := newChart(histogramH, "latency histogram: count per bucket")
	c.XTitle, c.YTitle = "ms (bucket upper bound, log scale)", "count"
	x0, x1, y0, y1 := float64(chartLeft), float64(chartW-chartRight), float64(chartTop), float64(histogramH-chartBottom)
	n := len(slots)
	slotW := (x1 - x0) / float64(n)
	gap := math.Min(2, slotW*0.15)

	var maxCount int64
	for _, s := range slots {
		maxCount = max(maxCount, s.count)
	}
	top, step := niceTop(float64(maxCount), 5)
	sy := func(v float64) float64 { return y1 - clampTo(v/top, 0, 1)*(y1-y0) }
	c.YTicks = yTicks(top, step, sy, true)

	every := (n + 17) / 18 // keep the bound labels from colliding
	if slots[0].lower > 0 && isFinite(slots[0].lower) && every == 1 {
		c.XTicks = append(c.XTicks, svgTick{Pos: svgNum(x0), Label: fmtBound(slots[0].lower)})
	}
	for i, s := range slots {
		if s.count > 0 {
			y := sy(float64(s.count))
			c.Bars = append(c.Bars, svgBar{
				X: svgNum(x0 + float64(i)*slotW + gap/2), Y: svgNum(y), W: svgNum(slotW - gap), H: svgNum(y1 - y),
				Tip: fmt.Sprintf("%s – %s ms: %s", fmtBound(s.lower), s.label, fmtCount(s.count)),
			})
		}
		if (i+1)%every == 0 || i == n-1 {
			c.XTicks = append(c.XTicks, svgTick{Pos: svgNum(x0 + float64(i+1)*slotW), Label: s.label})
		}
	}

	if lat != nil {
		for k, m := range []struct {
			class string
			v     float64
		}{{"p50", lat.P50}, {"p99", lat.P99}} {
			x, ok := markerX(slots, m.v)
			if !ok {
				continue
			}
			c.Markers = append(c.Markers, svgMarker{
				Class: "marker s-" + m.class, X: svgNum(x0 + x*slotW),
				LabelY: svgNum(y0 + 10 + float64(k)*13), Label: m.class + " " + fmtMS(m.v) + " ms",
			})
		}
	}
	return c
}

// histSlots turns buckets into ascending slots, merging equal bounds and
// dropping bounds that are not numbers; an infinite bound becomes a last
// open-ended slot.
func histSlots(buckets []Bucket) []histSlot {
	counts := map[float64]int64{}
	var bounds []float64
	var overflow int64
	hasOverflow := false
	for _, b := range buckets {
		c := max(b.Count, 0)
		switch {
		case math.IsInf(b.UpToMS, 1):
			overflow += c
			hasOverflow = true
		case isFinite(b.UpToMS):
			if _, ok := counts[b.UpToMS]; !ok {
				bounds = append(bounds, b.UpToMS)
			}
			counts[b.UpToMS] += c
		}
	}
	sort.Float64s(bounds)

	var slots []histSlot
	if idx, ok := series125(bounds); ok {
		byIdx := map[int]int64{}
		for _, b := range bounds {
			i, _ := index125(b)
			byIdx[i] += counts[b]
		}
		for i := idx[0]; i <= idx[len(idx)-1]; i++ {
			slots = append(slots, histSlot{lower: value125(i - 1), upper: value125(i), count: byIdx[i], label: fmtBound(value125(i))})
		}
	} else {
		for i, b := range bounds {
			s := histSlot{upper: b, count: counts[b], label: fmtBound(b)}
			switch {
			case i > 0:
				s.lower = bounds[i-1]
			case len(bounds) > 1 && b > 0 && bounds[1] > b:
				s.lower = b * b / bounds[1] // one geometric step below
			}
			slots = append(slots, s)
		}
	}
	if hasOverflow {
		s := histSlot{lower: math.Inf(1), upper: math.Inf(1), count: overflow, label: "∞"}
		if len(slots) > 0 {
			s.lower = slots[len(slots)-1].upper
		}
		slots = append(slots, s)
	}
	return slots
}

// markerX is where value v falls on the slots, in slot widths from the
// left: interpolated within its slot on a log scale.
func markerX(slots []histSlot, v float64) (float64, bool) {
	if !isFinite(v) || v <= 0 {
		return 0, false
	}
	for i, s := range slots {
		if !isFinite(s.upper) || v > s.upper {
			continue
		}
		frac := 0.5
		switch {
		case s.lower > 0 && s.upper > s.lower:
			frac = math.Log(v/s.lower) / math.Log(s.upper/s.lower)
		case s.upper > s.lower:
			frac = (v - s.lower) / (s.upper - s.lower)
		}
		return float64(i) + clampTo(frac, 0, 1), true
	}
	return 0, false
}

// series125 reports whether every bound is on the 1-2-5 series (…, 0.1,
// 0.2, 0.5, 1, 2, 5, 10, …) within a span the chart can show, and returns
// the bounds' positions on it.
func series125(bounds []float64) ([]int, bool) {
	if len(bounds) == 0 {
		return nil, false
	}
	idx := make([]int, len(bounds))
	for i, b := range bounds {
		j, ok := index125(b)
		if !ok {
			return nil, false
		}
		idx[i] = j
	}
	return idx, idx[len(idx)-1]-idx[0] < maxHistBars
}

var mantissas125 = [3]float64{1, 2, 5}

// index125 is v's position on the 1-2-5 series, 1 being 0.
func index125(v float64) (int, bool) {
	if !(v > 0) || !isFinite(v) {
		return 0, false
	}
	e := math.Floor(math.Log10(v))
	m := v / math.Pow(10, e)
	if m >= 9.999999 { // Log10 rounded down just below a power of ten
		m, e = m/10, e+1
	}
	for k, want := range mantissas125 {
		if math.Abs(m-want) <= want*1e-6 {
			return int(e)*3 + k, true
		}
	}
	return 0, false
}

// value125 is the inverse of index125.
func value125(i int) float64 {
	e := i / 3
	k := i % 3
	if k < 0 {
		e, k = e-1, k+3
	}
	return mantissas125[k] * math.Pow(10, float64(e))
}

func newChart(h int, label string) *svgChart {
	x1, y1 := float64(chartW-chartRight), float64(h-chartBottom)
	return &svgChart{
		W: chartW, H: h, Label: label,
		X0: svgNum(chartLeft), X1: svgNum(x1), Y0: svgNum(chartTop), Y1: svgNum(y1),
		YTickX: svgNum(chartLeft - 8), XTickY: svgNum(y1 + 16), XTickEnd: svgNum(y1 + 4),
		XTitleX: svgNum(x1), XTitleY: svgNum(y1 + 34), YTitleY: svgNum(chartTop - 12),
	}
}

func yTicks(top, step float64, sy func(float64) float64, compact bool) []svgTick {
	var ts []svgTick
	for k := 0; float64(k)*step <= top*(1+1e-12) && k <= 20; k++ {
		v := float64(k) * step
		ts = append(ts, svgTick{Pos: svgNum(sy(v)), Label: tickLabel(v, step, compact)})
	}
	return ts
}

// niceStep is a round tick step (1, 2 or 5 times a power of ten) giving
// about n ticks over span.
func niceStep(span float64, n int) float64 {
	if !(span > 0) || !isFinite(span) {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	switch r := raw / mag; {
	case r <= 1:
		return mag
	case r <= 2:
		return 2 * mag
	case r <= 5:
		return 5 * mag
	default:
		return 10 * mag
	}
}

// niceTop is the y axis's top, the first round tick at or above v (1 if v
// is not positive), and the tick step.
func niceTop(v float64, n int) (top, step float64) {
	if !(v > 0) || !isFinite(v) {
		v = 1
	}
	step = niceStep(v, n)
	top = math.Ceil(v/step-1e-9) * step
	if !(top >= v) || !isFinite(top) {
		top = v
	}
	return top, step
}

// tickLabel formats an axis value with as many decimals as step needs;
// compact abbreviates from ten thousand on (for counts and rates).
func tickLabel(v, step float64, compact bool) string {
	if v == 0 {
		return "0"
	}
	suffix := ""
	if compact {
		switch a := math.Abs(v); {
		case a >= 1e6:
			v, step, suffix = v/1e6, step/1e6, "M"
		case a >= 1e4:
			v, step, suffix = v/1e3, step/1e3, "k"
		}
	}
	dec := 0
	if step < 1 {
		dec = min(int(math.Ceil(-math.Log10(step)-1e-9)), 9)
	}
	return fmtFixed(v, dec) + suffix
}

// fmtBound labels a bucket bound given in ms; whole seconds read better
// than their milliseconds.
func fmtBound(ms float64) string {
	if !isFinite(ms) {
		return "∞"
	}
	if ms >= 1000 {
		return strconv.FormatFloat(ms/1000, 'g', 6, 64) + "s"
	}
	return strconv.FormatFloat(ms, 'g', 6, 64)
}

// fmtMS formats a latency in ms with about three significant digits.
func fmtMS(v float64) string {
	switch a := math.Abs(v); {
	case !isFinite(v):
		return "–"
	case a == 0:
		return "0"
	case a < 1:
		return fmtFixed(v, 3)
	case a < 10:
		return fmtFixed(v, 2)
	case a < 100:
		return fmtFixed(v, 1)
	default:
		return fmtFixed(v, 0)
	}
}

// fmtRate formats a per-second figure: whole numbers once they are large.
func fmtRate(v float64) string {
	switch a := math.Abs(v); {
	case !isFinite(v):
		return "–"
	case a >= 100:
		return fmtFixed(v, 0)
	default:
		return fmtFixed(v, 1)
	}
}

func fmtSeconds(v float64) string {
	if !isFinite(v) {
		return "–"
	}
	return fmtFixed(v, 1) + " s"
}

func fmtCount(n int64) string { return groupThousands(strconv.FormatInt(n, 10)) }

// fmtKB formats a size given in KiB; 0 means not measured.
func fmtKB(kb int64) string {
	if kb == 0 {
		return "–"
	}
	return fmtBytes(kb * 1024)
}

func fmtBytes(n int64) string {
	switch a := math.Abs(float64(n)); {
	case a >= 1<<30:
		return fmtFixed(float64(n)/(1<<30), 2) + " GiB"
	case a >= 1<<20:
		return fmtFixed(float64(n)/(1<<20), 1) + " MiB"
	case a >= 1<<10:
		return fmtFixed(float64(n)/(1<<10), 1) + " KiB"
	default:
		return strconv.FormatInt(n, 10) + " B"
	}
}

// fmtFixed formats v with dec decimals and thousands separators.
func fmtFixed(v float64, dec int) string {
	if !isFinite(v) {
		return "–"
	}
	s := strconv.FormatFloat(v, 'f', dec, 64)
	if strings.Trim(s, "-0.") == "" {
		s = strings.TrimPrefix(s, "-") // no "-0" for a value that rounds to zero
	}
	return groupThousands(s)
}

// groupThousands puts thousands separators into the integer part of a decimal number.
func groupThousands(s string) string {
	sign := ""
	if strings.HasPrefix(s, "-") {
		sign, s = "-", s[1:]
	}
	intPart, frac, _ := strings.Cut(s, ".")
	if frac != "" {
		frac = "." + frac
	}
	var b strings.Builder
	for i, r := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return sign + b.String() + frac
}

// svgNum formats a coordinate for an SVG attribute; it never yields NaN or Inf.
func svgNum(v float64) string {
	if !isFinite(v) {
		return "0"
	}
	r := math.Round(v*10) / 10
	if r == 0 {
		r = 0 // drop the sign of -0
	}
	return strconv.FormatFloat(r, 'f', -1, 64)
}

func isFinite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func clampTo(v, lo, hi float64) float64 {
	if !(v >= lo) { // also NaN
		return lo
	}
	return math.Min(v, hi)
}

var pageTmpl = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
*{box-sizing:border-box}
body{margin:0;background:#f6f7f9;color:#1f2933;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1040px;margin:0 auto;padding:24px 20px 40px}
h1{font-size:22px;font-weight:600;margin:0 0 4px}
h2{font-size:16px;font-weight:600;margin:0 0 4px}
h3{font-size:14px;font-weight:600;margin:16px 0 4px}
.meta{color:#52606d;margin:0 0 16px}
.meta b{color:#1f2933;font-weight:600}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:16px 20px;margin:16px 0}
.note{color:#7b8794;margin:0 0 8px;font-size:13px}
.cols{display:flex;flex-wrap:wrap;gap:12px 48px;align-items:flex-start}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 14px 3px 0;text-align:left;font-weight:normal}
thead th{color:#7b8794;border-bottom:1px solid #e4e7eb}
tbody th,.figures th{color:#52606d}
.num{text-align:right}
.bad{color:#c81e1e;font-weight:600}
.empty{color:#9aa5b1;font-style:italic;margin:8px 0 16px}
svg{display:block;width:100%;height:auto;margin:4px 0 12px}
svg text{font-size:11px;fill:#52606d}
.gridline{stroke:#eef0f3}
.axis{stroke:#9aa5b1}
.line{fill:none;stroke-width:1.6;stroke-linejoin:round;stroke-linecap:round}
.s-p50{stroke:#2563eb}
.s-p99{stroke:#ea580c}
.s-max{stroke:#c3cad4;stroke-width:1}
.s-rate{stroke:#059669}
.bar{fill:#93c5fd}
.bar:hover{fill:#3b82f6}
.marker{stroke-width:1.2;stroke-dasharray:4 3}
svg .halo{paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round;fill:#1f2933}
footer{color:#9aa5b1;font-size:12px}
</style>
</head>
<body>
<main>
<h1>Herald bench: {{.Mode}}</h1>
<p class="meta">transport <b>{{.Transport}}</b> · subscribers <b>{{.Subscribers}}</b> · connected <b{{if .ConnectedBad}} class="bad"{{end}}>{{.Connected}}</b> · duration <b>{{.Duration}}</b></p>
<section>
<h2>Summary</h2>
<div class="cols">
<table class="figures">
<tbody>
{{- range .Figures}}
<tr><th>{{.Label}}</th><td class="num{{if .Bad}} bad{{end}}">{{.Value}}</td></tr>
{{- end}}
</tbody>
</table>
{{- if .LatencyRows}}
<table class="latency">
<thead><tr><th>ms</th><th class="num">p50</th><th class="num">p90</th><th class="num">p99</th><th class="num">p99.9</th><th class="num">max</th></tr></thead>
<tbody>
{{- range .LatencyRows}}
<tr><th>{{.Label}}</th><td class="num">{{.P50}}</td><td class="num">{{.P90}}</td><td class="num">{{.P99}}</td><td class="num">{{.P999}}</td><td class="num">{{.Max}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
{{- if .Errors}}
<table class="errors">
<thead><tr><th>error</th><th class="num">count</th></tr></thead>
<tbody>
{{- range .Errors}}
<tr><th>{{.Label}}</th><td class="num{{if .Bad}} bad{{end}}">{{.Value}}</td></tr>
{{- end}}
</tbody>
</table>
{{- end}}
</div>
</section>
<section>
<h2>Latency over time</h2>
<p class="note">{{.LatencyNote}}, per second of the run: p50, p99 and max</p>
{{with .Latency}}{{template "chart" .}}{{else}}<p class="empty">no samples</p>{{end}}
<h3>{{.RateTitle}}</h3>
{{with .Rate}}{{template "chart" .}}{{else}}<p class="empty">no samples</p>{{end}}
</section>
<section>
<h2>Latency histogram</h2>
<p class="note">{{.LatencyNote}}, whole run</p>
{{with .Histogram}}{{template "chart" .}}{{else}}<p class="empty">no samples</p>{{end}}
</section>
<footer>herald bench</footer>
</main>
</body>
</html>
{{define "chart" -}}
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="{{.Label}}">
<g>
{{- range .YTicks}}
<line class="gridline" x1="{{$.X0}}" x2="{{$.X1}}" y1="{{.Pos}}" y2="{{.Pos}}"/><text x="{{$.YTickX}}" y="{{.Pos}}" dy="0.32em" text-anchor="end">{{.Label}}</text>
{{- end}}
{{- range .XTicks}}
<line class="axis" x1="{{.Pos}}" x2="{{.Pos}}" y1="{{$.Y1}}" y2="{{$.XTickEnd}}"/><text x="{{.Pos}}" y="{{$.XTickY}}" text-anchor="middle">{{.Label}}</text>
{{- end}}
</g>
<line class="axis" x1="{{.X0}}" x2="{{.X0}}" y1="{{.Y0}}" y2="{{.Y1}}"/>
<line class="axis" x1="{{.X0}}" x2="{{.X1}}" y1="{{.Y1}}" y2="{{.Y1}}"/>
<text x="{{.X0}}" y="{{.YTitleY}}">{{.YTitle}}</text>
<text x="{{.XTitleX}}" y="{{.XTitleY}}" text-anchor="end">{{.XTitle}}</text>
{{- range .Bars}}
<rect class="bar" x="{{.X}}" y="{{.Y}}" width="{{.W}}" height="{{.H}}"><title>{{.Tip}}</title></rect>
{{- end}}
{{- range .Lines}}
<path class="{{.Class}}" d="{{.D}}"/>
{{- end}}
{{- range .Markers}}
<line class="{{.Class}}" x1="{{.X}}" x2="{{.X}}" y1="{{$.Y0}}" y2="{{$.Y1}}"/><text class="halo" x="{{.X}}" y="{{.LabelY}}" dx="3">{{.Label}}</text>
{{- end}}
{{- range .Legend}}
<line class="{{.Class}}" x1="{{.X}}" x2="{{.X2}}" y1="12" y2="12"/><text x="{{.TextX}}" y="12" dy="0.32em">{{.Label}}</text>
{{- end}}
</svg>
{{- end}}
`))
