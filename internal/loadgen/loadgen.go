// Package loadgen drives a Herald server with many subscribers and fixed-rate
// publishers, and measures what the subscribers observe: deliveries per
// second, loss, duplicates, order, and publish-to-receive latency.
//
// It runs in its own process (the server's file limit and CPU stay the
// server's), spreads connections over several loopback source addresses
// because one address has only ~28k ephemeral ports, and stamps each event
// with its intended send time so latency includes any time a late publisher
// spent catching up (no coordinated omission).
package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Config describes one run.
type Config struct {
	URL         string        // server base URL, e.g. http://127.0.0.1:8080
	Transport   string        // "ws", "sse" or "mixed" (half and half)
	Subscribers int           // subscriber connections
	Topics      int           // topics bench.0 … bench.K-1; subscriber i takes topic i mod K
	Publishers  int           // publishing goroutines, each owning a share of the topics
	Rate        float64       // publishes per second, all publishers together
	Batch       int           // events per publish request (1 = single form)
	Duration    time.Duration // publishing time
	Payload     int           // padding bytes per event
	SourceIPs   int           // spread connections over 127.0.0.1 … 127.0.0.N
	DialWorkers int           // concurrent connection attempts while ramping
	Drain       time.Duration // how long to wait for stragglers after publishing
	Prefix      string        // topic prefix (default "bench")
	// Progress, if set, is called about once a second with a status line.
	Progress func(Status)
}

// Status is a one-second snapshot for a live display.
type Status struct {
	Elapsed       time.Duration
	Connected     int64
	DeliveriesSec float64
	P50, P99      time.Duration
	Errors        int64
}

// Report is the result of a run, in the shape SPEC requires of `herald bench --json`.
type Report struct {
	Mode             string           `json:"mode"`
	Transport        string           `json:"transport"`
	Subscribers      int              `json:"subscribers"`
	Connected        int              `json:"connected"`
	DurationS        float64          `json:"duration_s"`
	Published        int64            `json:"published"`
	Expected         int64            `json:"expected_deliveries"`
	Delivered        int64            `json:"delivered"`
	OfferedPerSec    float64          `json:"offered_per_sec"`
	DeliveriesPerSec float64          `json:"deliveries_per_sec"`
	Lost             int64            `json:"lost"`
	Duplicates       int64            `json:"duplicates"`
	OutOfOrder       int64            `json:"out_of_order"`
	LatencyMS        Latency          `json:"latency_ms"`
	ConnectMS        Latency          `json:"connect_ms"`
	Errors           map[string]int64 `json:"errors"`
}

// Latency is a distribution summary in milliseconds.
type Latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p999"`
	Max  float64 `json:"max"`
}

