package brokertest

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// The presence benchmarks run a hub on a broker, through the hub's own
// publisher of joins and leaves and its writers, as a node does. Each
// brokers' test package runs them on its broker (docs/benchmarks.md,
// "Presence").

func benchHub(b *testing.B, br hub.Broker) *hub.Hub {
	return startHub(b, hub.Options{Broker: br, QueueBytes: 4 << 20})
}

// startHub starts a hub, closed when the test ends.
func startHub(tb testing.TB, o hub.Options) *hub.Hub {
	tb.Helper()
	h, err := hub.New(o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := h.Close(ctx); err != nil {
			tb.Errorf("failed to close hub: %v", err)
		}
	})
	return h
}

// BenchPresenceSnapshot measures Hub.Presence of a topic with members
// members, joined through the broker in batches.
func BenchPresenceSnapshot(b *testing.B, br hub.Broker, members int) {
	h := benchHub(b, br)
	ctx := context.Background()
	for i := 0; i < members; i += 500 {
		chs := make([]hub.PresenceChange, 0, 500)
		for j := i; j < min(i+500, members); j++ {
			chs = append(chs, hub.PresenceChange{Topic: "big", Client: fmt.Sprintf("bench-%d", j), Join: true,
				Member: []byte(fmt.Sprintf(`{"client":"bench-%d","user":"u%d","info":{"name":"member %d"}}`, j, j%1000, j))})
		}
		if _, err := br.ChangePresence(ctx, chs); err != nil {
			b.Fatal(err)
		}
	}
	var worst time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		p, err := h.Presence(ctx, "big")
		if err != nil {
			b.Fatal(err)
		}
		worst = max(worst, time.Since(start))
		if p.Clients != members || p.Users != min(members, 1000) {
			b.Fatalf("%d clients, %d users; want %d and %d", p.Clients, p.Users, members, min(members, 1000))
		}
	}
	b.ReportMetric(float64(worst.Microseconds())/1000, "max-ms")
}

// signalWriter is a BatchWriter that counts the joins and leaves it is
// given into the current round.
type signalWriter struct {
	c     *hub.Client
	round *atomic.Pointer[sync.WaitGroup]
	ended chan struct{}
}

func (w *signalWriter) WriteBatch(items []hub.Item) error {
	for _, it := range items {
		if it.Msg != nil && it.Msg.IsPresence() {
			w.round.Load().Done()
		}
	}
	return nil
}

func (w *signalWriter) KeepAlive() error { return nil }

func (w *signalWriter) Finish(hub.End) {
	w.c.Close()
	close(w.ended)
}

// BenchPresenceFanout measures how long a join, and then a leave, take
// from the subscribe (or the close) of a member to their delivery to the
// writers of all of watchers subscribers with presence events: each round is
// one join or one leave, and its time is that of the last writer to get it.
// It reports the median and the 99th percentile.
func BenchPresenceFanout(b *testing.B, br hub.Broker, watchers int) {
	h := benchHub(b, br)
	var round atomic.Pointer[sync.WaitGroup]
	round.Store(&sync.WaitGroup{})
	for range watchers {
		c, err := h.NewClient("bench")
		if err != nil {
			b.Fatal(err)
		}
		w := &signalWriter{c: c, round: &round, ended: make(chan struct{})}
		c.Serve(w, &hub.WriterOptions{ParkAfter: time.Second}, nil)
		b.Cleanup(func() { c.Close(); <-w.ended })
		if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("lobby")}, PresenceEvents: true}); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, 2*b.N)
	step := func(act func()) {
		wg := &sync.WaitGroup{}
		wg.Add(watchers)
		round.Store(wg)
		start := time.Now()
		act()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(waitTimeout):
			b.Fatal("a join or leave did not reach every watcher")
		}
		lat = append(lat, time.Since(start))
	}
	b.ResetTimer()
	for range b.N {
		m, err := h.NewClient("bench")
		if err != nil {
			b.Fatal(err)
		}
		step(func() {
			if err := m.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("lobby")}, Presence: true}); err != nil {
				b.Fatal(err)
			}
		})
		step(m.Close)
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// countWriter counts the joins and leaves it is given, by member.
type countWriter struct {
	c      *hub.Client
	mu     sync.Mutex
	joins  map[string]int
	leaves map[string]int
	n      atomic.Int64
	ended  chan struct{}
}

func (w *countWriter) WriteBatch(items []hub.Item) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range items {
		if it.Msg == nil || !it.Msg.IsPresence() {
			continue
		}
		if it.Msg.Type == hub.TypeJoin {
			w.joins[it.Msg.Key]++
		} else {
			w.leaves[it.Msg.Key]++
		}
		w.n.Add(1)
	}
	return nil
}

func (w *countWriter) KeepAlive() error { return nil }

func (w *countWriter) Finish(hub.End) {
	w.c.Close()
	close(w.ended)
}

// ChurnFor is how long BenchmarkPresenceChurn joins members: short in a
// quick run, -churn 30s for the sustained figure of docs/benchmarks.md.
var ChurnFor = flag.Duration("churn", 2*time.Second, "how long BenchmarkPresenceChurn joins members")

// BenchPresenceChurn joins rate members a second for d, each leaving again
// after live others joined, and checks that a watcher got every join and
// every leave once: it reports how many were lost or doubled (both must be
// 0) and the rate reached.
func BenchPresenceChurn(b *testing.B, br hub.Broker, rate int, d time.Duration, live int) {
	h := benchHub(b, br)
	c, err := h.NewClient("bench")
	if err != nil {
		b.Fatal(err)
	}
	w := &countWriter{c: c, joins: map[string]int{}, leaves: map[string]int{}, ended: make(chan struct{})}
	c.Serve(w, &hub.WriterOptions{ParkAfter: time.Second}, nil)
	b.Cleanup(func() { c.Close(); <-w.ended })
	if err := c.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("churn")}, PresenceEvents: true}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	total := 0
	var elapsed time.Duration
	for range b.N {
		var members []*hub.Client
		// On a schedule, not a ticker: a join that is late is made at once,
		// so the rate is kept on average rather than lowered.
		start, n := time.Now(), int(d.Seconds()*float64(rate))
		for i := range n {
			if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
				time.Sleep(wait)
			}
			m, err := h.NewClient("bench")
			if err != nil {
				b.Fatal(err)
			}
			if err := m.Subscribe(hub.SubscribeRequest{Patterns: []hub.Pattern{hub.MustPattern("churn")}, Presence: true}); err != nil {
				b.Fatal(err)
			}
			total++
			members = append(members, m)
			if len(members) > live {
				members[0].Close()
				members = members[1:]
			}
		}
		elapsed += time.Since(start)
		for _, m := range members {
			m.Close()
		}
	}
	deadline := time.Now().Add(waitTimeout)
	for w.n.Load() < int64(2*total) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for the tail, with a deadline
	}
	b.StopTimer()
	w.mu.Lock()
	defer w.mu.Unlock()
	lost, doubled := 0, 0
	for _, n := range w.joins {
		if n > 1 {
			doubled += n - 1
		}
	}
	for _, n := range w.leaves {
		if n > 1 {
			doubled += n - 1
		}
	}
	lost += total - len(w.joins)
	lost += total - len(w.leaves)
	b.ReportMetric(float64(total)/elapsed.Seconds(), "joins/s")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(doubled), "doubled")
	if lost != 0 || doubled != 0 || h.Stats().PresenceRefused != 0 {
		b.Errorf("%d joins: %d joins or leaves lost, %d doubled, %d refused", total, lost, doubled, h.Stats().PresenceRefused)
	}
}
