package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/groupcommit"
)

// Group commit: a node's concurrent publishes share its connection's
// pipeline instead of each waiting for its own round trip. Each attempt of
// a publish (see Publish) joins the node's queue; one goroutine per Broker,
// the sender, takes everything queued and sends it with PublishMsgAsync in
// queue order, an attempt's messages one after the other, and goes on to
// what queued meanwhile without waiting for acknowledgements. Each
// publisher awaits its own acknowledgements, which arrive together on the
// connection's one reply subscription. With one publisher at a time an
// attempt waits for one round trip as before; under load, a round trip
// carries many.
//
// The sender is the only writer of this node's events to the log (the
// presence changes of presence.go go through it too), and the connection
// delivers its messages to the stream in the order they were written. So
// an attempt's messages are consecutive among this node's, and a batch's
// chain (batch.go) is broken only by another node's message, as before.
//
// What a node has accepted and not yet answered is bounded in events and
// bytes (pipeMaxEvents, pipeMaxBytes): queued for the sender or awaiting
// acknowledgements. Past the bound a publish waits for room within its
// time (pubWait) or its context, and then fails with hub.ErrUnavailable,
// not sent. A publish larger than the bound on its own still goes, alone.
const (
	pipeMaxEvents = 10000
	pipeMaxBytes  = 8 << 20
	// msgOverhead is what a message counts against pipeMaxBytes besides
	// its topic, type, key, dedupe key and data: its headers, roughly.
	msgOverhead = 128
)

var pipeLimit = groupcommit.Limit{Events: pipeMaxEvents, Bytes: pipeMaxBytes}

// attempt is one try at appending messages, sent by the sender.
type attempt struct {
	groupcommit.Ticket
	msgs []*nats.Msg
	opts [][]jetstream.PublishOpt
	sent chan struct{} // closed by the sender once it has sent what it could
	// Set before sent is closed: the futures of the messages sent, in
	// order, and why the rest were not (nil if all were).
	futures []jetstream.PubAckFuture
	err     error
	// one holds the slices of an attempt of one message, the usual one
	// (pipelineOne), so that they cost no allocations of their own; opt
	// has room for send's noRetry.
	one struct {
		msg  [1]*nats.Msg
		opts [1][]jetstream.PublishOpt
		opt  [3]jetstream.PublishOpt
		fut  [1]jetstream.PubAckFuture
		ack  [1]*jetstream.PubAck
	}
}

// errNotSent marks an attempt left out of the queue: its publisher gave
// up before the sender took it.
var errNotSent = errors.New("not sent")

// sender is the queue of attempts and the bound on what is accepted.
//
// Publish admits to pipe and releases (a publish counts from its first
// attempt to its answer), and pipeline puts each attempt of a publish, or
// of a presence change (which pipe does not count), in queue, from any
// goroutine. The sender goroutine takes and sends; New starts it, and
// Close ends it, failing what is still queued with hub.ErrClosed.
type sender struct {
	queue *groupcommit.Queue[*attempt] // bounded by pipe, not by itself
	pipe  *groupcommit.Bound
	done  chan struct{} // closed when the sender has ended
	// once starts the sender, or ends it unstarted if Close comes first.
	once sync.Once
}

func newSender() *sender {
	return &sender{queue: groupcommit.NewQueue[*attempt](groupcommit.Limit{}),
		pipe: groupcommit.NewBound(pipeLimit), done: make(chan struct{})}
}

// shut ends the queue and the bound: Publish and pipeline refuse from now
// on, publishers waiting for room stop, and what is queued fails with
// hub.ErrClosed.
func (s *sender) shut() {
	s.pipe.Close(hub.ErrClosed)
	for _, a := range s.queue.Close(hub.ErrClosed) {
		a.err = hub.ErrClosed
		close(a.sent)
	}
}

// startSender starts the sender goroutine (New does).
func (b *Broker) startSender() { b.sender.once.Do(func() { go b.sendLoop() }) }

// stopSender waits for the sender to end once b.ctx has ended, or ends it
// if it never started.
func (b *Broker) stopSender() {
	b.sender.once.Do(func() {
		b.sender.shut()
		close(b.sender.done)
	})
	<-b.sender.done
}

// sendLoop is the sender goroutine: it sends everything queued, in order,
// until b.ctx ends (Close).
func (b *Broker) sendLoop() {
	s := b.sender
	defer close(s.done)
	defer s.shut()
	s.queue.Serve(b.ctx, groupcommit.Limit{}, func(q []*attempt) {
		for _, a := range q {
			b.send(a)
		}
	})
}

