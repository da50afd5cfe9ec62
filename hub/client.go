package hub

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"sync"
	"time"
)

// Reset is the control signal that a client missed events: its cursor was
// older than retention, from another epoch, or unusable. Cursor is the head
// of the log at that moment; the client resumes from there.
type Reset struct {
	Reason string // "history_gone", "epoch_changed" or "unknown_cursor"
	Topics []string
	Cursor Cursor
}

// Reset reasons.
const (
	ReasonHistoryGone   = "history_gone"
	ReasonEpochChanged  = "epoch_changed"
	ReasonUnknownCursor = "unknown_cursor"
)

// Synced is the control signal that ends the state a state subscription
// starts with: the events before it were the state of every topic of
// Topics, exact at Cursor, and every matching event after Cursor follows.
// The transport encodes it (SubscribeRequest.Synced), and the hub queues
// the frame as a Raw item: the signal needs no field of Item, which every
// connection's queue holds.
type Synced struct {
	Cursor Cursor
	Topics []string // the subscription's patterns
}

// Item is one entry of a client's outbound queue: exactly one field is set.
type Item struct {
	Msg   *Message // an event, shared with every other subscriber
	Reset *Reset   // a herald.reset signal for this client
	Raw   []byte   // a frame the transport queued itself (replies, herald.synced), already encoded
	// Live marks an event delivered as it was published (possibly after
	// waiting for a replay), not read back from history: only these say
	// how long publishing to writing takes (see Options.ObserveLatency).
	Live bool
	// Delta marks a keyed event that a subscription asking for deltas
	// matches: the writer sends it as a delta when it can (Bases).
	Delta bool
}

func (it Item) size() int {
	switch {
	case it.Msg != nil:
		return it.Msg.size()
	case it.Reset != nil:
		return 128
	default:
		return len(it.Raw) + 16
	}
}

// SubscribeRequest asks for events of Patterns.
type SubscribeRequest struct {
	Patterns []Pattern
	// Since, when not empty, is the cursor the client last saw: every later
	// matching event still retained is replayed first, then live events
	// follow with no gap and no duplicate. A cursor that cannot be served
	// (malformed, other epoch, older than retention) yields a Reset item.
	Since string
	// Rewind, when Since is empty, asks first for the newest Rewind
	// retained events matching Patterns (all of them together), oldest
	// first; live events follow with no gap and no duplicate, as after a
	// resume. It is served as a resume from the position those events
	// follow (see rewindFrom for how it is found and bounded). 0 asks for
	// none; the transports validate it with ParseRewind.
	Rewind int
	// State asks first for the state of every topic Patterns match (the
	// latest event of each key, in cursor order), then a Synced frame, then
	// every matching event after the state's position, with no gap and no
	// duplicate: it is served as a resume from that position. With Since,
	// the state is sent only if the cursor cannot be served (after the
	// Reset); Rewind is then ignored. A broker that keeps no state makes
	// Subscribe fail with ErrStateUnsupported.
	State bool
	// Synced encodes the frame that tells the connection its state was
	// sent (the transport's herald.synced). Required with State; called by
	// the hub's goroutines, each time the state is sent.
	Synced func(Synced) []byte
	// Ack, when not nil, is queued before any event of this subscription,
	// so a reply reaches the client before replayed events.
	Ack []byte
	// Start, when not nil, is queued in place of Ack for a subscription
	// without Since and without State, encoding its start: the position
	// in the log at which it took effect, read with its registration.
	// Every matching event after it is delivered; a rewind delivers the
	// newest matching events as of the head the replay reads, which is at
	// or after it. So a client that takes Start's cursor as its cursor,
	// then each event's, resumes with no gap and no duplicate, even if it
	// is cut off before the first event. (A state subscription's cursor
	// is its Synced's: a resume from before it would lose the state.)
	// Called under the client's lock: it must only encode.
	Start func(Cursor) []byte
	// Presence makes the connection a member of each of Patterns, which
	// must then be exact topics (else ErrInvalidPresence): a join is
	// published for each, and a leave when the subscription or the client
	// ends. User ("" for none) and Info (a JSON object of at most
	// MaxInfoBytes, or nil) describe the member.
	Presence bool
	User     string
	Info     json.RawMessage
	// PresenceEvents asks for the joins and leaves of Patterns' topics
	// (TypeJoin, TypeLeave), live and replayed; without it a subscription
	// never receives them.
	PresenceEvents bool
	// Delta asks for keyed events as fossil deltas where the connection's
	// writer can send them (Item.Delta, Bases).
	Delta bool
	// Conflate, when positive (MinConflate to MaxConflate, see
	// ParseConflate), asks for at most one event of each topic and key per
	// interval, the latest (shaping.go).
	Conflate time.Duration
}

