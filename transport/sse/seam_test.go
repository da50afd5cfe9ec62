package sse_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	r3sse "github.com/r3labs/sse/v2"
	"gopkg.in/cenkalti/backoff.v1"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/transport/sse"
)

// seamRun is one scenario of TestSeam: a hub, publishers writing events
// continuously, and a record of everything they published.
type seamRun struct {
	t     *testing.T
	f     *fixture
	ctx   context.Context
	total uint64

	mu     sync.Mutex
	bySeq  map[uint64]*hub.Message
	maxSeq uint64
	count  atomic.Int64
}

func (r *seamRun) record(ms []*hub.Message) {
	r.mu.Lock()
	for _, m := range ms {
		r.bySeq[m.ID.Seq] = m
		r.maxSeq = max(r.maxSeq, m.ID.Seq)
	}
	r.mu.Unlock()
	r.count.Add(int64(len(ms)))
}

// cursorAfter waits until n events are published and returns a cursor of
// one of the newest.
func (r *seamRun) cursorAfter(n int64) hub.Cursor {
	for r.count.Load() < n && r.ctx.Err() == nil {
		time.Sleep(200 * time.Microsecond) // poll; bounded by r.ctx
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return hub.Cursor{Epoch: r.f.hub.Epoch(), Seq: r.maxSeq}
}

// follower is one subscriber's view: where it started and what it got.
type follower struct {
	name     string
	start    uint64 // cursor it started from; events after it are expected
	live     bool   // no cursor: expected from the first event on, contiguous
	openHead uint64 // log head right after its first response opened (live only)
	opened   int64  // events published when it first connected
	connects int
	seqs     []uint64
	frames   []frame
	err      error
}

// TestSeam checks the one-order rule across the history/live seam while
// publishers run: every client gets exactly the events after its cursor,
// all of them, in increasing order, however often it reconnects.
func TestSeam(t *testing.T) {
	const publishers, perPublisher = 4, 2000
	f := newFixture(t, hub.Options{}, sse.Options{}) // retains 10000 events: nothing is lost to retention
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	r := &seamRun{t: t, f: f, ctx: ctx, total: publishers * perPublisher, bySeq: make(map[uint64]*hub.Message)}

	var pubs sync.WaitGroup
	pubErr := make(chan error, publishers)
	for p := range publishers {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			// A steady pace spreads publishing over about a second, so the
			// clients below subscribe and resume while it runs.
			tick := time.NewTicker(500 * time.Microsecond)
			defer tick.Stop()
			topic := fmt.Sprintf("seam.%d", p)
			for i := 0; i < perPublisher; {
				n := min(1+rand.IntN(3), perPublisher-i) // batches of 1 to 3
				drafts := make([]hub.Draft, n)
				for j := range drafts {
					drafts[j] = hub.Draft{Topic: topic, Type: "seq", Data: json.RawMessage(fmt.Sprintf(`{"p":%d,"i":%d}`, p, i+j))}
				}
				ms, err := f.hub.Publish(ctx, drafts...)
				if err != nil {
					pubErr <- err
					return
				}
				r.record(ms)
				i += n
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	type spec struct {
		name   string
		after  int64 // take the cursor once this many events are published
		live   bool  // connect without a cursor
		churn  int   // reconnect after a random 0..churn events; 0: never
		r3labs bool  // consume with the r3labs client
	}
	specs := []spec{
		{name: "from-zero", after: 0},
		{name: "mid-1000", after: 1000},
		{name: "mid-3000", after: 3000},
		{name: "mid-5000", after: 5000},
		{name: "live-2500", after: 2500, live: true},
		{name: "churn-500", after: 500, churn: 300},
		{name: "churn-1500", after: 1500, churn: 100},
		{name: "churn-4000", after: 4000, churn: 200},
		{name: "r3labs-2000", after: 2000, churn: 700, r3labs: true},
	}
	followers := make([]*follower, len(specs))
	var subs sync.WaitGroup
	for i, sp := range specs {
		fl := &follower{name: sp.name, live: sp.live}
		followers[i] = fl
		subs.Add(1)
		go func() {
			defer subs.Done()
			since := ""
			if sp.live {
				for r.count.Load() < sp.after && ctx.Err() == nil {
					time.Sleep(200 * time.Microsecond)
				}
			} else {
				c := r.cursorAfter(sp.after)
				if sp.after == 0 {
					c.Seq = 0 // the position before the first event
				}
				fl.start, since = c.Seq, c.String()
			}
			fl.opened = r.count.Load()
			if sp.r3labs {
				fl.err = r.followR3labs(fl, since, sp.churn)
			} else {
				fl.err = r.followRaw(fl, since, sp.churn)
			}
		}()
	}

	pubs.Wait()
	close(pubErr)
	for err := range pubErr {
		t.Fatalf("publisher failed: %v", err)
	}
	subs.Wait()

	for _, fl := range followers {
		r.check(fl)
	}
}

// followRaw reads with sse.EventStreamReader until it has seen the last
// event, reconnecting with Last-Event-ID after churn-bounded random counts
// or whenever the stream ends.
func (r *seamRun) followRaw(fl *follower, since string, churn int) error {
	for {
		hdr := http.Header{}
		if since != "" {
			hdr.Set("Last-Event-ID", since)
		}
		resp, err := r.f.get(r.ctx, r.f.url([]string{"seam.*"}), hdr)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if fl.connects == 0 && fl.live {
			b, err := r.f.hub.Broker().Bounds(r.ctx)
			if err != nil {
				resp.Body.Close()
				return err
			}
			fl.openHead = b.Last
		}
		fl.connects++
		budget := -1 // events to read before leaving; 0 leaves right after the headers
		if churn > 0 {
			budget = rand.IntN(churn + 1)
		}
		rd := r3sse.NewEventStreamReader(resp.Body, 1<<16)
		done := false
		for !done && budget != 0 {
			b, err := rd.ReadEvent()
			if err != nil {
				break // the stream ended: resume
			}
			fr := parseRaw(b)
			if fr.Event == "" {
				continue // the retry hint or a ping
			}
			seq, err := fl.add(fr)
			if err != nil {
				resp.Body.Close()
				return err
			}
			since = fr.ID
			done = seq == r.total
			budget--
		}
		resp.Body.Close()
		if done {
			return nil
		}
		if err := r.ctx.Err(); err != nil {
			return fmt.Errorf("gave up after %d events: %w", len(fl.seqs), err)
		}
	}
}

// followR3labs consumes through the r3labs client with its own reconnect
// loop (the client's built-in one stops at a clean end of stream). The
// client itself sends Last-Event-ID, kept from the events it parsed.
//
// The loop disconnects by cancelling the request. The r3labs reader then
// hands on the incomplete frame it was reading as if it were whole, and
// records its id as the last one seen: the loop drops such a truncated
// event (only after its own cancel; anywhere else it is a failure) and
// resumes from the last complete one.
func (r *seamRun) followR3labs(fl *follower, since string, churn int) error {
	c := r3sse.NewClient(r.f.url([]string{"seam.*"}))
	c.Connection = r.f.client
	c.ReconnectStrategy = &backoff.StopBackOff{}
	c.Headers["Accept"] = "text/event-stream"
	if since != "" {
		c.LastEventID.Store([]byte(since))
	}
	for {
		ctx, cancel := context.WithCancel(r.ctx)
		budget := 1 + rand.IntN(churn)
		done, cancelled := false, false
		var addErr error
		err := c.SubscribeRawWithContext(ctx, func(ev *r3sse.Event) {
			if len(ev.Event) == 0 && len(ev.Data) == 0 || addErr != nil || done {
				return // the retry hint, or a fragment of one
			}
			fr := frame{ID: string(ev.ID), Event: string(ev.Event), Data: string(ev.Data), hasID: len(ev.ID) > 0}
			var env envelope
			if json.Unmarshal(ev.Data, &env) != nil || env.ID != fr.ID || fr.Event == "" {
				if !cancelled {
					addErr = fmt.Errorf("malformed event %+v", fr)
					cancel()
				}
				return
			}
			seq, err := fl.add(fr)
			if err != nil {
				addErr = err
				cancel()
				return
			}
			since = fr.ID
			if seq == r.total {
				done = true
				cancel()
			}
			if budget--; budget == 0 {
				cancelled = true
				cancel() // events already parsed still arrive, in order
			}
		})
		cancel()
		fl.connects++
		c.LastEventID.Store([]byte(since))
		switch {
		case addErr != nil:
			return addErr
		case done:
			return nil
		case r.ctx.Err() != nil:
			return fmt.Errorf("gave up after %d events: %w", len(fl.seqs), r.ctx.Err())
		case err != nil:
			return fmt.Errorf("failed to subscribe: %w", err)
		}
	}
}

// add records an event frame and returns its sequence number.
func (fl *follower) add(fr frame) (uint64, error) {
	if fr.Event == sse.ResetEvent {
		return 0, fmt.Errorf("unexpected reset %q after %d events", fr.Data, len(fl.seqs))
	}
	c, err := hub.ParseCursor(fr.ID)
	if err != nil {
		return 0, fmt.Errorf("event without a valid id: %q", fr.Raw)
	}
	fl.seqs = append(fl.seqs, c.Seq)
	fl.frames = append(fl.frames, fr)
	return c.Seq, nil
}

func (r *seamRun) check(fl *follower) {
	t := r.t
	t.Helper()
	if fl.err != nil {
		t.Errorf("%s: %v", fl.name, fl.err)
		return
	}
	if fl.opened >= int64(r.total) {
		t.Errorf("%s: connected only after publishing ended; the seam was not exercised", fl.name)
	}
	start := fl.start
	if fl.live {
		if len(fl.seqs) == 0 {
			t.Errorf("%s: no events", fl.name)
			return
		}
		start = fl.seqs[0] - 1
		// Everything published after the response opened arrives.
		if start > fl.openHead {
			t.Errorf("%s: first event %d, but the head was %d when its response opened", fl.name, fl.seqs[0], fl.openHead)
		}
	}
	if want := r.total - start; uint64(len(fl.seqs)) != want {
		t.Errorf("%s: %d events from cursor %d, want %d", fl.name, len(fl.seqs), start, want)
	}
	for i, seq := range fl.seqs {
		if seq != start+1+uint64(i) {
			t.Errorf("%s: event %d has cursor %d, want %d (previous %v)", fl.name, i, seq, start+1+uint64(i), fl.seqs[max(0, i-3):i])
			return
		}
		m := r.bySeq[seq]
		fr := fl.frames[i]
		if fr.ID != m.ID.String() || fr.Event != m.Type || fr.Data != string(m.Envelope()) {
			t.Errorf("%s: event %d = %+v, want %s", fl.name, seq, fr, m.Envelope())
			return
		}
	}
	t.Logf("%s: %d events from cursor %d over %d connections (subscribed at %d published)",
		fl.name, len(fl.seqs), start, fl.connects, fl.opened)
}
