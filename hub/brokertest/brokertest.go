// Package brokertest is the conformance suite for hub.Broker implementations.
//
// Every Broker (the in-memory one, and the cluster brokers built on Redis
// Streams and NATS JetStream) must pass Run. The suite states the contract
// written in hub/broker.go as observable checks: one total order with
// consecutive sequence numbers under concurrent publishers, all-or-nothing
// batches, gap-free in-order delivery, "readable before delivered", filtered
// and paged reads, bounded retention and the Bounds semantics, and a hub's
// rewind served by the broker's reads. Brokers that
// several nodes share also pass RunCluster: nodes publishing at once agree
// on one order. Brokers that append a node's concurrent publishes together
// (group commit) also pass RunGroupCancel, RunGroupDedupe,
// RunGroupAnswerLost and RunQueueBound on a Held broker, and
// RunManyPublishers.
//
// The suite does not depend on timing: every wait polls for a condition with
// a deadline, and nothing asserts that something has NOT happened yet by a
// given moment.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
)

// Options is the retention a test asks of a new broker.
type Options struct {
	Size int           // retain at most this many events (0: the implementation's default)
	TTL  time.Duration // drop events older than this (0: no age limit)
	// MaxBytes bounds the retained events' size in bytes (0: the
	// implementation's default). Implementations measure an event's size
	// their own way (envelope, stored record), always at least its data.
	MaxBytes int
	// StateMaxKeys bounds the keys of one topic's state (0: the
	// implementation's default).
	StateMaxKeys int
	// PresenceMaxMembers bounds the members of one topic (0: the
	// implementation's default).
	PresenceMaxMembers int
	// NodeTTL is how long a node's heartbeat lives (cluster brokers; 0:
	// the implementation's default).
	NodeTTL time.Duration
}

// waitTimeout bounds every wait of the suite. It is generous on purpose: the
// suite runs under -race on small machines, and a correct broker meets every
// condition long before it.
const waitTimeout = 20 * time.Second

// Run runs the conformance suite. newBroker must return a broker on a new,
// empty log (no event published yet), not yet started, configured with o.
// Run closes each broker when its subtest ends; newBroker may register further
// cleanup (a container, a key prefix) with t.Cleanup.
func Run(t *testing.T, newBroker func(t *testing.T, o Options) hub.Broker) {
	s := &suite{newBroker: newBroker}
	t.Run("EmptyBounds", s.testEmptyBounds)
	t.Run("SequentialPublish", s.testSequentialPublish)
	t.Run("ConcurrentTotalOrder", s.testConcurrentTotalOrder)
	t.Run("BatchNothingOnError", s.testBatchNothingOnError)
	t.Run("ReadableBeforeDelivered", s.testReadableBeforeDelivered)
	t.Run("FilteredRead", s.testFilteredRead)
	t.Run("ReadPaging", s.testReadPaging)
	t.Run("ReadAtHeadWhilePublishing", s.testReadAtHeadWhilePublishing)
	t.Run("RetentionByCount", s.testRetentionByCount)
	t.Run("RetentionByBytes", s.testRetentionByBytes)
	t.Run("RetentionByAge", s.testRetentionByAge)
	t.Run("Latest", s.testLatest)
	t.Run("Key", s.testKey)
	t.Run("Dedupe", s.testDedupe)
	t.Run("State", s.testState)
	t.Run("StateExact", s.testStateExact)
	t.Run("StateMaxKeys", s.testStateMaxKeys)
	t.Run("Presence", s.testPresence)
	t.Run("PresenceMaxMembers", s.testPresenceMaxMembers)
	t.Run("StateTopics", s.testStateTopics)
	t.Run("Topics", s.testTopics)
	t.Run("Rewind", s.testRewind)
	t.Run("Close", s.testClose)
}

type suite struct {
	newBroker func(t *testing.T, o Options) hub.Broker
}

// open returns a started broker whose deliveries are recorded.
func (s *suite) open(t *testing.T, o Options) (hub.Broker, *recorder) {
	t.Helper()
	b := s.newBroker(t, o)
	r := &recorder{notify: make(chan struct{}, 1)}
	if err := b.Start(r.deliver); err != nil {
		t.Fatalf("failed to start broker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("failed to close broker: %v", err)
		}
	})
	return b, r
}