// sub is one subscription of a client. Every idle connection holds one per
// pattern, so it keeps to 32 bytes (subSizeClass): its Pattern is spread
// into raw and wild beside the flags, and what only a state subscription
// needs lives apart (Hub.stateSubs).
type sub struct {
	raw    string // the pattern as written (Pattern.raw)
	after  uint64 // events with Seq <= after are not wanted by this subscription
	wild   bool   // Pattern.wild
	state  bool   // a state subscription: its stateSub is in the hub's stateSubs
	events bool   // joins and leaves are wanted (SubscribeRequest.PresenceEvents)
	member bool   // the connection is a member of the topic: a leave is due when the subscription ends
	delta  bool   // keyed events are wanted as deltas (SubscribeRequest.Delta)
	// conflate: keyed events may replace each other (SubscribeRequest.Conflate; the
	// interval is in Client.shape)
	conflate bool
}

func newSub(p Pattern, after uint64) *sub { return &sub{raw: p.raw, wild: p.wild, after: after} }

// pattern is the subscription's pattern.
func (sb *sub) pattern() Pattern { return Pattern{raw: sb.raw, wild: sb.wild} }

// stateSubs returns the state subscriptions of c by pattern, nil if it has
// none. c.mu is held on entry.
func (c *Client) stateSubs() map[string]*stateSub {
	if v, ok := c.hub.stateSubs.Load(c); ok {
		return v.(map[string]*stateSub)
	}
	return nil
}

// setStateSub makes sb a state subscription of the subscribe st, or, with
// st nil, an ordinary one again. c.mu is held on entry.
func (c *Client) setStateSub(sb *sub, st *stateSub) {
	m := c.stateSubs()
	switch {
	case st != nil && m == nil:
		m = map[string]*stateSub{sb.raw: st}
		c.hub.stateSubs.Store(c, m)
	case st != nil:
		m[sb.raw] = st
	case m != nil:
		delete(m, sb.raw)
		if len(m) == 0 {
			c.hub.stateSubs.Delete(c)
		}
	}
	sb.state = st != nil
}

// stateSub is what a state subscription needs after its subscribe: when
// its replay falls behind retention, the reset is followed by its state
// and a Synced frame again.
type stateSub struct {
	synced func(Synced) []byte
}

// Client is one subscriber connection as the hub sees it: its
// subscriptions, its position in the log, and one bounded outbound queue
// drained by the transport's single writer.
//
// Concurrency: every method is safe for concurrent use. The transport owns the
// Client: it must call Close exactly once when the connection ends, and Serve
// once, to run the writer that drains the queue.
//
// Ordering: items leave the queue in strictly increasing cursor order and
// never twice, however many patterns match an event. While a replay runs
// (catching), live events wait in a bounded pending buffer; when the replay
// has read the log to its end they are appended after it, minus those the
// replay already delivered. If pending overflows it is dropped and the
// replay reads the log again, which holds every one of those events.
type Client struct {
	hub    *Hub
	id     uint64
	ctx    context.Context
	cancel context.CancelFunc
	worker sync.WaitGroup // the replay goroutine, when one runs

	mu       sync.Mutex
	subs     map[string]*sub
	queue    []Item
	qbytes   int
	pos      uint64 // every wanted event with Seq <= pos has been queued
	sent     uint64 // Seq of the last event queued: the "last delivered cursor" of the one-order rule
	anchored bool   // pos is meaningful (set by a live subscription or a replay)
	catching bool   // a replay runs; live events go to pending
	replay   bool   // the replay goroutine is running
	pendLost bool   // pending overflowed and was dropped
	closed   bool   // Close was called
	parked   bool   // the writer is parked: no goroutine runs it; the next wake starts one
	due      bool   // a keep-alive is due (Serve)
	direct   bool   // the writer is a DirectWriter taking events from the dispatcher (Serve)
	writing  bool   // the writer holds work it drained, or is finishing: no direct write (direct.go)
	flush    bool   // a direct write left bytes for the writer's Flush
	writes   uint8  // batches with a live event the writer has written, for latency sampling (wraps at a multiple of latencySample); the writer's, or a direct write's (observeWrite)
	kind     uint8  // the transport's kind: an index in Hub.kindNames
	requests []replayRequest
	pending  []*Message
	pendSize int
	pendLast uint64
	subGen   uint64 // bumped by Subscribe; a replay page read under an older one is read again
	err      error

	wake  chan struct{} // cap 1: items queued, the client failed, or a keep-alive is due
	space chan struct{} // cap 1: the writer drained the queue

	w writer // the connection's writer, when served (Serve)

	shape *shaping // nil unless a subscription asked for deltas or conflation (shaping.go)
}

