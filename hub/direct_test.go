package hub_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// directRecorder is a DirectWriter whose socket, TryWrite, takes an event
// whole, in part or not at all, at random. It keeps the sequence numbers of
// the events in the order they reached its socket, and fails the test when
// a call would break the contract: two calls at once, or a write before the
// rest of a frame TryWrite began.
type directRecorder struct {
	t        *testing.T
	c        *hub.Client
	inFlight atomic.Int32

	mu      sync.Mutex
	rng     *rand.Rand
	seqs    []uint64
	rest    bool // TryWrite left part of a frame: Flush must come first
	direct  int  // events TryWrite took
	partial int  // of which only in part
	flushes int
	batches int
	beats   int
	ended   chan hub.End
}

func (r *directRecorder) enter() func() {
	if r.inFlight.Add(1) != 1 {
		r.t.Error("two calls of the DirectWriter at once")
	}
	r.mu.Lock()
	return func() {
		r.mu.Unlock()
		r.inFlight.Add(-1)
	}
}

func (r *directRecorder) mustNotHaveRest(call string) {
	if r.rest {
		r.t.Errorf("%s called before Flush sent the rest of a direct write", call)
	}
}

func (r *directRecorder) TryWrite(m *hub.Message) (written, rest bool) {
	defer r.enter()()
	if r.rest {
		return false, false // the socket still holds the rest: nothing goes past it
	}
	switch r.rng.IntN(3) {
	case 0:
		return false, false // a full socket buffer
	case 1:
		r.rest = true
		r.partial++
	}
	r.direct++
	r.seqs = append(r.seqs, m.ID.Seq)
	return true, r.rest
}

func (r *directRecorder) Flush() error {
	defer r.enter()()
	if !r.rest {
		r.t.Error("Flush without a rest to send")
	}
	r.rest = false
	r.flushes++
	return nil
}

func (r *directRecorder) WriteBatch(items []hub.Item) error {
	defer r.enter()()
	r.mustNotHaveRest("WriteBatch")
	for _, it := range items {
		if it.Msg != nil {
			r.seqs = append(r.seqs, it.Msg.ID.Seq)
		}
	}
	r.batches++
	return nil
}

func (r *directRecorder) KeepAlive() error {
	defer r.enter()()
	r.mustNotHaveRest("KeepAlive")
	r.beats++
	return nil
}

func (r *directRecorder) Finish(end hub.End) {
	r.ended <- end
	r.c.Close()
}

func (r *directRecorder) got() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seqs)
}

// TestDirectWrites: events written by the dispatcher (whole, in part or
// not at all) and by the writer, with keep-alives between them, reach the
// connection once each and in order, and the writer sends the rest of a
// frame the dispatcher began before anything else.
func TestDirectWrites(t *testing.T) {
	h := newHub(t, hub.Options{})
	c := newClient(t, h, "test")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("direct")})
	r := &directRecorder{t: t, c: c, rng: rand.New(rand.NewPCG(1, 2)), ended: make(chan hub.End, 1)}
	done := make(chan struct{})
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Millisecond, KeepAlive: 5 * time.Millisecond}, done)

	// Single events to an idle writer are what the dispatcher writes
	// itself; batches of several, and events behind them, go to the writer.
	var want []uint64
	for i := 0; len(want) < 3000; i++ {
		n := 1
		if i%10 == 9 {
			n = 5
		}
		drafts := make([]hub.Draft, n)
		for j := range drafts {
			drafts[j] = hub.Draft{Topic: "direct", Data: []byte(fmt.Sprint(i))}
		}
		msgs, err := h.Publish(context.Background(), drafts...)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			want = append(want, m.ID.Seq)
		}
		if i%4 != 3 {
			// Let the writer catch up, so that the next event finds it idle.
			wait.For(t, waitTimeout, "the writer to catch up", func() bool { return r.got() >= len(want) && hub.Idle(c) })
		}
	}
	wait.For(t, waitTimeout, "every event", func() bool { return r.got() >= len(want) })
	close(done)
	c.Interrupt()
	<-r.ended

	r.mu.Lock()
	defer r.mu.Unlock()
	if fmt.Sprint(r.seqs) != fmt.Sprint(want) {
		t.Fatalf("the connection got %d events, not the %d published in order", len(r.seqs), len(want))
	}
	if r.direct == 0 || r.partial == 0 || r.batches == 0 || r.flushes != r.partial-boolInt(r.rest) {
		t.Fatalf("direct %d (partial %d, flushed %d), batches %d: want each path taken", r.direct, r.partial, r.flushes, r.batches)
	}
	if st := h.Stats(); st.DirectWrites != int64(r.direct) || st.Delivered != int64(len(want)) {
		t.Fatalf("stats: %d direct writes of %d delivered, want %d of %d", st.DirectWrites, st.Delivered, r.direct, len(want))
	}
	t.Logf("%d events: %d written by the dispatcher (%d in part), %d batches, %d keep-alives", len(want), r.direct, r.partial, r.batches, r.beats)
}