// recorder is a deliver function that checks the delivery contract as it
// goes: one caller at a time, increasing Seq, no gap.
type recorder struct {
	mu      sync.Mutex
	msgs    []*hub.Message
	errs    []string
	inside  atomic.Int32 // concurrent deliver calls (must stay <= 1)
	closed  atomic.Bool  // set once Close has returned
	notify  chan struct{}
	lastSeq atomic.Uint64
	// gaps allows positions that no event holds (see RunCluster).
	gaps bool
}

func (r *recorder) deliver(msgs []*hub.Message) {
	if r.inside.Add(1) != 1 {
		r.fail("deliver called concurrently")
	}
	defer r.inside.Add(-1)
	if r.closed.Load() {
		r.fail("deliver called after Close returned")
	}
	r.mu.Lock()
	for _, m := range msgs {
		want := uint64(len(r.msgs)) + 1
		if len(r.msgs) > 0 {
			want = r.msgs[len(r.msgs)-1].ID.Seq + 1
		}
		if m.ID.Seq != want && !(r.gaps && m.ID.Seq > want) {
			r.errs = append(r.errs, fmt.Sprintf("delivered seq %d, want %d (gap or reorder)", m.ID.Seq, want))
		}
		r.msgs = append(r.msgs, m)
	}
	r.mu.Unlock()
	if len(msgs) > 0 {
		r.lastSeq.Store(msgs[len(msgs)-1].ID.Seq)
	}
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) fail(msg string) {
	r.mu.Lock()
	r.errs = append(r.errs, msg)
	r.mu.Unlock()
}

// waitN waits until at least n events have been delivered and returns them.
func (r *recorder) waitN(t *testing.T, n int) []*hub.Message {
	t.Helper()
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for {
		r.mu.Lock()
		got := len(r.msgs)
		out := append([]*hub.Message(nil), r.msgs...)
		r.mu.Unlock()
		if got >= n {
			return out
		}
		select {
		case <-r.notify:
		case <-timer.C:
			t.Fatalf("timed out waiting for %d deliveries, have %d", n, got)
		}
	}
}

func (r *recorder) check(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.errs {
		t.Error(e)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

// draft returns a normalized draft, as the hub hands them to brokers. The
// suite only drafts valid events, so a failure is a bug in the suite; it
// panics rather than t.Fatal because publishers run on their own goroutines.
func draft(_ testing.TB, topic, data string) hub.Draft {
	d := hub.Draft{Topic: topic, Data: []byte(data)}
	if err := d.Normalize(); err != nil {
		panic(fmt.Sprintf("brokertest: invalid draft: %v", err))
	}
	return d
}

func publish(t testing.TB, ctx context.Context, b hub.Broker, ds ...hub.Draft) []*hub.Message {
	t.Helper()
	msgs, err := b.Publish(ctx, ds)
	if err != nil {
		t.Fatalf("failed to publish: %v", err)
	}
	if len(msgs) != len(ds) {
		t.Fatalf("Publish returned %d messages for %d drafts", len(msgs), len(ds))
	}
	return msgs
}

func bounds(t testing.TB, ctx context.Context, b hub.Broker) hub.Bounds {
	t.Helper()
	bd, err := b.Bounds(ctx)
	if err != nil {
		t.Fatalf("failed to read bounds: %v", err)
	}
	return bd
}

// readAll pages through Read from after to the end of the log.
func readAll(t testing.TB, ctx context.Context, b hub.Broker, after uint64, pats []hub.Pattern, limit, maxScan int) []*hub.Message {
	t.Helper()
	var out []*hub.Message
	for i := 0; ; i++ {
		if i > 1_000_000 {
			t.Fatalf("Read makes no progress from %d", after)
		}
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: pats, Limit: limit, MaxScan: maxScan})
		if err != nil {
			t.Fatalf("failed to read after %d: %v", after, err)
		}
		out = append(out, res.Messages...)
		if !res.More {
			return out
		}
		if res.Next <= after && len(res.Messages) == 0 {
			t.Fatalf("Read(After=%d) reported More without progress (Next=%d)", after, res.Next)
		}
		after = res.Next
	}
}