type replayRequest struct {
	patterns []Pattern
	since    string
	rewind   int       // with since "": resume from where the newest rewind matching events begin
	events   bool      // joins and leaves count in the rewind
	state    *stateSub // not nil: the state first (without since, or when since cannot be served)
}

// replays reports whether req is served by a replay (a resume, a rewind or
// a state).
func (req *SubscribeRequest) replays() bool { return req.Since != "" || req.Rewind > 0 || req.State }

// ID is unique among the hub's clients.
func (c *Client) ID() uint64 { return c.id }

// wakeLocked tells the writer there is work: on c.wake, and by restarting it
// if it is parked (see Serve). c.mu is held on entry.
func (c *Client) wakeLocked() {
	signal(c.wake)
	c.unparkLocked()
}

// drain returns every queued item, whether a keep-alive is due (Serve),
// whether a direct write left bytes to Flush (direct.go) and the
// connection's conflation interval (0: none; shaping.go), or the reason
// the client was closed by the hub. dst, the slice returned by the
// previous call, is recycled. It never blocks; the writer waits on c.wake.
// Work drained marks the writer busy until it waits again (idle).
func (c *Client) drain(dst []Item) (items []Item, due, flush bool, hold time.Duration, err error) {
	clear(dst)
	if cap(dst) > 1024 {
		dst = nil // let a burst's buffer go rather than keep it while idle
	}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return dst[:0], false, false, 0, err
	}
	items, due, flush = c.queue, c.due, c.flush
	if c.shape != nil {
		items = c.drainedLocked(items)
		hold = c.shape.conflate
	}
	c.queue = dst[:0]
	c.qbytes = 0
	c.due, c.flush = false, false
	c.writing = len(items) > 0 || due || flush
	c.mu.Unlock()
	if len(items) > 0 {
		signal(c.space)
	}
	return items, due, flush, hold, nil
}

// shardOf is the shard that indexes c's subscriptions. It is computed, not
// kept, to keep Client in its size class (clientSizeClass).
func (c *Client) shardOf() *shard { return c.hub.shards[c.id%uint64(len(c.hub.shards))] }

// Fail closes the client for reason err (for instance ErrSlowConsumer when
// the transport's write deadline passed). The transport still calls Close.
func (c *Client) Fail(err error) { c.fail(err) }

// Context is done once the client has failed or been closed: what watches
// a client from outside (a token's expiry) stops there.
func (c *Client) Context() context.Context { return c.ctx }

func (c *Client) fail(err error) {
	c.mu.Lock()
	c.failLocked(err)
	c.mu.Unlock()
}

// failLocked records err, wakes the writer and stops a running replay.
// c.mu is held on entry (cancel takes none of the hub's locks).
func (c *Client) failLocked(err error) bool {
	if c.err != nil {
		return false
	}
	c.err = err
	var dropped int64
	for _, it := range c.queue {
		if it.Msg != nil {
			dropped++
		}
	}
	if dropped += int64(len(c.pending)); dropped > 0 {
		c.hub.dropped.Add(dropped)
	}
	c.queue, c.qbytes = nil, 0
	c.pending = nil
	if errors.Is(err, ErrSlowConsumer) {
		c.hub.kicked.Add(1)
	}
	c.wakeLocked()
	signal(c.space)
	c.cancel()
	return true
}

// Queue appends a transport frame (a reply) to the outbound queue, in order
// with events. It reports false if the client is closed. A reply that would
// overflow the queue fails the client as a slow consumer.
func (c *Client) Queue(raw []byte) bool {
	c.mu.Lock()
	ok := c.err == nil && c.enqueueLocked(Item{Raw: raw})
	c.mu.Unlock()
	return ok
}

