package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldpush/herald/delta"
	"github.com/heraldpush/herald/hub"
)

// SubscribeOptions configure a subscription. The zero value (or nil)
// receives live events only.
type SubscribeOptions struct {
	// Since resumes after this cursor (an event's ID) instead of starting
	// with live events.
	Since string
	// Rewind starts with the newest Rewind (at most 1000) retained events
	// of the topics. It is asked for only by the first connection:
	// reconnects resume, from the cursor the subscription started at or
	// the last event delivered.
	Rewind int
	// State starts with the state of the topics (each key's latest
	// event), then a KindSynced message, then the events after it.
	State bool
	// Presence makes the connection a member of each topic (exact topics
	// only) while subscribed, described by Info (a JSON object of at most
	// 1 KiB; over SSE the token's herald.info claim is used instead).
	Presence bool
	Info     json.RawMessage
	// PresenceEvents also delivers the topics' herald.join and
	// herald.leave events.
	PresenceEvents bool
	// Delta asks the server for fossil deltas of keyed events; the
	// subscription applies them, so Event.Data is always the full data.
	Delta bool
	// Conflate, if positive (50ms to 60s), asks the server for at most
	// one event of each topic and key per interval, the latest.
	Conflate time.Duration
	// Buffer is the capacity of the channel of messages (0: 64). A
	// consumer that falls behind holds up the connection's reader.
	Buffer int
}

// Subscription is a live subscription: a reader goroutine and its
// connection, reconnected and resumed until the subscription ends. Its
// methods are safe for concurrent use; its messages are meant for one
// consumer.
type Subscription struct {
	c        *Client
	patterns []string
	opts     SubscribeOptions
	msgs     chan Message
	parent   context.Context
	closing  atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{}
	err      error // set before done closes

	mu       sync.Mutex
	clientID string

	// Owned by the reader goroutine.
	last      hub.Cursor // the last cursor delivered or reset to
	haveLast  bool
	inState   bool // delivering a state (before its synced)
	started   bool // last is the connection's start, which a rewind's events may precede
	delivered bool // the current connection delivered something
	live      bool // the current connection's subscription is confirmed
	bases     map[baseKey][]byte
	baseBytes int                 // the data bytes of bases
	held      map[string]struct{} // the patterns the server has not unsubscribed on this connection
	firstUp   chan error          // the first connection's outcome; nil afterwards
	wd        *watchdog           // the current connection's

	deltas atomic.Int64 // events that came as deltas (tests read it)
}

// baseKey names the delta base of a topic's key.
type baseKey struct{ topic, key string }

// maxBases and maxBaseBytes bound the delta bases a subscription keeps.
// The server keeps at most 4,096 (and 4 MiB) per connection and sends
// whole data for the others, so a subscription past these has stale ones;
// it forgets them all, and a delta that then finds no base makes it
// reconnect (whole data again).
const (
	maxBases     = 1 << 14
	maxBaseBytes = 64 << 20
)

// Subscribe subscribes to patterns (topics, or patterns with * and >) and
// returns once the server has confirmed the subscription: every matching
// event published after Subscribe returns is delivered. If the first
// connection fails, Subscribe returns its error; later failures are
// retried (see the package documentation). The subscription ends when ctx
// ends, at Close or Client.Close, or on a permanent error.
func (c *Client) Subscribe(ctx context.Context, patterns []string, opts *SubscribeOptions) (*Subscription, error) {
	var o SubscribeOptions
	if opts != nil {
		o = *opts
	}
	if len(patterns) == 0 {
		return nil, errors.New("failed to subscribe: no patterns")
	}
	for _, p := range patterns {
		pat, err := hub.ParsePattern(p)
		if err != nil {
			return nil, fmt.Errorf("failed to subscribe: %q: %w", p, err)
		}
		if o.Presence && !pat.Literal() {
			return nil, fmt.Errorf("failed to subscribe: presence needs exact topics, and %q is a pattern", p)
		}
	}
	if o.Rewind < 0 || o.Rewind > hub.MaxRewind {
		return nil, fmt.Errorf("failed to subscribe: rewind %d is not in 0..%d", o.Rewind, hub.MaxRewind)
	}
	if o.Buffer <= 0 {
		o.Buffer = 64
	}
	s := &Subscription{c: c, patterns: append([]string(nil), patterns...), opts: o,
		msgs: make(chan Message, o.Buffer), done: make(chan struct{}), firstUp: make(chan error, 1)}
	if o.Since != "" {
		cur, err := hub.ParseCursor(o.Since)
		if err != nil {
			return nil, fmt.Errorf("failed to subscribe: since %q is not a cursor", o.Since)
		}
		s.last, s.haveLast = cur, true
	}
	s.inState = o.State && !s.haveLast

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.subs.Add(1)
	c.mu.Unlock()
	sctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	s.cancel, s.parent = cancel, ctx
	first := s.firstUp
	go func() {
		defer c.subs.Done()
		defer stop()
		defer cancel()
		s.run(sctx)
	}()
	select {
	case err := <-first:
		if err != nil {
			<-s.done
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		<-s.done
		return nil, fmt.Errorf("failed to subscribe: %w", ctx.Err())
	}
}

// C returns the channel of messages. It is closed when the subscription
// ends; Err then says why.
func (s *Subscription) C() <-chan Message { return s.msgs }

// All returns an iterator over the messages: each with a nil error, then,
// if the subscription ended with an error, a zero Message and that error.
// Breaking out of the loop does not end the subscription; Close does.
func (s *Subscription) All() iter.Seq2[Message, error] {
	return func(yield func(Message, error) bool) {
		for m := range s.msgs {
			if !yield(m, nil) {
				return
			}
		}
		if err := s.Err(); err != nil {
			yield(Message{}, err)
		}
	}
}

// Err returns why the subscription ended: nil while it runs and after
// Close or Client.Close, the context's error if its context ended, or the
// permanent error that ended it.
func (s *Subscription) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Done is closed when the subscription has ended and its goroutine is gone.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// ClientID is the server's ID of the current (or last) connection, as
// presence members name it. A reconnect is a new connection with a new ID.
func (s *Subscription) ClientID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.clientID
}