var all = []hub.Pattern{hub.MustPattern(">")}

// sameEvent compares what a reader of the log sees with what Publish returned.
func sameEvent(t testing.TB, got, want *hub.Message) {
	t.Helper()
	if got.ID != want.ID || got.Topic != want.Topic || got.Type != want.Type || got.Key != want.Key ||
		!bytes.Equal(got.Data, want.Data) || !got.Time.Equal(want.Time) {
		t.Errorf("event %s differs:\n got  %s\n want %s", want.ID, got.Envelope(), want.Envelope())
	}
}

func (s *suite) testEmptyBounds(t *testing.T) {
	b, _ := s.open(t, Options{})
	ctx := ctxT(t)
	bd := bounds(t, ctx, b)
	if bd.Epoch == "" {
		t.Fatal("empty epoch")
	}
	// The epoch must survive the cursor's text form, or resumes would reset.
	cur := hub.Cursor{Epoch: bd.Epoch, Seq: 1}
	if got, err := hub.ParseCursor(cur.String()); err != nil || got != cur {
		t.Fatalf("epoch %q does not round-trip through a cursor: %v, %v", bd.Epoch, got, err)
	}
	if bd.Last != 0 || bd.First != bd.Last+1 {
		t.Fatalf("bounds of an empty log = First %d Last %d, want First 1 Last 0", bd.First, bd.Last)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 0, Patterns: all, Limit: 10})
	if err != nil || len(res.Messages) != 0 || res.More {
		t.Fatalf("Read on an empty log = %+v, %v", res, err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatalf("Ping = %v", err)
	}
}

func (s *suite) testSequentialPublish(t *testing.T) {
	b, rec := s.open(t, Options{})
	ctx := ctxT(t)
	epoch := bounds(t, ctx, b).Epoch
	before := time.Now().Add(-time.Minute)
	var pub []*hub.Message
	for i := range 5 {
		pub = append(pub, publish(t, ctx, b, draft(t, "seq.a", fmt.Sprintf(`{"i":%d}`, i)))...)
	}
	pub = append(pub, publish(t, ctx, b,
		draft(t, "seq.b", `"x"`), draft(t, "seq.c", `[1,2]`), draft(t, "seq.a", ``))...)
	for i, m := range pub {
		if m.ID != (hub.Cursor{Epoch: epoch, Seq: uint64(i + 1)}) {
			t.Fatalf("event %d got cursor %s, want %s-%d", i, m.ID, epoch, i+1)
		}
		if m.Time.Before(before) || m.Time.After(time.Now().Add(time.Minute)) {
			t.Errorf("event %d has time %v, want about now", i, m.Time)
		}
		if env := m.Envelope(); !bytes.Equal(env, m.AppendJSON(nil)) {
			t.Errorf("event %d envelope %s does not match its fields", i, env)
		}
	}
	if string(pub[7].Data) != "null" || pub[7].Type != hub.DefaultType {
		t.Errorf("last event data %s type %q, want null and %q", pub[7].Data, pub[7].Type, hub.DefaultType)
	}
	bd := bounds(t, ctx, b)
	if bd.First != 1 || bd.Last != 8 {
		t.Fatalf("bounds = %+v, want First 1 Last 8", bd)
	}
	got := readAll(t, ctx, b, 0, all, 100, 0)
	if len(got) != len(pub) {
		t.Fatalf("read %d events, published %d", len(got), len(pub))
	}
	for i := range got {
		sameEvent(t, got[i], pub[i])
	}
	del := rec.waitN(t, len(pub))
	for i := range pub {
		sameEvent(t, del[i], pub[i])
	}
	rec.check(t)
}