// TestNoDirectWrites: Options.NoDirectWrites leaves every event to the
// writer.
func TestNoDirectWrites(t *testing.T) {
	h := newHub(t, hub.Options{NoDirectWrites: true})
	c := newClient(t, h, "test")
	subscribe(t, c, hub.SubscribeRequest{Patterns: pats("direct")})
	r := &directRecorder{t: t, c: c, rng: rand.New(rand.NewPCG(1, 2)), ended: make(chan hub.End, 1)}
	c.Serve(r, &hub.WriterOptions{ParkAfter: time.Millisecond}, nil)
	for i := range 20 {
		pub(t, h, "direct", "1")
		wait.For(t, waitTimeout, "the event", func() bool { return r.got() == i+1 })
	}
	c.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.direct != 0 || h.Stats().DirectWrites != 0 {
		t.Fatalf("%d direct writes with NoDirectWrites", r.direct)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestDirectWriteAsServeStarts: a direct write may come as soon as Serve
// has made the writer a DirectWriter, while events are published: what it
// reads of the writer (its keep-alive timer) is set by then (the race
// detector checks).
func TestDirectWriteAsServeStarts(t *testing.T) {
	h := newHub(t, hub.Options{})
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// One event at a time, each dispatched before the next: a shard
		// writes directly only with nothing waiting behind the event.
		for ctx.Err() == nil {
			start := time.Now()
			before := h.Stats().Delivered
			if _, err := h.Publish(context.Background(), hub.Draft{Topic: "serve", Data: []byte("1")}); err != nil {
				t.Error(err)
				return
			}
			for h.Stats().Delivered == before && ctx.Err() == nil {
				runtime.Gosched()
			}
			// Pacing, not synchronisation: a shard busy more than three
			// quarters of the time writes nothing directly (directGate),
			// and on a loaded machine back-to-back publishes kept it so
			// for the whole test. Idle as long as the round took, it is
			// busy at most half the time.
			time.Sleep(time.Since(start))
		}
	}()
	opts := &hub.WriterOptions{ParkAfter: time.Millisecond, KeepAlive: time.Hour, WritesKeepAlive: true}
	var rs []*directRecorder
	for i := range 200 {
		c := newClient(t, h, "test")
		subscribe(t, c, hub.SubscribeRequest{Patterns: pats("serve")})
		r := &directRecorder{t: t, c: c, rng: rand.New(rand.NewPCG(uint64(i), 3)), ended: make(chan hub.End, 1)}
		c.Serve(r, opts, nil)
		rs = append(rs, r)
	}
	wait.For(t, waitTimeout, "direct writes", func() bool { return h.Stats().DirectWrites > 0 })
	stop()
	wg.Wait()
	for _, r := range rs {
		r.c.Close()
	}
}