func (c *Config) defaults() error {
	if c.URL == "" {
		c.URL = "http://127.0.0.1:8080"
	}
	c.URL = strings.TrimRight(c.URL, "/")
	switch c.Transport {
	case "":
		c.Transport = "ws"
	case "ws", "sse", "mixed":
	default:
		return fmt.Errorf("unknown transport %q (want ws, sse or mixed)", c.Transport)
	}
	if c.Subscribers < 0 || c.Topics < 0 || c.Publishers < 0 || c.Rate < 0 || c.Payload < 0 {
		return errors.New("counts and rates must not be negative")
	}
	if c.Topics == 0 {
		c.Topics = 1
	}
	if c.Publishers == 0 {
		c.Publishers = 1
	}
	if c.Publishers > c.Topics {
		c.Publishers = c.Topics
	}
	if c.Batch <= 0 {
		c.Batch = 1
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.SourceIPs <= 0 {
		c.SourceIPs = 1
	}
	if c.SourceIPs > 254 {
		c.SourceIPs = 254
	}
	if c.DialWorkers <= 0 {
		c.DialWorkers = 64
	}
	if c.Drain <= 0 {
		c.Drain = 5 * time.Second
	}
	if c.Prefix == "" {
		c.Prefix = "bench"
	}
	return nil
}

// run is the shared state of one run.
type run struct {
	cfg       Config
	start     time.Time
	hists     [64]lockedHist
	delivered atomic.Int64
	connected atomic.Int64
	lastRecv  atomic.Int64 // unix ns of the newest delivery
	errMu     sync.Mutex
	errs      map[string]int64
	subs      []*subscriber
}

type lockedHist struct {
	sync.Mutex
	h *hdrhistogram.Histogram
}

// subscriber is one connection's view: one topic, one sequence.
type subscriber struct {
	idx      int
	topic    int
	mu       sync.Mutex
	last     int64
	received int64
	dups     int64
	ooo      int64
}

func (r *run) fail(kind string) {
	r.errMu.Lock()
	r.errs[kind]++
	r.errMu.Unlock()
}

// observe records one event payload received by s.
func (r *run) observe(s *subscriber, seq, sentNS int64, now time.Time) {
	s.mu.Lock()
	switch {
	case seq == s.last+1:
		s.received++
		s.last = seq
	case seq <= s.last:
		s.dups++
	default:
		s.received++
		s.ooo++
		s.last = seq
	}
	s.mu.Unlock()
	r.delivered.Add(1)
	ns := now.UnixNano()
	r.lastRecv.Store(ns)
	lat := (ns - sentNS) / 1000 // µs
	if lat < 0 {
		lat = 0
	}
	lh := &r.hists[s.idx%len(r.hists)]
	lh.Lock()
	_ = lh.h.RecordValue(lat)
	lh.Unlock()
}

// Run performs a fan-out run: connect the subscribers, publish at the fixed
// rate for the duration, wait for stragglers, and report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, errs: map[string]int64{}}
	for i := range r.hists {
		r.hists[i].h = hdrhistogram.New(1, 60_000_000, 3) // 1 µs … 60 s
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Connect.
	connectHist := hdrhistogram.New(1, 60_000_000, 3)
	var chMu sync.Mutex
	var wg sync.WaitGroup
	r.subs = make([]*subscriber, cfg.Subscribers)
	for i := range r.subs {
		r.subs[i] = &subscriber{idx: i, topic: i % cfg.Topics}
	}
	work := make(chan *subscriber)
	ready := make(chan struct{}, cfg.Subscribers)
	hcs := newClients(cfg.SourceIPs)
	defer func() {
		for _, hc := range hcs {
			hc.CloseIdleConnections()
		}
	}()
	var dwg sync.WaitGroup
	for w := 0; w < cfg.DialWorkers; w++ {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for s := range work {
				kind := cfg.Transport
				if kind == "mixed" {
					kind = [2]string{"ws", "sse"}[s.idx%2]
				}
				t0 := time.Now()
				conn, err := r.connect(ctx, kind, s, hcs[s.idx%len(hcs)])
				if err != nil {
					r.fail("connect")
					ready <- struct{}{}
					continue
				}
				chMu.Lock()
				_ = connectHist.RecordValue(time.Since(t0).Microseconds())
				chMu.Unlock()
				r.connected.Add(1)
				ready <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer r.connected.Add(-1)
					if err := conn.read(ctx); err != nil && ctx.Err() == nil {
						r.fail("read")
					}
				}()
			}
		}()
	}
	go func() {
		defer close(work)
		for _, s := range r.subs {
			select {
			case work <- s:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range r.subs {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	dwg.Wait()
	connected := int(r.connected.Load())

	// Publish at a fixed rate.
	r.start = time.Now()
	stopProgress := r.progress(ctx)
	published, perTopic := r.publish(ctx)
	pubEnd := time.Now()

	// Wait for stragglers: until every subscriber has its topic's count, or Drain.
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r.complete(perTopic) {
			break
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	stopProgress()
	cancel()
	wg.Wait()

	rep := &Report{
		Mode:        "fanout",
		Transport:   cfg.Transport,
		Subscribers: cfg.Subscribers,
		Connected:   connected,
		DurationS:   pubEnd.Sub(r.start).Seconds(),
		Published:   published,
		Delivered:   r.delivered.Load(),
		Errors:      r.errs,
	}
	perSub := map[int]int{}
	for _, s := range r.subs {
		perSub[s.topic]++
	}
	for t, n := range perTopic {
		rep.Expected += n * int64(perSub[t])
	}
	for _, s := range r.subs {
		want := perTopic[s.topic]
		if s.received < want {
			rep.Lost += want - s.received
		}
		rep.Duplicates += s.dups
		rep.OutOfOrder += s.ooo
	}
	if rep.DurationS > 0 {
		rep.OfferedPerSec = float64(rep.Expected) / rep.DurationS
	}
	if last := r.lastRecv.Load(); last > 0 {
		if span := time.Unix(0, last).Sub(r.start).Seconds(); span > 0 {
			rep.DeliveriesPerSec = float64(rep.Delivered) / span
		}
	}
	all := hdrhistogram.New(1, 60_000_000, 3)
	for i := range r.hists {
		all.Merge(r.hists[i].h)
	}
	rep.LatencyMS = summarize(all)
	rep.ConnectMS = summarize(connectHist)
	return rep, nil
}

func summarize(h *hdrhistogram.Histogram) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		P50:  ms(h.ValueAtQuantile(50)),
		P90:  ms(h.ValueAtQuantile(90)),
		P99:  ms(h.ValueAtQuantile(99)),
		P999: ms(h.ValueAtQuantile(99.9)),
		Max:  ms(h.Max()),
	}
}

func (r *run) complete(perTopic map[int]int64) bool {
	for _, s := range r.subs {
		s.mu.Lock()
		got := s.received
		s.mu.Unlock()
		if got < perTopic[s.topic] {
			return false
		}
	}
	return true
}

// progress calls cfg.Progress every second until the returned func is called.
func (r *run) progress(ctx context.Context) (stop func()) {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		prev := r.delivered.Load()
		for {
			select {
			case <-t.C:
			case <-done:
				return
			case <-ctx.Done():
				return
			}
			now := r.delivered.Load()
			st := Status{Elapsed: time.Since(r.start), Connected: r.connected.Load(), DeliveriesSec: float64(now - prev)}
			prev = now
			all := hdrhistogram.New(1, 60_000_000, 3)
			for i := range r.hists {
				r.hists[i].Lock()
				all.Merge(r.hists[i].h)
				r.hists[i].Unlock()
			}
			st.P50 = time.Duration(all.ValueAtQuantile(50)) * time.Microsecond
			st.P99 = time.Duration(all.ValueAtQuantile(99)) * time.Microsecond
			r.errMu.Lock()
			for _, n := range r.errs {
				st.Errors += n
			}
			r.errMu.Unlock()
			r.cfg.Progress(st)
		}
	}()
	return func() { close(done); wg.Wait() }
}

// publish runs the publishers and returns the total and per-topic counts of
// events the server accepted.
func (r *run) publish(ctx context.Context) (int64, map[int]int64) {
	cfg := r.cfg
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Publishers * 2, DisableCompression: true}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	counts := make([]map[int]int64, cfg.Publishers)
	var total atomic.Int64
	var wg sync.WaitGroup
	pad := strings.Repeat("x", cfg.Payload)
	perPub := cfg.Rate / float64(cfg.Publishers)
	end := r.start.Add(cfg.Duration)
	for p := 0; p < cfg.Publishers; p++ {
		counts[p] = map[int]int64{}
		var topics []int
		for t := p; t < cfg.Topics; t += cfg.Publishers {
			topics = append(topics, t)
		}
		wg.Add(1)
		go func(p int, topics []int) {
			defer wg.Done()
			seqs := counts[p]
			interval := time.Duration(float64(time.Second) / perPub)
			next := r.start
			var body []byte
			for i := 0; ; i++ {
				if next.After(end) || ctx.Err() != nil {
					return
				}
				if d := time.Until(next); d > 0 {
					select {
					case <-time.After(d):
					case <-ctx.Done():
						return
					}
				}
				sent := next.UnixNano()
				body = body[:0]
				var pending []int
				if cfg.Batch > 1 {
					body = append(body, `{"events":[`...)
				}
				for b := 0; b < cfg.Batch; b++ {
					t := topics[(i*cfg.Batch+b)%len(topics)]
					seqs[t]++
					pending = append(pending, t)
					if b > 0 {
						body = append(body, ',')
					}
					body = fmt.Appendf(body, `{"topic":"%s.%d","type":"bench","data":{"bseq":%d,"bts":%d,"pad":"%s"}}`, cfg.Prefix, t, seqs[t], sent, pad)
				}
				if cfg.Batch > 1 {
					body = append(body, "]}"...)
				}
				if err := post(ctx, client, cfg.URL+"/v1/publish", body); err != nil {
					// The events were not accepted: take their sequence numbers back.
					for _, t := range pending {
						seqs[t]--
					}
					r.fail("publish")
				} else {
					total.Add(int64(len(pending)))
				}
				next = next.Add(interval)
			}
		}(p, topics)
	}
	wg.Wait()
	perTopic := map[int]int64{}
	for _, m := range counts {
		for t, n := range m {
			perTopic[t] += n
		}
	}
	return total.Load(), perTopic
}