// enqueueLocked appends it, failing the client if the queue would overflow.
// c.mu is held on entry.
func (c *Client) enqueueLocked(it Item) bool {
	if c.shape != nil && it.Msg != nil && it.Msg.Key != "" {
		if c.shapeItemLocked(&it) && c.shape.conflate > 0 {
			c.supersedeLocked(it.Msg)
		}
	}
	n := it.size()
	if c.qbytes+n > c.hub.opts.QueueBytes && len(c.queue) > 0 {
		c.failLocked(ErrSlowConsumer)
		return false
	}
	c.queue = append(c.queue, it)
	c.qbytes += n
	if len(c.queue) == 1 {
		c.wakeLocked()
	}
	return true
}

// deliverLive is the dispatcher's path. It reports whether m was delivered
// (queued or written), and written when the dispatcher wrote it itself,
// which direct allows (direct.go). shard.mu is read-held on entry.
func (c *Client) deliverLive(m *Message, direct bool) (delivered, written bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil || m.seq <= c.pos {
		return false, false
	}
	if m.isPresence() && !c.wantsPresenceLocked(m) {
		return false, false
	}
	if c.catching {
		if m.seq <= c.pendLast || c.pendLost {
			return false, false
		}
		c.pendLast = m.seq
		if c.pendSize+m.size() > c.hub.opts.QueueBytes {
			c.pending, c.pendSize, c.pendLost = nil, 0, true
			return false, false
		}
		c.pending = append(c.pending, m)
		c.pendSize += m.size()
		return false, false
	}
	written = direct && c.mayWriteDirectLocked() && c.writeDirectLocked(m)
	if !written && !c.enqueueLocked(Item{Msg: m, Live: true}) {
		return false, false
	}
	c.pos, c.sent = m.seq, m.seq
	return true, written
}

// Subscribe adds patterns to the client. Without Since or Rewind they are
// live from this call on (events published after Subscribe returns are
// delivered). With Since, retained events after the cursor are replayed
// first by a goroutine the client owns; with Rewind, the newest retained
// events are, found by that goroutine too. Subscribe does not wait for it.
//
// Per the one-order rule, a replay on a client that has already been sent
// events starts from the later of Since and the last event sent.
//
// With State, the broker is asked first whether it keeps state (it answers
// without a round trip): if not, Subscribe returns ErrStateUnsupported and
// changes nothing.
func (c *Client) Subscribe(req SubscribeRequest) error {
	if err := req.checkPresence(); err != nil {
		return err
	}
	var st *stateSub
	if req.State {
		if _, err := c.hub.broker.State(c.ctx, nil); err != nil {
			if errors.Is(err, ErrStateUnsupported) {
				return err
			}
			return ErrUnavailable
		}
		if req.Synced == nil {
			return errors.New("hub: a subscription with State needs Synced")
		}
		st = &stateSub{synced: req.Synced}
	}
	s := c.shardOf()
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	if c.closed {
		return ErrClosed
	}
	// The shard's write lock is held, so no dispatch is in flight: every
	// message up to w has been offered to this client and none after it.
	w := s.dispatched.Load()
	ack := req.Ack
	if req.Start != nil && req.Since == "" && !req.State {
		// Where a live subscription starts (after, below, before a replay
		// sets it aside): events up to it are dispatched already or
		// behind this connection (one order), and every later one is
		// dispatched or replayed to it.
		ack = req.Start(Cursor{Epoch: s.epoch, Seq: max(w, c.pos)})
	}
	if ack != nil && !c.enqueueLocked(Item{Raw: ack}) {
		return c.err
	}
	replays := req.replays()
	if replays && !c.catching {
		c.catching = true
		c.pendLost = false
		c.pendLast = 0
		if len(c.subs) > 0 {
			// Live subscriptions are complete up to w.
			c.pos = max(c.pos, w)
			c.anchored = true
		}
	}
	after := w
	if c.catching {
		// Events up to pos are behind this connection already (one order).
		after = max(w, c.pos)
	}
	if replays {
		// A replayed subscription starts exactly at its cursor, which the
		// replay validates (or, for a rewind, finds) first; until then it
		// wants nothing. (w may be behind the cursor when dispatch lags the
		// log.)
		after = math.MaxUint64
	}
	for _, p := range req.Patterns {
		if old := c.subs[p.raw]; old != nil {
			// Asking again for joins and leaves adds them; it never takes
			// them away (that is an unsubscribe).
			old.events = old.events || req.PresenceEvents
			if st != nil {
				c.setStateSub(old, st)
			}
			c.shapeLocked(old, &req)
			continue
		}
		sb := newSub(p, after)
		sb.events = req.PresenceEvents
		c.subs[p.raw] = sb
		if st != nil {
			c.setStateSub(sb, st)
		}
		c.shapeLocked(sb, &req)
		s.idx.add(p, c)
	}
	if req.Presence {
		c.queueJoinsLocked(&req)
	}
	c.subGen++
	if !c.catching && !c.anchored {
		c.pos = max(c.pos, w)
		c.anchored = true
	}
	if replays {
		c.requests = append(c.requests, replayRequest{patterns: req.Patterns, since: req.Since, rewind: req.Rewind, events: req.PresenceEvents, state: st})
		if !c.replay {
			c.replay = true
			c.worker.Add(1)
			go c.runReplay()
		}
	}
	return nil
}

