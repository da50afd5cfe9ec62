package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/testkit/wait"
)

// Held is a broker that appends the publishes of a node together (group
// commit), held back from appending until Release: publishes queue, so
// that the first group it appends is every batch queued by then. It is on
// a new, empty log, and not started.
type Held struct {
	hub.Broker
	Queued  func() int // how many batches wait to be appended
	Release func()     // lets the broker append; called once
}

// groupPublish is one publisher of a group test.
type groupPublish struct {
	drafts []hub.Draft
	msgs   []*hub.Message
	err    error
	done   chan struct{}
}

// startGroup starts n publishers at once (batches of one to three events,
// publisher i on topic prefix.i) with ctxs[i], and waits until all n are
// queued.
func startGroup(t *testing.T, h Held, prefix string, ctxs []context.Context) []*groupPublish {
	t.Helper()
	pubs := make([]*groupPublish, len(ctxs))
	for i, ctx := range ctxs {
		p := &groupPublish{done: make(chan struct{})}
		for j := range 1 + i%3 {
			p.drafts = append(p.drafts, draft(t, fmt.Sprintf("%s.%d", prefix, i), fmt.Sprintf(`[%d,%d]`, i, j)))
		}
		pubs[i] = p
		go func() {
			defer close(p.done)
			p.msgs, p.err = h.Publish(ctx, p.drafts)
		}()
	}
	t.Cleanup(func() {
		for _, p := range pubs {
			<-p.done // Publish returns within its own bound
		}
	})
	wait.For(t, waitTimeout, "every publish to be queued", func() bool { return h.Queued() == len(ctxs) })
	return pubs
}

// returned waits for p's Publish to return.
func (p *groupPublish) returned(t *testing.T, what string) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s did not return", what)
	}
}

// checkGroup checks that each publish of pubs that succeeded got its
// batch's events at consecutive positions, as the log holds them, and that
// the log holds nothing else (besides the events of extra): each batch
// once, whole, and no unused position.
func checkGroup(t *testing.T, b hub.Broker, pubs []*groupPublish, extra int) {
	t.Helper()
	ctx := ctxT(t)
	log := readAll(t, ctx, b, 0, all, 50, 0)
	bySeq := map[uint64]*hub.Message{}
	for _, m := range log {
		bySeq[m.ID.Seq] = m
	}
	total := extra
	for i, p := range pubs {
		if p.err != nil {
			continue
		}
		if len(p.msgs) != len(p.drafts) {
			t.Fatalf("publisher %d: %d messages for %d drafts", i, len(p.msgs), len(p.drafts))
		}
		for j, m := range p.msgs {
			if j > 0 && m.ID.Seq != p.msgs[j-1].ID.Seq+1 {
				t.Errorf("publisher %d: batch not contiguous: %d after %d", i, m.ID.Seq, p.msgs[j-1].ID.Seq)
			}
			if !bytes.Equal(m.Data, p.drafts[j].Data) {
				t.Errorf("publisher %d: message %s carries %s, drafted %s", i, m.ID, m.Data, p.drafts[j].Data)
			}
			got := bySeq[m.ID.Seq]
			if got == nil {
				t.Fatalf("publisher %d was answered %s, which the log does not hold", i, m.ID)
			}
			sameEvent(t, got, m)
		}
		total += len(p.drafts)
	}
	if len(log) != total {
		t.Fatalf("the log holds %d events, want %d", len(log), total)
	}
	if bd := bounds(t, ctx, b); bd.Last != uint64(total) {
		t.Fatalf("Bounds.Last = %d after %d events from one node, want no unused position", bd.Last, total)
	}
}

