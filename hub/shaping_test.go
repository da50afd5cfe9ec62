package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/payload"
)

func pubKeyed(t testing.TB, h *hub.Hub, topic, key, data string) *hub.Message {
	t.Helper()
	msgs, err := h.Publish(context.Background(), hub.Draft{Topic: topic, Key: key, Data: []byte(data)})
	if err != nil {
		t.Fatalf("failed to publish to %s/%s: %v", topic, key, err)
	}
	return msgs[0]
}

// applyAll plays items as a client would: a delta envelope is applied to
// the data last received for its topic and key. It returns the full data of
// every event, and how many came as deltas.
func applyAll(t testing.TB, envs [][]byte) (datas []string, deltas int) {
	t.Helper()
	last := map[string][]byte{}
	for _, env := range envs {
		var e struct {
			Topic, Key string
			Data       *json.RawMessage
			Delta      *string
		}
		if err := json.Unmarshal(env, &e); err != nil {
			t.Fatalf("bad envelope %s: %v", env, err)
		}
		k := e.Topic + "\x00" + e.Key
		var data []byte
		switch {
		case e.Delta != nil:
			deltas++
			base, ok := last[k]
			if !ok {
				t.Fatalf("a delta without a base: %s", env)
			}
			var err error
			if data, err = delta.Apply(base, []byte(*e.Delta)); err != nil {
				t.Fatalf("delta does not apply: %v", err)
			}
		case e.Data != nil:
			data = []byte(*e.Data)
		default:
			t.Fatalf("neither data nor delta: %s", env)
		}
		if e.Key != "" {
			last[k] = data
		}
		datas = append(datas, string(data))
	}
	return datas, deltas
}

func TestDeltaEnvelopes(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("dash.*"), Delta: true})
	var want []string
	var last *hub.Message
	for i := range 6 {
		// Two keys interleaved, and an unkeyed event between.
		key := []string{"a", "b"}[i%2]
		want = append(want, payload.Dashboard(i))
		last = pubKeyed(t, h, "dash.1", key, payload.Dashboard(i))
		if i == 3 {
			want = append(want, `{"plain":true}`)
			last = pub(t, h, "dash.1", `{"plain":true}`)
		}
	}
	items := col.waitSeq(t, last.ID.Seq)
	// Two connections write the same items: the second gets the same
	// delta bytes, computed once.
	var b1, b2 hub.Bases
	var envs [][]byte
	for _, it := range items {
		if it.Msg == nil {
			continue
		}
		if it.Msg.Key != "" && !it.Delta {
			t.Fatalf("keyed event %d of a delta subscription not marked Delta", it.Msg.ID.Seq)
		}
		e1, d1 := b1.Envelope(it)
		e2, d2 := b2.Envelope(it)
		if d1 != d2 || !bytes.Equal(e1, e2) || (d1 && &e1[0] != &e2[0]) {
			t.Fatalf("two connections with the same base got different or unshared envelopes for %d", it.Msg.ID.Seq)
		}
		envs = append(envs, e1)
	}
	got, deltas := applyAll(t, envs)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("applied data differ:\n got %q\nwant %q", got, want)
	}
	// The first event of each key is whole; the four after them are deltas.
	if deltas != 4 {
		t.Fatalf("%d deltas, want 4", deltas)
	}
	for _, env := range envs {
		if len(env) > 1000 && bytes.Contains(env, []byte(`"delta"`)) {
			t.Fatalf("a delta envelope of %d bytes for a one-field change", len(env))
		}
	}
	// After a reset, every key starts again from whole data.
	b1.Reset()
	env, isDelta := b1.Envelope(items[len(items)-2])
	if isDelta || !bytes.Contains(env, []byte(`"data":`)) {
		t.Fatalf("after a reset the first event went as a delta: %s", env)
	}
}