// Unsubscribe removes patterns; unknown ones are ignored. Events of them
// already queued are still delivered.
func (c *Client) Unsubscribe(patterns []Pattern) {
	s := c.shardOf()
	s.mu.Lock()
	defer s.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range patterns {
		if sb := c.subs[p.raw]; sb != nil {
			c.unsubscribeLocked(s, sb)
		}
	}
}

// unsubscribeLocked removes the subscription sb: a leave if it made the
// client a member, and its place in the shard's index. s.mu and c.mu are
// held on entry.
func (c *Client) unsubscribeLocked(s *shard, sb *sub) {
	c.queueLeaveLocked(sb)
	if sb.state {
		c.setStateSub(sb, nil)
	}
	c.unshapeLocked(sb)
	delete(c.subs, sb.raw)
	s.idx.remove(sb.pattern(), c)
}

// Patterns returns the client's subscriptions as written.
func (c *Client) Patterns() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.subs))
	for p := range c.subs {
		out = append(out, p)
	}
	return out
}

// Close releases the client: its subscriptions leave the index and its
// replay goroutine, if any, has ended when Close returns. Idempotent.
func (c *Client) Close() {
	s := c.shardOf()
	s.mu.Lock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.mu.Unlock()
		return
	}
	c.closed = true
	c.failLocked(ErrClosed)
	for _, sb := range c.subs {
		c.queueLeaveLocked(sb)
		s.idx.remove(sb.pattern(), c)
	}
	c.subs = nil
	c.mu.Unlock()
	s.mu.Unlock()
	c.cancel()
	c.worker.Wait()
	c.hub.stateSubs.Delete(c)    // no replay reads it now, and no Subscribe adds to it
	c.hub.unsubPending.Delete(c) // a client closed before it was served
	c.hub.forget(c)
}

// replay page sizes: events per read and log entries examined per read.
const (
	replayPage = 256
	replayScan = 4096
)

// runReplay serves replay requests until the client is caught up with the
// live stream or closed.
func (c *Client) runReplay() {
	defer c.worker.Done()
	for {
		err := c.catchUp()
		if err != nil {
			c.fail(err)
		}
		c.mu.Lock()
		// A Subscribe between goLive and here saw replay still set and
		// started no worker: its request is this goroutine's to serve.
		if err == nil && c.err == nil && len(c.requests) > 0 {
			c.mu.Unlock()
			continue
		}
		c.replay = false
		c.mu.Unlock()
		return
	}
}

func (c *Client) catchUp() error {
	ctx := c.ctx
	for {
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return nil
		}
		reqs := c.requests
		c.requests = nil
		c.mu.Unlock()

		if len(reqs) > 0 {
			st, err := c.startRequests(ctx, reqs)
			if err != nil {
				return err
			}
			if st != nil {
				// The connection's other subscriptions are replayed up to
				// the state's position first, so that what follows its
				// Synced all lies after it. If that replay fell behind
				// retention, its reset sent a newer state already.
				reset := false
				if err := c.scan(ctx, st.snap.Last.Seq, &reset); err != nil {
					return err
				}
				if !reset {
					if err := c.sendState(ctx, st); err != nil {
						return err
					}
				}
			}
		}
		if err := c.scan(ctx, math.MaxUint64, nil); err != nil {
			return err
		}
		done, err := c.goLive(ctx)
		if done || err != nil {
			return err
		}
	}
}