// testConcurrentTotalOrder: publishers on several goroutines, singles and
// batches. Every event gets a distinct position, positions are 1..n with no
// hole, each batch is contiguous, and deliver and Read both see exactly that
// order.
func (s *suite) testConcurrentTotalOrder(t *testing.T) {
	const publishers, rounds = 4, 60
	b, rec := s.open(t, Options{Size: publishers * rounds * 5})
	ctx := ctxT(t)
	type batch struct {
		drafts []hub.Draft
		msgs   []*hub.Message
	}
	results := make([][]batch, publishers)
	var wg sync.WaitGroup
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				n := 1 + (p+r)%4
				ds := make([]hub.Draft, n)
				for i := range ds {
					ds[i] = draft(t, fmt.Sprintf("order.p%d", p), fmt.Sprintf(`{"p":%d,"r":%d,"i":%d}`, p, r, i))
				}
				msgs, err := b.Publish(ctx, ds)
				if err != nil {
					t.Errorf("publisher %d: failed to publish: %v", p, err)
					return
				}
				results[p] = append(results[p], batch{ds, msgs})
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	bySeq := map[uint64]*hub.Message{}
	total := 0
	for p, bs := range results {
		var prev uint64
		for _, bt := range bs {
			if len(bt.msgs) != len(bt.drafts) {
				t.Fatalf("publisher %d: %d messages for %d drafts", p, len(bt.msgs), len(bt.drafts))
			}
			for i, m := range bt.msgs {
				if i > 0 && m.ID.Seq != bt.msgs[i-1].ID.Seq+1 {
					t.Errorf("publisher %d: batch not contiguous: %d after %d", p, m.ID.Seq, bt.msgs[i-1].ID.Seq)
				}
				if !bytes.Equal(m.Data, bt.drafts[i].Data) {
					t.Errorf("publisher %d: message %s carries %s, drafted %s", p, m.ID, m.Data, bt.drafts[i].Data)
				}
				if bySeq[m.ID.Seq] != nil {
					t.Errorf("seq %d assigned twice", m.ID.Seq)
				}
				bySeq[m.ID.Seq] = m
				total++
			}
			// One publisher's successive batches are ordered too.
			if bt.msgs[0].ID.Seq <= prev {
				t.Errorf("publisher %d: batch at %d after an earlier one at %d", p, bt.msgs[0].ID.Seq, prev)
			}
			prev = bt.msgs[len(bt.msgs)-1].ID.Seq
		}
	}
	for seq := uint64(1); seq <= uint64(total); seq++ {
		if bySeq[seq] == nil {
			t.Fatalf("no event got seq %d of 1..%d", seq, total)
		}
	}
	if bd := bounds(t, ctx, b); bd.Last != uint64(total) {
		t.Fatalf("Bounds.Last = %d, want %d", bd.Last, total)
	}
	del := rec.waitN(t, total)
	if len(del) != total {
		t.Fatalf("delivered %d events, want %d", len(del), total)
	}
	for i, m := range del {
		sameEvent(t, m, bySeq[uint64(i+1)])
	}
	read := readAll(t, ctx, b, 0, all, 7, 0)
	if len(read) != total {
		t.Fatalf("read %d events, want %d", len(read), total)
	}
	for i, m := range read {
		sameEvent(t, m, bySeq[uint64(i+1)])
	}
	rec.check(t)
}

// testBatchNothingOnError: a batch that fails is not partly in the log.
func (s *suite) testBatchNothingOnError(t *testing.T) {
	b, rec := s.open(t, Options{})
	ctx := ctxT(t)
	publish(t, ctx, b, draft(t, "batch.a", `1`))
	dead, cancel := context.WithCancel(ctx)
	cancel()
	ds := []hub.Draft{draft(t, "batch.a", `2`), draft(t, "batch.a", `3`), draft(t, "batch.a", `4`)}
	if msgs, err := b.Publish(dead, ds); err == nil {
		t.Fatalf("Publish with a cancelled context succeeded: %d messages", len(msgs))
	}
	if bd := bounds(t, ctx, b); bd.Last != 1 {
		t.Fatalf("after a failed batch Bounds.Last = %d, want 1", bd.Last)
	}
	msgs := publish(t, ctx, b, ds...)
	for i, m := range msgs {
		if m.ID.Seq != uint64(2+i) {
			t.Fatalf("batch after a failed one got seq %d, want %d", m.ID.Seq, 2+i)
		}
	}
	del := rec.waitN(t, 4)
	if len(del) != 4 || string(del[1].Data) != "2" {
		t.Fatalf("delivered %d events (second %s), want the 4 that were published", len(del), del[1].Data)
	}
	rec.check(t)
}