func TestDeltaOnlyForDeltaSubscriptions(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("a")})
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("b"), Delta: true})
	pubKeyed(t, h, "a", "k", "1")
	last := pubKeyed(t, h, "b", "k", "2")
	items := col.waitSeq(t, last.ID.Seq)
	for _, it := range items {
		if it.Msg != nil && it.Delta != (it.Msg.Topic == "b") {
			t.Fatalf("event of %s: Delta %v", it.Msg.Topic, it.Delta)
		}
	}
}

func TestDeltaNotWorthIt(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	col := collect(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("t"), Delta: true})
	pubKeyed(t, h, "t", "k", `{"a":"first value entirely"}`)
	last := pubKeyed(t, h, "t", "k", `{"z":"something else, all new"}`)
	items := col.waitSeq(t, last.ID.Seq)
	var b hub.Bases
	for _, it := range items {
		if env, isDelta := b.Envelope(it); isDelta {
			t.Fatalf("a delta that saves nothing was used: %s", env)
		}
	}
}

// TestConflateQueued: events of a key that wait in the queue are replaced
// by the latest; other keys and unkeyed events keep their order.
func TestConflateQueued(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("px.*"), Conflate: time.Second})
	var last *hub.Message
	for i := range 300 {
		key := []string{"AAPL", "MSFT", "GOOG"}[i%3]
		last = pubKeyed(t, h, "px.us", key, fmt.Sprint(i))
		if i == 150 {
			pub(t, h, "px.us", `"unkeyed"`)
		}
	}
	settle(t, h)
	if n := hub.Queued(c); n > 2*(3+1) {
		t.Fatalf("%d items queued for 3 keys and one unkeyed event: conflation does not bound the queue", n)
	}
	col.open()
	items := col.waitSeq(t, last.ID.Seq)
	var got []string
	for _, it := range items {
		if it.Msg != nil {
			got = append(got, it.Msg.Key+"="+string(it.Msg.Data))
		}
	}
	want := `[="unkeyed" AAPL=297 MSFT=298 GOOG=299]`
	if fmt.Sprint(got) != want {
		t.Fatalf("delivered %v, want %s", got, want)
	}
	if st := h.Stats(); st.Conflated < 290 {
		t.Fatalf("Stats.Conflated = %d, want at least 290", st.Conflated)
	}
}

// TestConflateNotWhenAnotherSubscriptionWantsAll: a topic that a
// subscription without conflation also matches is delivered whole.
func TestConflateNotWhenAnotherSubscriptionWantsAll(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	col := collectGated(t, c)
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("px.*"), Conflate: time.Second})
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("px.eu")})
	var last *hub.Message
	for i := range 10 {
		last = pubKeyed(t, h, "px.eu", "SAP", fmt.Sprint(i))
	}
	col.open()
	items := col.waitSeq(t, last.ID.Seq)
	if len(msgSeqs(items)) != 10 {
		t.Fatalf("got %d events, want all 10: %s", len(msgSeqs(items)), describe(items))
	}
}

// pacer is a BatchWriter that records when each batch was written.
type pacer struct {
	mu      sync.Mutex
	batches [][]*hub.Message
	at      []time.Time
	ended   chan struct{}
}

func (p *pacer) WriteBatch(items []hub.Item) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b []*hub.Message
	for _, it := range items {
		if it.Msg != nil {
			b = append(b, it.Msg)
		}
	}
	p.batches = append(p.batches, b)
	p.at = append(p.at, time.Now())
	return nil
}
func (p *pacer) KeepAlive() error { return nil }
func (p *pacer) Finish(hub.End)   { close(p.ended) }

