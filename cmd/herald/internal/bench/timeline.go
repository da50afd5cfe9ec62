package bench

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// meter is what the sampler reads once a second: a running count of the
// mode's unit of work and a merged copy of the mode's latency histogram so
// far. Both must be safe to call while the run goes on.
type meter struct {
	name    string // of the rate, for the status line
	count   func() int64
	latency func() *hdrhistogram.Histogram
}

// sample starts the once-a-second sampler: it appends a Sample to
// r.timeline and, if cfg.Progress is set, shows it as a Status. It runs
// until the returned func is called (calling it again is harmless) or ctx
// ends; r.timeline may be read only after stop has returned.
//
// Each sample's latencies are of its own second: the difference between
// two cumulative histograms, so the live line and the plot show a spike
// when it happens rather than diluted into the run so far.
func (r *run) sample(ctx context.Context, m meter) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prevCount := m.count()
		prevHist := m.latency()
		prevAt := time.Now()
		take := func(final bool) {
			now := time.Now()
			count, hist := m.count(), m.latency()
			iv := subtract(hist, prevHist)
			elapsed := now.Sub(r.start)
			secs := now.Sub(prevAt).Seconds()
			s := Sample{
				T:         math.Round(elapsed.Seconds()*1000) / 1000,
				Connected: r.connected.Load(),
				Rate:      float64(count - prevCount),
				Errors:    r.errorCount(),
			}
			if final && secs > 0 {
				// A partial second: its rate per second, not its count.
				s.Rate = math.Round(float64(count-prevCount) / secs)
			}
			prevCount, prevHist, prevAt = count, hist, now
			if iv.TotalCount() > 0 {
				s.P50MS = ms(iv.ValueAtQuantile(50))
				s.P99MS = ms(iv.ValueAtQuantile(99))
				s.MaxMS = ms(iv.Max())
			}
			r.timeline = append(r.timeline, s)
			if r.cfg.Progress != nil && !final {
				st := Status{Elapsed: elapsed, Connected: s.Connected, DeliveriesSec: s.Rate, RateName: m.name, Errors: s.Errors,
					P50: time.Duration(s.P50MS * float64(time.Millisecond)), P99: time.Duration(s.P99MS * float64(time.Millisecond))}
				st.Phase, _ = r.phase.Load().(string)
				r.cfg.Progress(st)
			}
		}
		for {
			select {
			case <-t.C:
				take(false)
			case <-done:
				// The last partial second counts too, so that a run shorter
				// than a second still has a timeline.
				if time.Since(prevAt) >= 100*time.Millisecond || len(r.timeline) == 0 {
					take(true)
				}
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }); wg.Wait() }
}

// subtract returns the values recorded in cur but not in prev, where cur is
// a later copy of the same cumulative histogram as prev.
func subtract(cur, prev *hdrhistogram.Histogram) *hdrhistogram.Histogram {
	c, p := cur.Export(), prev.Export()
	for i := range c.Counts {
		if i < len(p.Counts) {
			c.Counts[i] = max(c.Counts[i]-p.Counts[i], 0)
		}
	}
	return hdrhistogram.Import(c)
}

// ms converts a histogram value (µs) to milliseconds.
func ms(us int64) float64 { return float64(us) / 1000 }

// buckets summarizes h as bars with upper bounds on a 1-2-5 series from
// 10 µs, up to the first bound that holds the maximum; it is empty if h is.
func buckets(h *hdrhistogram.Histogram) []Bucket {
	if h.TotalCount() == 0 {
		return nil
	}
	var bounds []int64 // µs
	for decade := int64(10); ; decade *= 10 {
		for _, f := range []int64{1, 2, 5} {
			bounds = append(bounds, decade*f)
		}
		if bounds[len(bounds)-1] >= h.Max() {
			break
		}
	}
	for len(bounds) > 1 && bounds[len(bounds)-2] >= h.Max() {
		bounds = bounds[:len(bounds)-1]
	}
	out := make([]Bucket, len(bounds))
	for i, b := range bounds {
		out[i].UpToMS = ms(b)
	}
	for _, bar := range h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		// A bar covers [From, To], values equivalent at the histogram's
		// precision; From is the one that was recorded for a round value.
		i := 0
		for i < len(bounds)-1 && bar.From > bounds[i] {
			i++
		}
		out[i].Count += bar.Count
	}
	return out
}

// mergedCopy returns one histogram holding every shard's values so far.
func mergedCopy(shards ...*lockedHist) *hdrhistogram.Histogram {
	all := newHist()
	for _, lh := range shards {
		lh.Lock()
		all.Merge(lh.h)
		lh.Unlock()
	}
	return all
}