// testReadableBeforeDelivered checks the rule the hub's history/live seam
// rests on. The precise rule ("readable when deliver is called") cannot be
// observed from inside deliver without deadlocking a broker that delivers
// under its lock, so the suite checks its consequence that the hub needs: once
// deliver has been called for an event, any Read that starts afterwards finds
// it. A reader races the publishers, reading right behind the newest
// delivered position; an event handed to deliver before it was appended to
// the log makes that read come back without it.
func (s *suite) testReadableBeforeDelivered(t *testing.T) {
	const publishers, perPublisher = 3, 150
	b, rec := s.open(t, Options{Size: 10 * publishers * perPublisher})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	done := make(chan struct{})
	for p := range publishers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perPublisher {
				ds := []hub.Draft{draft(t, "seam.a", fmt.Sprintf(`[%d,%d]`, p, i))}
				if i%5 == 0 {
					ds = append(ds, draft(t, "seam.b", `0`))
				}
				if _, err := b.Publish(ctx, ds); err != nil {
					t.Errorf("failed to publish: %v", err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	checks := 0
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		d := rec.lastSeq.Load()
		if d == 0 {
			continue
		}
		res, err := b.Read(ctx, hub.ReadRequest{After: d - 1, Patterns: all, Limit: 1})
		if err != nil {
			t.Fatalf("failed to read delivered seq %d: %v", d, err)
		}
		if len(res.Messages) != 1 || res.Messages[0].ID.Seq != d {
			t.Fatalf("seq %d was delivered but Read after %d returned %v", d, d-1, res.Messages)
		}
		if bd := bounds(t, ctx, b); bd.Last < d {
			t.Fatalf("seq %d was delivered but Bounds.Last = %d", d, bd.Last)
		}
		checks++
	}
	total := publishers * (perPublisher + perPublisher/5)
	rec.waitN(t, total)
	rec.check(t)
	t.Logf("%d reads behind the delivery position", checks)
}

// testReadAtHeadWhilePublishing: a reader that follows the head of the
// log (as a client that has just resumed does) while another goroutine
// publishes never sees ErrHistoryGone: nothing is trimmed, so a race
// between reading and appending must not look like one.
func (s *suite) testReadAtHeadWhilePublishing(t *testing.T) {
	b, _ := s.open(t, Options{Size: 100000})
	ctx := ctxT(t)
	const n = 500
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if _, err := b.Publish(ctx, []hub.Draft{draft(t, "head.t", fmt.Sprint(i))}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	pats := []hub.Pattern{hub.MustPattern("head.*")}
	var after uint64
	reads := 0
	for finished := false; !finished || after < n; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			finished = true
		default:
		}
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: pats, Limit: 10})
		if err != nil {
			t.Fatalf("read %d after %d: %v", reads, after, err)
		}
		after = res.Next
		if finished && len(res.Messages) == 0 && after < n {
			b, err := b.Bounds(ctx)
			if err != nil || b.Last < n {
				t.Fatalf("after the publishes: bounds %+v, %v", b, err)
			}
		}
	}
	t.Logf("%d reads followed the head", reads)
}

func (s *suite) testFilteredRead(t *testing.T) {
	b, _ := s.open(t, Options{})
	ctx := ctxT(t)
	topics := []string{"a", "a.b", "a.b.c", "a.c", "x.b", "x.y.z", "a.b", "b"}
	var pub []*hub.Message
	for i, tp := range topics {
		pub = append(pub, publish(t, ctx, b, draft(t, tp, fmt.Sprint(i)))...)
	}
	cases := [][]string{
		{"a"}, {"a.b"}, {"a.*"}, {"a.>"}, {"*.b"}, {"*"}, {">"}, {"*.*"}, {"*.>"},
		{"a", "a.*"}, {"a.*", "a.>", "*.b"}, {"nothing"}, {"x.>", "b"},
	}
	for _, c := range cases {
		var pats []hub.Pattern
		for _, p := range c {
			pats = append(pats, hub.MustPattern(p))
		}
		var want []*hub.Message
		for _, m := range pub {
			for _, p := range pats {
				if p.Match(m.Topic) {
					want = append(want, m)
					break
				}
			}
		}
		for _, limit := range []int{1, 3, 100} {
			got := readAll(t, ctx, b, 0, pats, limit, 0)
			if len(got) != len(want) {
				t.Fatalf("patterns %v limit %d: read %d events, want %d", c, limit, len(got), len(want))
			}
			for i := range got {
				sameEvent(t, got[i], want[i])
			}
		}
	}
}