func post(ctx context.Context, client *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(string(body)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	var sink json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&sink)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("publish: %s", resp.Status)
	}
	return nil
}

// parsePayload extracts bseq and bts from an event frame without a full
// JSON decode: the hot path of the client must not be the bottleneck.
func parsePayload(b []byte) (seq, sent int64, ok bool) {
	seq, ok1 := intAfter(b, `"bseq":`)
	sent, ok2 := intAfter(b, `"bts":`)
	return seq, sent, ok1 && ok2
}

func intAfter(b []byte, key string) (int64, bool) {
	i := indexOf(b, key)
	if i < 0 {
		return 0, false
	}
	i += len(key)
	var n int64
	start := i
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + int64(b[i]-'0')
		i++
	}
	return n, i > start
}

func indexOf(b []byte, s string) int {
	// strings.Index on a string view avoids an allocation.
	return strings.Index(unsafeString(b), s)
}

// FormatStatus renders a Status as the one-line live display.
func FormatStatus(s Status) string {
	return fmt.Sprintf("%6.1fs  connected %6d  deliveries/s %10.0f  p50 %8s  p99 %8s  errors %d",
		s.Elapsed.Seconds(), s.Connected, s.DeliveriesSec, s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond), s.Errors)
}

// SortedErrors lists error kinds by name, for stable output.
func SortedErrors(m map[string]int64) []string {
	out := make([]string, 0, len(m))
	for k, n := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, n))
	}
	sort.Strings(out)
	return out
}