// Close ends the subscription and waits for its goroutine. It returns nil.
func (s *Subscription) Close() error {
	s.closing.Store(true)
	s.cancel()
	<-s.done
	return nil
}

// run is the reader goroutine: connections until the end.
func (s *Subscription) run(ctx context.Context) {
	// done closes before the channel does: a consumer that sees the
	// channel closed can read Err at once.
	defer close(s.msgs)
	defer close(s.done)
	err := s.loop(ctx)
	if s.firstUp != nil {
		s.firstUp <- err
		s.firstUp = nil
	}
	if ctx.Err() != nil {
		// Close and Client.Close end it without an error; the caller's
		// context ending is the caller's to see.
		err = nil
		if s.parent.Err() != nil && !s.closing.Load() && s.c.ctx.Err() == nil {
			err = s.parent.Err()
		}
	}
	s.err = err
}

func (s *Subscription) loop(ctx context.Context) error {
	log := s.c.log.With("topics", s.patterns, "transport", s.c.opts.Transport)
	backoff := s.c.opts.BackoffMin
	for {
		s.delivered, s.live, s.started = false, false, false
		if s.haveLast {
			s.inState = false // a resume sends no state (unless a reset comes first)
		}
		s.forgetBases()
		err := s.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var perm *Error
		if errors.As(err, &perm) && perm.permanent() {
			return fmt.Errorf("failed to subscribe: %w", err)
		}
		if s.firstUp != nil {
			return fmt.Errorf("failed to subscribe: %w", err)
		}
		if s.delivered {
			backoff = s.c.opts.BackoffMin
		}
		if !s.haveLast {
			log.Warn("reconnecting without a cursor: events published until the subscription is back are not delivered")
		}
		// Jitter over the upper half keeps a crowd of clients from
		// reconnecting in lockstep after a server restart.
		d := backoff/2 + rand.N(backoff/2+1)
		log.Warn("disconnected", "err", err, "retry_in", d)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, s.c.opts.BackoffMax)
	}
}

// session runs one connection under its watchdog.
func (s *Subscription) session(ctx context.Context) error {
	sctx, cancel := context.WithCancelCause(ctx)
	s.wd = newWatchdog(sctx, cancel, s.c.opts.ConnectTimeout, s.c.opts.IdleTimeout)
	var err error
	if s.c.opts.Transport == "sse" {
		err = s.sessionSSE(sctx)
	} else {
		err = s.sessionWS(sctx)
	}
	cancel(nil)
	s.wd.stop()
	s.wd = nil
	// The session saw its context end, and says so in its own words; the
	// watchdog's cause says why. A refusal that came first stands.
	var perm *Error
	if cause := context.Cause(sctx); errors.Is(cause, errHung) && ctx.Err() == nil &&
		!(errors.As(err, &perm) && perm.permanent()) {
		err = cause
	}
	return err
}

// up records that the connection's subscription is confirmed.
func (s *Subscription) up(clientID string) {
	s.wd.confirmed()
	s.live = true
	s.mu.Lock()
	s.clientID = clientID
	s.mu.Unlock()
	s.c.log.Info("subscribed", "topics", s.patterns, "client", clientID)
	if s.firstUp != nil {
		s.firstUp <- nil
		s.firstUp = nil
	}
}