// testReadPaging: Limit and MaxScan bound a page, Next says how far the log
// was examined, More says whether the end was reached.
func (s *suite) testReadPaging(t *testing.T) {
	b, _ := s.open(t, Options{})
	ctx := ctxT(t)
	const n = 40
	var pub []*hub.Message
	for i := range n {
		tp := "page.common"
		if i%10 == 9 {
			tp = "page.rare"
		}
		pub = append(pub, publish(t, ctx, b, draft(t, tp, fmt.Sprint(i)))...)
	}
	for _, pat := range []string{"page.common", "page.rare", "page.*", "none"} {
		p := []hub.Pattern{hub.MustPattern(pat)}
		for _, limit := range []int{1, 4, 1000} {
			for _, maxScan := range []int{0, 1, 7} {
				var got []*hub.Message
				after := uint64(0)
				for calls := 0; ; calls++ {
					if calls > 2*n+2 {
						t.Fatalf("%s limit %d maxScan %d: no end after %d calls", pat, limit, maxScan, calls)
					}
					res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: p, Limit: limit, MaxScan: maxScan})
					if err != nil {
						t.Fatalf("failed to read: %v", err)
					}
					if len(res.Messages) > limit {
						t.Fatalf("%s: page of %d events exceeds limit %d", pat, len(res.Messages), limit)
					}
					if res.Next < after || res.Next > n {
						t.Fatalf("%s: Next %d outside [%d, %d]", pat, res.Next, after, n)
					}
					// Every match in (after, Next] is in the page, and nothing else.
					var want []*hub.Message
					for _, m := range pub[after:res.Next] {
						if p[0].Match(m.Topic) {
							want = append(want, m)
						}
					}
					if len(want) != len(res.Messages) {
						t.Fatalf("%s limit %d maxScan %d: page after %d up to Next %d has %d events, want %d",
							pat, limit, maxScan, after, res.Next, len(res.Messages), len(want))
					}
					for i := range want {
						sameEvent(t, res.Messages[i], want[i])
					}
					got = append(got, res.Messages...)
					if !res.More {
						if res.Next != n {
							t.Fatalf("%s: More is false at Next %d, log ends at %d", pat, res.Next, n)
						}
						break
					}
					if res.Next == after {
						t.Fatalf("%s: More without progress at %d", pat, after)
					}
					after = res.Next
				}
				var want int
				for _, m := range pub {
					if p[0].Match(m.Topic) {
						want++
					}
				}
				if len(got) != want {
					t.Fatalf("%s limit %d maxScan %d: %d events in all, want %d", pat, limit, maxScan, len(got), want)
				}
			}
		}
	}
	// Reading from the end, or past it, returns nothing and no More.
	for _, after := range []uint64{n, n + 5} {
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: all, Limit: 5})
		if err != nil || len(res.Messages) != 0 || res.More {
			t.Fatalf("Read after %d = %+v, %v; want empty, no More", after, res, err)
		}
	}
}