// RunGroupCancel checks a group of which one publisher gives up while its
// batch waits to be appended: it starts six publishes at once, cancels the
// context of one of them once all are queued, and releases h. The one
// cancelled must return an error; unless that is hub.ErrUnconfirmed, the
// log must not hold its batch. The others must be stored whole, once, and
// answered with their positions, with no position left unused.
func RunGroupCancel(t *testing.T, h Held) {
	ctx := ctxT(t)
	const n, quitter = 6, 2
	ctxs, quit := withQuitter(ctx, n, quitter)
	defer quit()
	pubs := startGroup(t, h, "group.cancel", ctxs)
	quit()
	pubs[quitter].returned(t, "a queued publish whose context was cancelled")
	q := pubs[quitter]
	if q.err == nil {
		t.Fatalf("a publish cancelled while queued succeeded: %d messages", len(q.msgs))
	}
	h.Release()
	for i, p := range pubs {
		p.returned(t, fmt.Sprintf("publisher %d", i))
		if i != quitter && p.err != nil {
			t.Fatalf("publisher %d: %v", i, p.err)
		}
	}
	extra := 0
	if errors.Is(q.err, hub.ErrUnconfirmed) {
		// Stored once or not at all: count it if the log has it.
		log := readAll(t, ctx, h, 0, []hub.Pattern{hub.MustPattern(fmt.Sprintf("group.cancel.%d", quitter))}, 50, 0)
		if len(log) != 0 && len(log) != len(q.drafts) {
			t.Fatalf("the log holds %d of the cancelled batch's %d events", len(log), len(q.drafts))
		}
		extra = len(log)
	}
	checkGroup(t, h, pubs, extra)
}

// RunGroupAnswerLost checks RunAnswerLost's rule for a group: with m
// muted, it queues seven publishes at once, releases h, waits until
// stored (the number of events in the log, read without going through m)
// shows all of them stored, cancels the context of one publisher, and
// unmutes m. The cancelled one must return hub.ErrUnconfirmed at once (its
// events are stored, but it cannot know); every other must be answered
// with the cursors its batch was stored under; and the log must hold each
// batch once.
func RunGroupAnswerLost(t *testing.T, h Held, m Muter, stored func() int) {
	ctx := ctxT(t)
	const n, quitter = 7, 4
	ctxs, quit := withQuitter(ctx, n, quitter)
	defer quit()
	m.Mute()
	defer m.Unmute()
	pubs := startGroup(t, h, "group.lost", ctxs)
	total := 0
	for _, p := range pubs {
		total += len(p.drafts)
	}
	h.Release()
	wait.For(t, waitTimeout, "the group to be stored", func() bool { return stored() == total })
	quit()
	q := pubs[quitter]
	q.returned(t, "a publish cancelled while its outcome was unknown")
	if !errors.Is(q.err, hub.ErrUnconfirmed) {
		t.Fatalf("a publish cancelled after it was stored, before its answer: %v (%d messages), want ErrUnconfirmed", q.err, len(q.msgs))
	}
	m.Unmute()
	for i, p := range pubs {
		p.returned(t, fmt.Sprintf("publisher %d", i))
		if i != quitter && p.err != nil {
			t.Fatalf("publisher %d: %v", i, p.err)
		}
	}
	if n := stored(); n != total {
		t.Fatalf("the log holds %d events after the group's answer was lost, want %d", n, total)
	}
	checkGroup(t, h, pubs, len(q.drafts))
}

// RunGroupDedupe checks Draft.Dedupe inside a group: three publishes
// queued at once, the first and the third with one dedupe key, the second
// without. Released, the first appends the key, the third skips it (nil in
// its place) and appends its other event, and the log holds each appended
// event once with no position left unused.
func RunGroupDedupe(t *testing.T, h Held) {
	ctx := ctxT(t)
	type result struct {
		msgs []*hub.Message
		err  error
	}
	batches := [][]hub.Draft{
		{deduped(t, "group.dedupe", "row:1", `1`)},
		{draft(t, "group.dedupe", `2`)},
		{deduped(t, "group.dedupe", "row:1", `1`), draft(t, "group.dedupe", `3`)},
	}
	results := make([]chan result, len(batches))
	for i, ds := range batches {
		results[i] = make(chan result, 1)
		go func() {
			msgs, err := h.Publish(ctx, ds)
			results[i] <- result{msgs, err}
		}()
		// One at a time, so that the queue's order is this one.
		wait.For(t, waitTimeout, "the publish to be queued", func() bool { return h.Queued() == i+1 })
	}
	h.Release()
	got := make([][]*hub.Message, len(batches))
	for i := range batches {
		select {
		case r := <-results[i]:
			if r.err != nil {
				t.Fatalf("publish %d: %v", i, r.err)
			}
			got[i] = r.msgs
		case <-time.After(waitTimeout):
			t.Fatalf("publish %d did not return", i)
		}
	}
	if got[0][0] == nil || got[1][0] == nil {
		t.Fatalf("the first publish of a dedupe key, or one without, was skipped: %v", got)
	}
	if got[2][0] != nil || got[2][1] == nil {
		t.Fatalf("the group's second publish of a key: appended %v (want skipped), its other event appended %v (want appended)",
			got[2][0] != nil, got[2][1] != nil)
	}
	want := []*hub.Message{got[0][0], got[1][0], got[2][1]}
	log := readAll(t, ctx, h, 0, all, 50, 0)
	if len(log) != len(want) {
		t.Fatalf("the log holds %d events, want %d", len(log), len(want))
	}
	for i := range log {
		sameEvent(t, log[i], want[i])
	}
	if bd := bounds(t, ctx, h); bd.Last != uint64(len(want)) {
		t.Fatalf("Bounds.Last = %d after %d events from one node, want no unused position", bd.Last, len(want))
	}
}