// deliver hands m to the consumer, unless the subscription ends first.
func (s *Subscription) deliver(ctx context.Context, m Message) error {
	select {
	case s.msgs <- m:
		return nil
	default:
	}
	// A consumer that falls behind holds up the reader: the connection
	// is not idle meanwhile, whatever its watchdog would see.
	s.wd.hold(true)
	defer s.wd.hold(false)
	select {
	case s.msgs <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// event delivers one envelope, applying its delta, unless it was already
// delivered (a resume may replay what the consumer has seen).
func (s *Subscription) event(ctx context.Context, e envelope) error {
	if e.delta != nil || (s.opts.Delta && e.Key != "") {
		if err := s.applyDelta(&e); err != nil {
			return err
		}
	}
	cur, err := hub.ParseCursor(e.ID)
	if err != nil {
		return fmt.Errorf("failed to read event: id %q: %w", e.ID, err)
	}
	s.delivered = true
	if !s.inState && !s.started && s.haveLast && cur.Epoch == s.last.Epoch && cur.Seq <= s.last.Seq {
		return nil
	}
	s.last, s.haveLast, s.started = cur, true, false
	return s.deliver(ctx, Message{Kind: KindEvent, Event: e.Event})
}

// applyDelta turns a delta into full data and keeps the data as the base
// of the event's topic and key.
func (s *Subscription) applyDelta(e *envelope) error {
	k := baseKey{e.Topic, e.Key}
	if e.delta != nil {
		var d string
		if err := json.Unmarshal(e.delta, &d); err != nil {
			return fmt.Errorf("failed to read delta of %s %s: %w", e.Topic, e.Key, err)
		}
		base, ok := s.bases[k]
		if !ok {
			return fmt.Errorf("failed to apply delta of %s %s: no base", e.Topic, e.Key)
		}
		// A delta of a few bytes can declare megabytes: none makes more
		// than an event could carry whole.
		data, err := delta.ApplyMax(base, []byte(d), s.c.opts.MaxMessage)
		if err == nil && !json.Valid(data) {
			err = errors.New("the result is not JSON")
		}
		if err != nil {
			return fmt.Errorf("failed to apply delta of %s %s: %w", e.Topic, e.Key, err)
		}
		e.Data, e.delta = data, nil
		s.deltas.Add(1)
	}
	if s.bases == nil {
		s.bases = make(map[baseKey][]byte)
	}
	old, ok := s.bases[k]
	if ok {
		s.baseBytes -= len(old)
	} else if len(s.bases) >= maxBases {
		s.forgetBases()
	}
	if s.baseBytes+len(e.Data) > maxBaseBytes {
		s.forgetBases()
	}
	s.bases[k] = e.Data
	s.baseBytes += len(e.Data)
	return nil
}

// forgetBases drops every delta base: after a reset or on a new
// connection, whose keys all come whole first, or past the bounds.
func (s *Subscription) forgetBases() {
	clear(s.bases)
	s.baseBytes = 0
}

// startAt takes the cursor a connection without one starts at (the
// WebSocket ok's id, the SSE start block) as the resume point: every
// matching event after it comes on the connection, so a cut before the
// first event resumes from it and loses nothing. A rewind's events may lie
// before it; each is then the resume point as it is delivered.
func (s *Subscription) startAt(id string) error {
	if s.haveLast {
		return nil // a resume: the connection goes on from the cursor it was given
	}
	cur, err := hub.ParseCursor(id)
	if err != nil {
		return fmt.Errorf("failed to read start: cursor %q: %w", id, err)
	}
	s.last, s.haveLast, s.started = cur, true, true
	return nil
}

// reset delivers a herald.reset and moves the resume point to its cursor.
func (s *Subscription) reset(ctx context.Context, id, reason string, topics []string) error {
	cur, err := hub.ParseCursor(id)
	if err != nil {
		return fmt.Errorf("failed to read reset: cursor %q: %w", id, err)
	}
	s.delivered = true
	s.last, s.haveLast, s.started = cur, true, false
	s.inState = s.opts.State // the state follows, then a synced
	s.forgetBases()
	s.c.log.Info("reset", "topics", topics, "reason", reason, "cursor", id)
	return s.deliver(ctx, Message{Kind: KindReset, Cursor: id, Reason: reason, Topics: topics})
}

// synced delivers a herald.synced, the end of the state, and moves the
// resume point to its cursor.
func (s *Subscription) synced(ctx context.Context, id string, topics []string) error {
	cur, err := hub.ParseCursor(id)
	if err != nil {
		return fmt.Errorf("failed to read synced: cursor %q: %w", id, err)
	}
	s.delivered = true
	s.inState = false
	s.last, s.haveLast, s.started = cur, true, false
	s.c.log.Log(ctx, slog.LevelDebug, "synced", "topics", topics, "cursor", id)
	return s.deliver(ctx, Message{Kind: KindSynced, Cursor: id, Topics: topics})
}

// resumeFrom returns the cursor to resume from, or "".
func (s *Subscription) resumeFrom() string {
	if !s.haveLast {
		return ""
	}
	return s.last.String()
}

// holdAll notes, as a connection starts, that it holds every pattern.
func (s *Subscription) holdAll() {
	s.held = make(map[string]struct{}, len(s.patterns))
	for _, p := range s.patterns {
		s.held[p] = struct{}{}
	}
}

// unsubscribed handles the server's unsubscribed (WebSocket) or
// herald.unsubscribed (SSE): its control API removed these patterns of
// the subscription. Once none is left nothing more will come, and
// resubscribing would undo what the operator did: the subscription ends.
func (s *Subscription) unsubscribed(topics []string) error {
	for _, t := range topics {
		delete(s.held, t)
	}
	if len(s.held) == 0 {
		return &Error{Code: "unsubscribed", Message: fmt.Sprintf("the server removed the subscription to %v", s.patterns)}
	}
	s.c.log.Warn("unsubscribed by the server", "topics", topics)
	return nil
}
