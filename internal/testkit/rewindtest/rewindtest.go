// Package rewindtest checks a rewind as a client sees it, the same way for
// every transport: a publisher runs throughout, and what the connection
// received must be the newest N matching events as of a moment during the
// subscribe, then every later one, without a gap or a duplicate.
package rewindtest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/heraldpush/herald/hub"
)

// Publisher publishes to its topics, in turn, until After more events
// have been published once Seen was called.
type Publisher struct {
	h      *hub.Hub
	seen   chan struct{}
	once   sync.Once
	done   chan struct{}
	wg     sync.WaitGroup
	topics []string
	after  int
}

// Publish starts a Publisher on h; it runs until after events followed
// Seen, or a publish fails (reported on t). The test must call Wait.
func Publish(t testing.TB, h *hub.Hub, topics []string, after int) *Publisher {
	p := &Publisher{h: h, seen: make(chan struct{}), done: make(chan struct{}), topics: topics, after: after}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.done)
		extra := 0
		for i := 0; extra < p.after; i++ {
			if _, err := h.Publish(context.Background(), hub.Draft{Topic: topics[i%len(topics)], Data: []byte("1")}); err != nil {
				t.Errorf("failed to publish: %v", err)
				return
			}
			select {
			case <-p.seen:
				extra++
			default:
			}
		}
	}()
	return p
}

// Seen says the connection received its first event: After more follow.
func (p *Publisher) Seen() { p.once.Do(func() { close(p.seen) }) }

// Done is closed once the publisher has stopped.
func (p *Publisher) Done() <-chan struct{} { return p.done }

// Wait waits for the publisher to stop (call Seen first).
func (p *Publisher) Wait() {
	p.Seen()
	p.wg.Wait()
}

// Head is the position of the newest event of h's log.
func Head(t testing.TB, h *hub.Hub) uint64 {
	t.Helper()
	b, err := h.Bounds(context.Background())
	if err != nil {
		t.Fatalf("failed to read the log's bounds: %v", err)
	}
	return b.Last
}

// Matching returns the Seqs of the retained events of h matching any of
// patterns, oldest first.
func Matching(t testing.TB, h *hub.Hub, patterns ...string) []uint64 {
	t.Helper()
	var pats []hub.Pattern
	for _, p := range patterns {
		pats = append(pats, hub.MustPattern(p))
	}
	b, err := h.Bounds(context.Background())
	if err != nil {
		t.Fatalf("failed to read the log's bounds: %v", err)
	}
	var out []uint64
	for after := b.First - 1; ; {
		res, err := h.Broker().Read(context.Background(), hub.ReadRequest{After: after, Patterns: pats, Limit: 1000})
		if err != nil {
			t.Fatalf("failed to read history: %v", err)
		}
		for _, m := range res.Messages {
			out = append(out, m.ID.Seq)
		}
		if !res.More {
			return out
		}
		after = res.Next
	}
}

// Receive reads a connection's events with next, from the first, until it
// has every event matching patterns that p published, and checks them: got
// must be the history's matching events from the first received on, that
// first one must have exactly n matching events up to some head between lo
// (read before the subscribe) and hi (read once the first event arrived),
// or be the oldest retained if fewer were, and some must have come live.
// It stops p.
func Receive(t testing.TB, h *hub.Hub, p *Publisher, patterns []string, n int, lo uint64, next func() uint64) {
	t.Helper()
	got := []uint64{next()}
	hi := Head(t, h)
	p.Seen()
	var all []uint64
	for {
		if all == nil {
			select {
			case <-p.Done():
				all = Matching(t, h, patterns...)
			default:
			}
		}
		if all != nil && got[len(got)-1] >= all[len(all)-1] {
			break
		}
		got = append(got, next())
	}
	p.Wait()
	if err := check(all, got, n, lo, hi); err != nil {
		t.Fatal(err)
	}
}

func check(all, got []uint64, n int, lo, hi uint64) error {
	i := slices.Index(all, got[0])
	if i < 0 || !slices.Equal(got, all[i:]) {
		return fmt.Errorf("received %v..., not the history's matching events from %d on", got[:min(len(got), 10)], got[0])
	}
	upTo := func(head uint64) int { // matching events in [got[0], head]
		k := 0
		for _, s := range all[i:] {
			if s <= head {
				k++
			}
		}
		return k
	}
	if upTo(lo) > n || upTo(hi) < n && i != 0 {
		return fmt.Errorf("rewind %d: the first event %d has %d matching events up to the head %d before the subscribe, %d up to %d after",
			n, got[0], upTo(lo), lo, upTo(hi), hi)
	}
	if got[len(got)-1] <= hi {
		return fmt.Errorf("rewind %d: nothing arrived live after %d", n, hi)
	}
	return nil
}