// withQuitter returns n contexts for the publishers of a group, all ctx but
// the quitter's, which quit cancels.
func withQuitter(ctx context.Context, n, quitter int) ([]context.Context, context.CancelFunc) {
	ctxs := make([]context.Context, n)
	for i := range ctxs {
		ctxs[i] = ctx
	}
	qctx, quit := context.WithCancel(ctx)
	ctxs[quitter] = qctx
	return ctxs, quit
}

// RunQueueBound checks the bound on what a group-committing broker holds
// for its node: it queues batches publishes of perBatch events of size
// bytes of data each (batches x perBatch x size being what the bound
// holds), and one more with a short context. That one must wait for room
// and fail, not stored (hub.ErrUnavailable, not hub.ErrUnconfirmed), and
// not be queued; once h is released the others must each be stored whole,
// and stored (the number of events in the log) must show those alone. h's
// log must retain them all.
func RunQueueBound(t *testing.T, h Held, batches, perBatch, size int, stored func() int) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	batch := func(i int) []hub.Draft {
		ds := make([]hub.Draft, perBatch)
		for j := range ds {
			data := strconv.Itoa(j)
			if size > len(data) { // a JSON string of that size
				data = `"` + strings.Repeat("x", size-2) + `"`
			}
			ds[j] = draft(t, fmt.Sprintf("bound.%d", i), data)
		}
		return ds
	}
	type result struct {
		msgs []*hub.Message
		err  error
	}
	results := make([]chan result, batches+1)
	for i := range batches {
		results[i] = make(chan result, 1)
		go func() {
			msgs, err := h.Publish(ctx, batch(i))
			results[i] <- result{msgs, err}
		}()
	}
	wait.For(t, waitTimeout, "the batches that fit to be queued", func() bool { return h.Queued() == batches })
	// The bound is reached: one more waits, and gives up when its time is up.
	extra := batch(batches)
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	results[batches] = make(chan result, 1)
	go func() {
		msgs, err := h.Publish(short, extra)
		results[batches] <- result{msgs, err}
	}()
	late := <-results[batches]
	if late.err == nil || !errors.Is(late.err, hub.ErrUnavailable) || errors.Is(late.err, hub.ErrUnconfirmed) {
		t.Fatalf("a publish that found the bound reached until its time was up: %v, want unavailable, not unconfirmed", late.err)
	}
	if n := h.Queued(); n != batches {
		t.Fatalf("%d batches queued, want the bound's %d", n, batches)
	}
	h.Release()
	for i := range batches {
		r := <-results[i]
		if r.err != nil {
			t.Fatalf("batch %d: %v", i, r.err)
		}
		for j, m := range r.msgs {
			if m.ID.Seq != r.msgs[0].ID.Seq+uint64(j) {
				t.Fatalf("batch %d not contiguous: %d at %d", i, m.ID.Seq, j)
			}
		}
	}
	if n := stored(); n != batches*perBatch {
		t.Fatalf("the log holds %d events, want %d: the late batch must not be in it", n, batches*perBatch)
	}
}