// testRetentionByCount: the newest Size events are always retained; older
// ones go eventually (cluster brokers may trim approximately, so the suite
// allows slack above Size but not unbounded growth), and reading from before
// the retained range is ErrHistoryGone.
func (s *suite) testRetentionByCount(t *testing.T) {
	const size = 10
	b, _ := s.open(t, Options{Size: size})
	ctx := ctxT(t)
	var pub []*hub.Message
	for i := range 25 {
		pub = append(pub, publish(t, ctx, b, draft(t, fmt.Sprintf("ret.t%d", i%3), fmt.Sprint(i)))...)
	}
	bd := bounds(t, ctx, b)
	if bd.Last != 25 || bd.First > 25-size+1 || bd.First < 1 {
		t.Fatalf("bounds = %+v, want Last 25 and First <= %d", bd, 25-size+1)
	}
	// The newest Size events are readable, in order.
	got := readAll(t, ctx, b, 25-size, all, 100, 0)
	if len(got) != size {
		t.Fatalf("read %d of the newest %d events", len(got), size)
	}
	for i, m := range got {
		sameEvent(t, m, pub[25-size+i])
	}
	// Publishing far past Size must drop the oldest.
	const bound = size + 200
	for i := 25; i < 3*bound; i++ {
		publish(t, ctx, b, draft(t, "ret.more", fmt.Sprint(i)))
	}
	bd = bounds(t, ctx, b)
	if bd.Last != 3*bound {
		t.Fatalf("Bounds.Last = %d, want %d", bd.Last, 3*bound)
	}
	if kept := bd.Last - bd.First + 1; kept < size || kept > bound {
		t.Fatalf("retains %d events (First %d Last %d) with Size %d", kept, bd.First, bd.Last, size)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 0, Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 0 = %v, want ErrHistoryGone", err)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: bd.First - 2, Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after First-2 = %v, want ErrHistoryGone", err)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: bd.First - 1, Patterns: all, Limit: 1})
	if err != nil || len(res.Messages) != 1 || res.Messages[0].ID.Seq != bd.First {
		t.Fatalf("Read after First-1 = %+v, %v; want the event at First %d", res, err, bd.First)
	}
}

// testRetentionByBytes: with a byte bound far below what is published, and
// a count bound far above, the oldest events go so that the data retained
// stays within MaxBytes, the newest events are kept, and reading from an
// evicted position is ErrHistoryGone, exactly as with the count bound.
func (s *suite) testRetentionByBytes(t *testing.T) {
	const (
		maxBytes = 64 << 10
		dataSize = 4 << 10
		events   = 4 * maxBytes / dataSize
		// minKept allows half of the bound for what an implementation
		// counts besides the data.
		minKept = maxBytes / 2 / dataSize
	)
	b, _ := s.open(t, Options{Size: 100000, MaxBytes: maxBytes})
	ctx := ctxT(t)
	payload := `"` + strings.Repeat("x", dataSize-2) + `"`
	var pub []*hub.Message
	for i := range events {
		pub = append(pub, publish(t, ctx, b, draft(t, fmt.Sprintf("bytes.t%d", i%3), payload))...)
	}
	bd := bounds(t, ctx, b)
	if bd.Last != events {
		t.Fatalf("Bounds.Last = %d, want %d", bd.Last, events)
	}
	kept := int(bd.Last - bd.First + 1)
	if kept*dataSize > maxBytes {
		t.Fatalf("retains %d events of %d bytes (First %d Last %d), more than MaxBytes %d", kept, dataSize, bd.First, bd.Last, maxBytes)
	}
	if kept < minKept {
		t.Fatalf("retains %d events of %d bytes with MaxBytes %d, want at least the newest %d", kept, dataSize, maxBytes, minKept)
	}
	got := readAll(t, ctx, b, bd.First-1, all, 100, 0)
	if len(got) != kept {
		t.Fatalf("read %d of the %d retained events", len(got), kept)
	}
	for i, m := range got {
		sameEvent(t, m, pub[int(bd.First)-1+i])
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 0, Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 0 = %v, want ErrHistoryGone", err)
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: bd.First - 2, Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after First-2 = %v, want ErrHistoryGone", err)
	}
}

// testRetentionByAge: events older than TTL go. It only waits for that to
// happen (bounded); it never asserts how soon.
func (s *suite) testRetentionByAge(t *testing.T) {
	const ttl = 50 * time.Millisecond
	b, _ := s.open(t, Options{TTL: ttl})
	ctx := ctxT(t)
	for i := range 5 {
		publish(t, ctx, b, draft(t, "age.a", fmt.Sprint(i)))
	}
	tick := time.NewTicker(ttl / 5)
	defer tick.Stop()
	deadline := time.After(waitTimeout)
	for {
		bd := bounds(t, ctx, b)
		if bd.Last != 5 {
			t.Fatalf("Bounds.Last = %d, want 5", bd.Last)
		}
		if bd.First == bd.Last+1 {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("events older than the TTL are still retained: %+v", bd)
		}
	}
	if _, err := b.Read(ctx, hub.ReadRequest{After: 0, Patterns: all, Limit: 1}); !errors.Is(err, hub.ErrHistoryGone) {
		t.Fatalf("Read after 0 with everything expired = %v, want ErrHistoryGone", err)
	}
	res, err := b.Read(ctx, hub.ReadRequest{After: 5, Patterns: all, Limit: 1})
	if err != nil || len(res.Messages) != 0 || res.More {
		t.Fatalf("Read at the head of an expired log = %+v, %v", res, err)
	}
	// The position survives expiry: the next event continues the order.
	m := publish(t, ctx, b, draft(t, "age.a", `5`))
	if m[0].ID.Seq != 6 {
		t.Fatalf("event after expiry got seq %d, want 6", m[0].ID.Seq)
	}
}