// TestConflatePace: a conflating connection's writer takes at most one
// batch per interval, and the last event of each key is always delivered.
func TestConflatePace(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	const interval = 100 * time.Millisecond
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("cpu"), Conflate: interval})
	p := &pacer{ended: make(chan struct{})}
	done := make(chan struct{})
	c.Serve(p, &hub.WriterOptions{ParkAfter: time.Second}, done)
	t.Cleanup(func() {
		close(done)
		c.Interrupt()
		<-p.ended
		c.Close()
	})
	var last *hub.Message
	for i := 0; i < 400; i++ {
		last = pubKeyed(t, h, "cpu", []string{"core0", "core1"}[i%2], fmt.Sprint(i))
		if i%40 == 0 {
			// Spread the publishing over several intervals.
			deadline := time.Now().Add(interval / 2)
			for time.Now().Before(deadline) {
				pubKeyed(t, h, "cpu", "core2", `"busy"`)
			}
		}
	}
	final := pubKeyed(t, h, "cpu", "core2", `"done"`)
	eventually(t, "the last events delivered", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		seen := map[uint64]bool{}
		for _, b := range p.batches {
			for _, m := range b {
				seen[m.ID.Seq] = true
			}
		}
		return seen[final.ID.Seq] && seen[last.ID.Seq] && seen[last.ID.Seq-1]
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 1; i < len(p.at); i++ {
		if gap := p.at[i].Sub(p.at[i-1]); gap < interval {
			t.Fatalf("batches %d and %d written %v apart, under the interval %v", i-1, i, gap, interval)
		}
	}
	var prev uint64
	for _, b := range p.batches {
		keys := map[string]bool{}
		for _, m := range b {
			if keys[m.Key] {
				t.Fatalf("two events of key %s in one batch", m.Key)
			}
			keys[m.Key] = true
			if m.ID.Seq <= prev {
				t.Fatalf("event %d after %d: reordered", m.ID.Seq, prev)
			}
			prev = m.ID.Seq
		}
	}
}

func TestParseShaping(t *testing.T) {
	for _, s := range []string{"", "fossil"} {
		if _, err := hub.ParseDelta(s); err != nil {
			t.Errorf("ParseDelta(%q): %v", s, err)
		}
	}
	for _, s := range []string{"xdelta", "FOSSIL", " fossil"} {
		if _, err := hub.ParseDelta(s); !errors.Is(err, hub.ErrInvalidDelta) {
			t.Errorf("ParseDelta(%q) = %v, want ErrInvalidDelta", s, err)
		}
	}
	for _, s := range []string{"50ms", "250ms", "1m", "60s"} {
		if _, err := hub.ParseConflate(s); err != nil {
			t.Errorf("ParseConflate(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "0", "49ms", "61s", "1h", "-1s", "fast", "250"} {
		if _, err := hub.ParseConflate(s); !errors.Is(err, hub.ErrInvalidConflate) {
			t.Errorf("ParseConflate(%q) = %v, want ErrInvalidConflate", s, err)
		}
	}
}

// BenchmarkDeltaDelivery is what a delta costs per delivery: 1,000
// connections (Bases) are written each event of a keyed topic, a 3.6 KB
// dashboard object of which one field changes, with and without deltas.
// The delta is computed once per event; each connection pays a map update
// and a cache lookup.
func BenchmarkDeltaDelivery(b *testing.B) {
	for _, withDelta := range []bool{false, true} {
		b.Run(fmt.Sprintf("delta=%v", withDelta), func(b *testing.B) {
			const conns, keys = 1000, 100
			msgs := make([]*hub.Message, 0, 1024)
			for i := range cap(msgs) {
				msgs = append(msgs, hub.NewMessage(hub.Event{
					ID: hub.Cursor{Epoch: "e", Seq: uint64(i + 1)}, Topic: "dash", Type: "message",
					Key: fmt.Sprintf("k%d", i%keys), Data: []byte(payload.Dashboard(i)), Time: time.Now(),
				}))
			}
			bases := make([]hub.Bases, conns)
			var wire int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m := msgs[i%len(msgs)]
				if i%len(msgs) == 0 && i > 0 {
					// Fresh messages, so every delta is computed again.
					for j, old := range msgs {
						msgs[j] = hub.NewMessage(old.Event)
					}
					m = msgs[0]
				}
				it := hub.Item{Msg: m, Delta: withDelta}
				for c := range bases {
					env, _ := bases[c].Envelope(it)
					wire += len(env)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*conns), "ns/delivery")
			b.ReportMetric(float64(wire)/float64(b.N*conns), "bytes/delivery")
		})
	}
}