// startRequests validates the cursors of new replay requests, queueing a
// Reset for each that cannot be served, finds where each rewind begins,
// reads the state that state requests need, and sets where each
// subscription's replay starts. It returns the state to send once the
// replay has reached its position (sendState), or nil.
func (c *Client) startRequests(ctx context.Context, reqs []replayRequest) (*pendingState, error) {
	b, err := c.hub.broker.Bounds(ctx)
	if err != nil {
		return nil, c.brokerErr(err)
	}
	reasons := make([]string, len(reqs))
	var statePats []Pattern
	for i, r := range reqs {
		reasons[i] = cursorProblem(r.since, b)
		if r.state != nil && (r.since == "" || reasons[i] != "") {
			statePats = append(statePats, r.patterns...)
		}
	}
	// A rewind is a resume from a cursor found by looking back from the
	// head read above (the same for every request, so two rewinds of one
	// batch agree on where live begins).
	var rewinds []uint64
	for i, r := range reqs {
		if r.since != "" || r.state != nil {
			continue
		}
		if rewinds == nil {
			rewinds = make([]uint64, len(reqs))
		}
		if rewinds[i], err = c.rewindFrom(ctx, b, r.patterns, r.rewind, r.events); err != nil {
			return nil, c.brokerErr(err)
		}
	}
	// The state of every state request of the batch is one snapshot, read
	// after the bounds: its position is at or after b.Last.
	var st *pendingState
	if len(statePats) > 0 {
		snap, err := c.hub.broker.State(ctx, statePats)
		if err != nil {
			return nil, c.brokerErr(err)
		}
		st = &pendingState{snap: snap}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	start := b.Last
	for i, r := range reqs {
		from, reason := b.Last, reasons[i]
		switch {
		case r.state != nil && (r.since == "" || reason != ""):
			from = st.snap.Last.Seq
			st.synced = append(st.synced, syncedFor{r.state, Synced{Cursor: st.snap.Last, Topics: patternStrings(r.patterns)}})
		case r.since == "":
			from = rewinds[i]
		case reason == "":
			cur, _ := ParseCursor(r.since)
			from = cur.Seq
		}
		if reason != "" {
			if !c.enqueueLocked(Item{Reset: &Reset{Reason: reason, Topics: patternStrings(r.patterns), Cursor: Cursor{Epoch: b.Epoch, Seq: b.Last}}}) {
				return nil, nil
			}
		}
		for _, p := range r.patterns {
			if sb := c.subs[p.raw]; sb != nil {
				sb.after = min(sb.after, from)
			}
		}
		start = min(start, from)
	}
	if !c.anchored {
		c.pos = start
		c.anchored = true
	} else {
		// One order: replay from the later of since and the last event sent.
		// Every wanted event up to pos was queued, so none lies in (sent, pos]
		// and going back to sent repeats nothing.
		c.pos = min(c.pos, max(c.sent, start))
	}
	return st, nil
}

// cursorProblem returns the reason a Reset gives when since ("" for none)
// cannot be served from a log with bounds b, or "" if it can.
func cursorProblem(since string, b Bounds) string {
	if since == "" {
		return ""
	}
	cur, err := ParseCursor(since)
	switch {
	case err != nil:
		return ReasonUnknownCursor
	case cur.Epoch != b.Epoch:
		return ReasonEpochChanged
	case cur.Seq > b.Last: // before the retention check: Seq+1 overflows at the top
		return ReasonUnknownCursor
	case cur.Seq+1 < b.First:
		return ReasonHistoryGone
	}
	return ""
}

func patternStrings(pats []Pattern) []string {
	out := make([]string, len(pats))
	for i, p := range pats {
		out[i] = p.raw
	}
	return out
}

// pendingState is a state read for state subscriptions and not yet sent:
// the snapshot, then one Synced per subscribe.
type pendingState struct {
	snap   StateSnapshot
	synced []syncedFor
}

// syncedFor is a Synced for the subscribe of ss.
type syncedFor struct {
	ss *stateSub
	s  Synced
}

// sendState queues the state's events and then its Synced items, each
// waiting (bounded by ReplayWait) for the writer to make room like a
// replayed event, so that a large state never overflows the queue. A state
// event goes out only while a state subscription still matches its topic.
// State events carry their own cursors and move neither pos nor sent: they
// are not part of the log's order on this connection.
func (c *Client) sendState(ctx context.Context, st *pendingState) error {
	for _, m := range st.snap.Events {
		if err := c.enqueuePaced(ctx, Item{Msg: m}, c.wantsState); err != nil {
			return err
		}
	}
	for _, sy := range st.synced {
		if err := c.enqueuePaced(ctx, Item{Raw: sy.ss.synced(sy.s)}, nil); err != nil {
			return err
		}
	}
	return nil
}

// wantsState reports whether a state subscription of c matches m's topic.
// c.mu is held on entry.
func (c *Client) wantsState(m *Message) bool {
	for _, sb := range c.subs {
		if sb.state && sb.pattern().Match(m.Topic) {
			return true
		}
	}
	return false
}

// enqueuePaced queues it once it fits in the queue, waiting at most
// ReplayWait for the writer to make room; with want, only if want(it.Msg)
// holds then. It returns nil, queueing nothing, once the client failed.
func (c *Client) enqueuePaced(ctx context.Context, it Item, want func(*Message) bool) error {
	n := it.size()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return nil
		}
		if len(c.queue) == 0 || c.qbytes+n <= c.hub.opts.QueueBytes {
			if want == nil || want(it.Msg) {
				c.enqueueLocked(it)
			}
			c.mu.Unlock()
			return nil
		}
		c.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(c.hub.opts.ReplayWait)
		}
		select {
		case <-c.space:
		case <-timer.C:
			return ErrSlowConsumer
		case <-ctx.Done():
			return nil
		}
	}
}