func (s *suite) testLatest(t *testing.T) {
	b, _ := s.open(t, Options{Size: 8})
	ctx := ctxT(t)
	var a []*hub.Message
	for i := range 10 {
		m := publish(t, ctx, b, draft(t, "lat.a", fmt.Sprint(i)), draft(t, "lat.b", fmt.Sprint(i)))
		a = append(a, m[0])
	}
	// Retained: the newest 8 events, 4 of them on lat.a.
	got, err := b.Latest(ctx, "lat.a", 3)
	if err != nil {
		t.Fatalf("failed to get latest: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("Latest(3) returned %d events", len(got))
	}
	for i, m := range got {
		sameEvent(t, m, a[7+i])
	}
	got, err = b.Latest(ctx, "lat.a", 100)
	if err != nil {
		t.Fatalf("failed to get latest: %v", err)
	}
	if n := len(got); n < 4 || got[n-1].ID != a[9].ID {
		t.Fatalf("Latest(100) returned %d events ending at %v, want at least the 4 retained ending at %s", n, got, a[9].ID)
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID.Seq <= got[i-1].ID.Seq || got[i].Topic != "lat.a" {
			t.Fatalf("Latest is not oldest-first on one topic: %v", got)
		}
	}
	for _, topic := range []string{"lat", "lat.a.b", "other"} {
		if got, err := b.Latest(ctx, topic, 5); err != nil || len(got) != 0 {
			t.Fatalf("Latest(%q) = %v, %v; want nothing", topic, got, err)
		}
	}
}

func (s *suite) testTopics(t *testing.T) {
	b, _ := s.open(t, Options{})
	ctx := ctxT(t)
	publish(t, ctx, b, draft(t, "top.a", `1`), draft(t, "top.b", `1`))
	publish(t, ctx, b, draft(t, "top.a", `2`))
	publish(t, ctx, b, draft(t, "top.c.d", `3`))
	ts, err := b.Topics(ctx)
	if err != nil {
		t.Fatalf("failed to list topics: %v", err)
	}
	got := map[string]int{}
	for _, th := range ts {
		got[th.Topic] += th.Events
	}
	want := map[string]int{"top.a": 2, "top.b": 1, "top.c.d": 1}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Topics = %v, want %v", got, want)
	}
}

// testClose: after Close returns, deliver is never called again, even with
// publishers racing it, and Publish fails with ErrClosed.
func (s *suite) testClose(t *testing.T) {
	b := s.newBroker(t, Options{})
	rec := &recorder{notify: make(chan struct{}, 1)}
	if err := b.Start(rec.deliver); err != nil {
		t.Fatalf("failed to start broker: %v", err)
	}
	ctx := ctxT(t)
	publish(t, ctx, b, draft(t, "close.a", `1`))
	rec.waitN(t, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.Publish(ctx, []hub.Draft{draft(t, "close.a", `2`)}); err != nil {
					return
				}
			}
		}()
	}
	// Let the racers publish something before closing.
	rec.waitN(t, 20)
	if err := b.Close(); err != nil {
		t.Fatalf("failed to close: %v", err)
	}
	rec.closed.Store(true)
	close(stop)
	wg.Wait()
	if _, err := b.Publish(ctx, []hub.Draft{draft(t, "close.a", `3`)}); !errors.Is(err, hub.ErrClosed) {
		t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	rec.check(t)
}