// noRetry is the option send adds to every message (made once: an option
// is a closure).
var noRetry = jetstream.WithRetryAttempts(0)

// send sends a's messages, in order, and closes a.sent. nats.go does not
// send them again by itself (no retries on "no responders": noRetry), so
// nothing reaches the stream behind the sender's back.
func (b *Broker) send(a *attempt) {
	defer close(a.sent)
	if len(a.msgs) == 1 {
		a.futures = a.one.fut[:0]
	} else {
		a.futures = make([]jetstream.PubAckFuture, 0, len(a.msgs))
	}
	for i, m := range a.msgs {
		// The append writes into the spare room of a.opts[i] if it has
		// any (pipelineOne leaves some), which no one else reads.
		f, err := b.js.PublishMsgAsync(m, append(a.opts[i], noRetry)...)
		if err != nil {
			if i > 0 {
				// The first ones went out; their outcome is unknown.
				err = fmt.Errorf("%w: %w", errNoAnswer, err)
			}
			a.err = err
			return
		}
		a.futures = append(a.futures, f)
	}
}

// pipeline has the sender send msgs, each with its options, and awaits
// their acknowledgements for at most attemptWait once sent (the time
// queued does not count: a lost acknowledgement is noticed as soon, under
// load as alone). If a message could not be sent, or ctx ended or the
// acknowledgements did not come in time, err says so (wrapping
// errNoAnswer once some may have gone out); otherwise refused is the
// first refusal of the stream, if any, and acks holds every
// acknowledgement.
func (b *Broker) pipeline(ctx context.Context, msgs []*nats.Msg, opts [][]jetstream.PublishOpt) (acks []*jetstream.PubAck, refused, err error) {
	return b.await(ctx, &attempt{msgs: msgs, opts: opts, sent: make(chan struct{})})
}

// pipelineOne is pipeline for one message m: its acknowledgement, or the
// stream's refusal, or why neither came. Its slices are the attempt's
// own.
func (b *Broker) pipelineOne(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (ack *jetstream.PubAck, refused, err error) {
	a := &attempt{sent: make(chan struct{})}
	a.one.msg[0] = m
	if len(opts) < len(a.one.opt) {
		n := copy(a.one.opt[:], opts)
		a.one.opts[0] = a.one.opt[: n : n+1]
	} else {
		// A copy: were opts kept, every caller's would be allocated.
		a.one.opts[0] = append([]jetstream.PublishOpt(nil), opts...)
	}
	a.msgs, a.opts = a.one.msg[:], a.one.opts[:]
	acks, refused, err := b.await(ctx, a)
	if err != nil || refused != nil {
		return nil, refused, err
	}
	return acks[0], nil, nil
}

// await has the sender send a and awaits its acknowledgements, for
// pipeline.
func (b *Broker) await(ctx context.Context, a *attempt) (acks []*jetstream.PubAck, refused, err error) {
	if err := b.sender.queue.Put(ctx, a, groupcommit.Weight{}); err != nil { // unbounded: no wait
		return nil, nil, err
	}
	select {
	case <-a.sent:
	case <-ctx.Done():
		if a.Abandon() {
			return nil, nil, fmt.Errorf("%w: %w", errNotSent, ctx.Err())
		}
		return nil, nil, fmt.Errorf("%w: %w", errNoAnswer, ctx.Err()) // being sent
	}
	if a.err != nil {
		return nil, nil, a.err
	}
	t := startTimer(attemptWait)
	defer stopTimer(t)
	if len(a.futures) == 1 {
		acks = a.one.ack[:]
	} else {
		acks = make([]*jetstream.PubAck, len(a.futures))
	}
	for i, f := range a.futures {
		select {
		case ack := <-f.Ok():
			acks[i] = ack
		case err := <-f.Err():
			if refused == nil {
				refused = err
			}
		case <-ctx.Done():
			// Sent: whether or not ctx was cancelled rather than timed
			// out, the outcome is unknown.
			return nil, nil, fmt.Errorf("%w: %w", errNoAnswer, ctx.Err())
		case <-t.C:
			return nil, nil, fmt.Errorf("%w: %w", errNoAnswer, context.DeadlineExceeded)
		}
	}
	return acks, refused, nil
}

// timers holds stopped timers for pipeline's waits: a context with a
// timeout of its own costs an attempt six allocations, a timer from here
// none. Since Go 1.23 a timer stopped or reset delivers no stale value,
// so one can serve any number of waits.
var timers sync.Pool

// startTimer returns a timer that fires after d.
func startTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// stopTimer stops t and keeps it for another wait.
func stopTimer(t *time.Timer) {
	t.Stop()
	timers.Put(t)
}