// scan replays the log from c.pos to its current end, or to until if that
// comes first. If it had to reset the client (resetAll), it sets *reset.
func (c *Client) scan(ctx context.Context, until uint64, reset *bool) error {
	for {
		c.mu.Lock()
		if c.err != nil || len(c.requests) > 0 || c.pos >= until {
			// New since requests start from what has been sent by now, so
			// serve them before queueing anything further.
			c.mu.Unlock()
			return nil
		}
		from, gen := c.pos, c.subGen
		pats := make([]Pattern, 0, len(c.subs))
		for _, sb := range c.subs {
			pats = append(pats, sb.pattern())
		}
		c.mu.Unlock()
		if len(pats) == 0 {
			return nil
		}
		res, err := c.hub.readReplay(ctx, ReadRequest{After: from, Patterns: pats, Limit: replayPage, MaxScan: replayScan}, until)
		if errors.Is(err, ErrHistoryGone) {
			// The replay fell behind retention: say so and continue from the head.
			if err := c.resetAll(ctx); err != nil {
				return err
			}
			if reset != nil {
				*reset = true
			}
			continue
		}
		if err != nil {
			return c.brokerErr(err)
		}
		stale := false
		next := min(res.Next, until)
		for _, m := range res.Messages {
			if m.seq > until {
				break
			}
			ok, err := c.enqueueReplayed(ctx, m, gen)
			if err != nil {
				return err
			}
			if !ok {
				stale = true
				break
			}
		}
		c.mu.Lock()
		if !stale && c.subGen == gen {
			c.pos = max(c.pos, next)
		} else {
			stale = true // a subscription joined mid-page: read the rest again with it
		}
		c.mu.Unlock()
		if !stale && !res.More {
			return nil
		}
	}
}

// enqueueReplayed queues a replayed message if the client still wants it,
// waiting (bounded by ReplayWait) for the writer to make room. It reports
// false, queueing nothing, if the subscriptions changed since generation gen.
func (c *Client) enqueueReplayed(ctx context.Context, m *Message, gen uint64) (bool, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		if c.err != nil {
			c.mu.Unlock()
			return true, nil
		}
		if c.subGen != gen {
			c.mu.Unlock()
			return false, nil
		}
		if m.seq <= c.pos || !c.wants(m) {
			c.mu.Unlock()
			return true, nil
		}
		if len(c.queue) == 0 || c.qbytes+m.size() <= c.hub.opts.QueueBytes {
			c.enqueueLocked(Item{Msg: m})
			c.pos, c.sent = m.seq, m.seq
			c.mu.Unlock()
			return true, nil
		}
		c.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(c.hub.opts.ReplayWait)
		}
		select {
		case <-c.space:
		case <-timer.C:
			return false, ErrSlowConsumer
		case <-ctx.Done():
			return true, nil
		}
	}
}

// wants reports whether a subscription of c asks for m. c.mu is held on entry.
func (c *Client) wants(m *Message) bool {
	presence := m.isPresence()
	for _, sb := range c.subs {
		if m.seq > sb.after && sb.pattern().Match(m.Topic) && (!presence || sb.events) {
			return true
		}
	}
	return false
}

