package hub

import (
	"errors"
	"fmt"
	"time"
)

// Shaping: what a subscription may ask about how its events are written,
// beyond which ones. Deltas (delta.go) change how a keyed event is
// encoded; conflation changes which keyed events are written at all.
//
// Conflation (SubscribeRequest.Conflate): a connection with a conflating
// subscription writes at most one batch per interval (the smallest its
// subscriptions asked for), and a keyed event that only conflating
// subscriptions match replaces, in the queue, the one of the same topic and
// key still waiting there. So within each interval the connection gets the
// latest event of each key, in cursor order (never reordered), and always
// ends on the latest value; the first event after a quiet interval goes at
// once. Events no conflating subscription matches are never dropped, but
// share the connection's pace: a page that needs some topics at once and
// others conflated uses two connections. The queue then holds at most one
// event per key besides those, so its bound (QueueBytes) counts keys, not
// the publishers' rate.

// Bounds of SubscribeRequest.Conflate.
const (
	MinConflate = 50 * time.Millisecond
	MaxConflate = time.Minute
)

// ErrInvalidConflate is returned by ParseConflate.
var ErrInvalidConflate = errors.New("invalid conflate interval")

// ErrInvalidDelta is returned by ParseDelta.
var ErrInvalidDelta = errors.New("invalid delta")

// DeltaFossil is the one delta format: the Fossil SCM's, as Centrifugo uses.
const DeltaFossil = "fossil"

// ParseDelta reads the delta format a subscription asks for: "" (none) or
// DeltaFossil.
func ParseDelta(s string) (bool, error) {
	switch s {
	case "":
		return false, nil
	case DeltaFossil:
		return true, nil
	}
	return false, fmt.Errorf("%w %q: the only delta format is %q", ErrInvalidDelta, s, DeltaFossil)
}

// ParseConflate reads a conflation interval as the transports receive it,
// a Go duration ("250ms", "1s") from MinConflate to MaxConflate.
func ParseConflate(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < MinConflate || d > MaxConflate {
		return 0, fmt.Errorf("%w %q: a duration from %v to %v, like 250ms", ErrInvalidConflate, s, MinConflate, MaxConflate)
	}
	return d, nil
}

// shaping is what a client with a subscription asking for deltas or
// conflation keeps; nil for the others, which pay one pointer. Guarded by
// Client.mu.
type shaping struct {
	intervals map[string]time.Duration // the conflating subscriptions' intervals, by pattern
	conflate  time.Duration            // the smallest of intervals; 0: none

	// queued is the queue index of the waiting event of each topic and key
	// that conflation may replace; holes counts the replaced ones, left as
	// zero Items until drain or compaction removes them.
	queued map[topicKey]int
	holes  int
}

// shapeLocked records the shaping a subscribe asks for on sb. c.mu is held
// on entry.
func (c *Client) shapeLocked(sb *sub, req *SubscribeRequest) {
	if req.Delta {
		sb.delta = true
	}
	if req.Conflate <= 0 && c.shape == nil {
		if sb.delta {
			c.shape = &shaping{}
		}
		return
	}
	if c.shape == nil {
		c.shape = &shaping{}
	}
	if req.Conflate > 0 {
		if c.shape.intervals == nil {
			c.shape.intervals = make(map[string]time.Duration)
		}
		c.shape.intervals[sb.raw] = req.Conflate
		sb.conflate = true
		c.shape.update()
	}
}

// unshapeLocked forgets sb's conflation. c.mu is held on entry.
func (c *Client) unshapeLocked(sb *sub) {
	if c.shape != nil && sb.conflate {
		delete(c.shape.intervals, sb.raw)
		c.shape.update()
	}
}

// update recomputes the connection's conflation interval.
func (s *shaping) update() {
	s.conflate = 0
	for _, d := range s.intervals {
		if s.conflate == 0 || d < s.conflate {
			s.conflate = d
		}
	}
}

// shapeItemLocked marks it as a delta item if a subscription asking for
// deltas matches it, and reports whether conflation may replace it: every
// matching subscription conflates. c.mu is held on entry; it.Msg is keyed.
func (c *Client) shapeItemLocked(it *Item) (conflate bool) {
	m := it.Msg
	matched := false
	conflate = true
	for _, sb := range c.subs {
		if !sb.pattern().Match(m.Topic) {
			continue
		}
		matched = true
		it.Delta = it.Delta || sb.delta
		conflate = conflate && sb.conflate
	}
	return matched && conflate
}

// supersedeLocked takes out of the queue the waiting event of m's topic
// and key, if conflation may replace it, and records where m goes. c.mu is
// held on entry; m is about to be appended.
func (c *Client) supersedeLocked(m *Message) {
	s := c.shape
	if s.queued == nil {
		s.queued = make(map[topicKey]int)
	}
	k := topicKey{m.Topic, m.Key}
	if i, ok := s.queued[k]; ok && i < len(c.queue) {
		if old := c.queue[i].Msg; old != nil && old.Topic == m.Topic && old.Key == m.Key {
			c.qbytes -= c.queue[i].size()
			c.queue[i] = Item{}
			s.holes++
			c.hub.conflated.Add(1)
		}
	}
	if s.holes > 32 && s.holes > len(c.queue)/2 {
		c.compactLocked()
	}
	s.queued[k] = len(c.queue)
}

// compactLocked removes the holes conflation left in the queue. c.mu is
// held on entry.
func (c *Client) compactLocked() {
	s := c.shape
	q := c.queue[:0]
	for i, it := range c.queue {
		if it.empty() {
			continue
		}
		if m := it.Msg; m != nil && m.Key != "" {
			k := topicKey{m.Topic, m.Key}
			if j, ok := s.queued[k]; ok && j == i {
				s.queued[k] = len(q)
			}
		}
		q = append(q, it)
	}
	clear(c.queue[len(q):])
	c.queue = q
	s.holes = 0
}

// drainedLocked resets what conflation keeps about the queue, which the
// writer has just taken; items loses its holes. c.mu is held on entry.
func (c *Client) drainedLocked(items []Item) []Item {
	s := c.shape
	clear(s.queued)
	if s.holes == 0 {
		return items
	}
	q := items[:0]
	for _, it := range items {
		if !it.empty() {
			q = append(q, it)
		}
	}
	clear(items[len(q):])
	s.holes = 0
	return q
}

// empty reports whether it is a hole conflation left.
func (it Item) empty() bool { return it.Msg == nil && it.Reset == nil && it.Raw == nil }

// hold keeps the writer from taking another batch for d, the conflation
// interval, so that events meanwhile replace each other in the queue. It
// ends early when the client fails, and reports false when the transport
// is done (the writer has finished the connection).
func (c *Client) hold(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	// Wakes during the hold are taken by sleep; one is left for the
	// writer's next wait, whatever happened meanwhile.
	defer signal(c.wake)
	return c.sleep(t)
}