// wantsPresenceLocked reports whether a subscription of c asks for the
// joins and leaves of m's topic. c.mu is held on entry.
func (c *Client) wantsPresenceLocked(m *Message) bool {
	if sb := c.subs[m.Topic]; sb != nil && sb.events {
		return true
	}
	for _, sb := range c.subs {
		if sb.events && sb.pattern().Match(m.Topic) {
			return true
		}
	}
	return false
}

// resetAll tells the client it lost events on every subscription and moves
// it to the head of the log. State subscriptions then get their state
// again, read at that head, and a Synced each.
func (c *Client) resetAll(ctx context.Context) error {
	// A replay that fell behind retention usually has a full queue (its
	// writer is slow): wait for room like a replayed event does, rather than
	// fail the client for the reset that explains what it missed.
	if err := c.waitRoom(ctx, Item{Reset: &Reset{}}.size()); err != nil {
		return err
	}
	c.mu.Lock()
	var statePats []Pattern
	for _, sb := range c.subs {
		if sb.state {
			statePats = append(statePats, sb.pattern())
		}
	}
	c.mu.Unlock()
	var head Cursor
	var st *pendingState
	if len(statePats) > 0 {
		// The state's position is the head: every subscription, stateful
		// or not, goes on from there.
		snap, err := c.hub.broker.State(ctx, statePats)
		if err != nil {
			return c.brokerErr(err)
		}
		head, st = snap.Last, &pendingState{snap: snap}
	} else {
		b, err := c.hub.broker.Bounds(ctx)
		if err != nil {
			return c.brokerErr(err)
		}
		head = Cursor{Epoch: b.Epoch, Seq: b.Last}
	}
	c.mu.Lock()
	topics := make([]string, 0, len(c.subs))
	var groups map[*stateSub][]string
	sss := c.stateSubs()
	for p, sb := range c.subs {
		topics = append(topics, p)
		sb.after = max(sb.after, head.Seq)
		if ss := sss[p]; ss != nil && st != nil {
			if groups == nil {
				groups = make(map[*stateSub][]string)
			}
			groups[ss] = append(groups[ss], p)
		}
	}
	c.pos = max(c.pos, head.Seq)
	c.enqueueLocked(Item{Reset: &Reset{Reason: ReasonHistoryGone, Topics: topics, Cursor: head}})
	for ss, pats := range groups {
		st.synced = append(st.synced, syncedFor{ss, Synced{Cursor: head, Topics: pats}})
	}
	c.mu.Unlock()
	if st == nil {
		return nil
	}
	return c.sendState(ctx, st)
}

// waitRoom waits, at most ReplayWait, until n more bytes fit in the queue.
func (c *Client) waitRoom(ctx context.Context, n int) error {
	timer := time.NewTimer(c.hub.opts.ReplayWait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		ok := c.err != nil || len(c.queue) == 0 || c.qbytes+n <= c.hub.opts.QueueBytes
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-c.space:
		case <-timer.C:
			return ErrSlowConsumer
		case <-ctx.Done():
			return nil
		}
	}
}

// goLive appends the pending live events and leaves catching mode, unless
// new requests arrived or pending was lost (then the caller scans again).
func (c *Client) goLive(ctx context.Context) (done bool, err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return true, nil
	}
	if len(c.requests) > 0 {
		c.mu.Unlock()
		return false, nil
	}
	if c.pendLost {
		c.pendLost = false
		c.pendLast = 0
		c.mu.Unlock()
		return false, nil
	}
	if len(c.queue) > 0 && c.qbytes+c.pendSize > c.hub.opts.QueueBytes {
		// Not enough room to append pending: drop it, let the writer catch up,
		// and read those events from the log instead.
		c.pending, c.pendSize, c.pendLast = nil, 0, 0
		c.mu.Unlock()
		select {
		case <-c.space:
		case <-time.After(c.hub.opts.ReplayWait):
			return true, ErrSlowConsumer
		case <-ctx.Done():
			return true, nil
		}
		return false, nil
	}
	for _, m := range c.pending {
		if m.seq > c.pos {
			c.enqueueLocked(Item{Msg: m, Live: true})
			c.pos, c.sent = m.seq, m.seq
		}
	}
	c.pending, c.pendSize, c.pendLast = nil, 0, 0
	c.catching = false
	c.mu.Unlock()
	return true, nil
}

func (c *Client) brokerErr(err error) error {
	if c.ctx.Err() != nil {
		return nil
	}
	c.hub.opts.Logger.Warn("replay failed", "client", c.id, "err", err)
	return ErrUnavailable
}
