package natsbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
)

// reader is one history read: an ephemeral pull consumer on the stream,
// filtered on the server, that reads up to a position known when it was
// opened (end). It is used by one goroutine and deleted by close.
//
// The consumer's own count of pending messages is not used: NATS 2.9
// miscounts it for some filters, and a read that trusted it would stop
// short, silently. Nor is a fetch that gave nothing taken to mean that
// nothing is left: nats.go ends a fetch whose answer did not come in time
// without an error, just as one that found no messages (see fetch).
type reader struct {
	b       *Broker
	s       jetstream.Stream
	name    string // the stream's, for errors
	filter  string
	cons    jetstream.Consumer
	end     uint64 // the last position that matched the filter when opened; 0: none
	next    uint64 // the position to read from
	dseq    uint64 // the consumer's delivery count at the last message received
	fetched int
	buf     []rawMsg
}

// heldWait bounds the check of what the stream still holds when a fetch
// gave nothing (held): it runs when JetStream may have stopped answering,
// and a read that cannot tell must fail soon rather than at its caller's
// deadline.
const heldWait = 2 * time.Second

// readHook, when set by a test, is called with the reader's broker before
// each fetch from the consumer ("fetch") and each check of what the
// stream holds ("held"), so that a test can silence JetStream between a
// read's opening and its fetches.
var readHook atomic.Pointer[func(b *Broker, stage string)]

func (r *reader) hook(stage string) {
	if h := readHook.Load(); h != nil {
		(*h)(r.b, stage)
	}
}

type rawMsg struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// openReader opens a read of the log's messages under filter ("" for all)
// from position from on.
func (b *Broker) openReader(ctx context.Context, filter string, from uint64) (*reader, error) {
	return b.openReaderOn(ctx, b.currentStream(), b.o.Stream, filter, from)
}

// openReaderOn is openReader on stream s, named name.
func (b *Broker) openReaderOn(ctx context.Context, s jetstream.Stream, name, filter string, from uint64) (*reader, error) {
	r := &reader{b: b, s: s, name: name, filter: filter, next: from}
	if filter == "" {
		si, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to read stream %s: %w", name, b.fail(err))
		}
		r.end = si.State.LastSeq
	} else {
		// From the leader, as Info's LastSeq is: a replica's direct get
		// may not have the newest messages yet, and the read would end
		// before them while Read reports the leader's LastSeq as read.
		end, err := r.leaderGet(ctx, struct {
			Last string `json:"last_by_subj"`
		}{filter})
		if err != nil {
			return nil, fmt.Errorf("failed to read stream %s: %w", name, err)
		}
		r.end = end
	}
	if r.end < from {
		return r, nil // nothing to read: no consumer needed
	}
	cons, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
		AckPolicy:     jetstream.AckNonePolicy,
		FilterSubject: filter,
		// Removed by close; the server removes it anyway if this node
		// dies before.
		InactiveThreshold: 30 * time.Second,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read history from stream %s: %w", name, b.fail(err))
	}
	r.cons = cons
	return r, nil
}

// done reports whether the reader has given every message up to end.
func (r *reader) done() bool { return r.next > r.end && len(r.buf) == 0 }

// fetch returns up to n of the next messages, none after end; none at all
// when done. Every message up to end is stored already, so it does not wait
// for more. A fetch that gives nothing before end ends the read only once
// the stream's leader confirms that the rest is gone (retention, or a
// purge, removed it since the read was opened): the same empty fetch is
// what a JetStream that stopped answering gives, and a read must then fail
// as unavailable, not end early as if it had read everything.
func (r *reader) fetch(ctx context.Context, n int) ([]rawMsg, error) {
	if n <= 0 || r.done() {
		return nil, nil
	}
	if len(r.buf) == 0 {
		if err := r.fill(ctx, n, false); err != nil {
			return nil, err
		}
		if len(r.buf) == 0 && r.next <= r.end {
			if err := r.settle(ctx); err != nil {
				return nil, err
			}
		}
		if len(r.buf) == 0 {
			return nil, nil
		}
	}
	k := min(n, len(r.buf))
	out := r.buf[:k:k]
	r.buf = r.buf[k:]
	r.fetched += len(out)
	return out, nil
}

// settle follows a fetch that gave nothing before end: it ends the read
// if the stream holds no more of it, fetches again if it does, and fails
// as unavailable if the consumer still does not deliver what the stream
// holds, or if the stream does not answer.
func (r *reader) settle(ctx context.Context) error {
	seq, err := r.held(ctx)
	if err != nil {
		return err
	}
	if seq == 0 || seq > r.end {
		r.next = r.end + 1 // gone meanwhile
		return nil
	}
	// A fetch that does not wait answers from the consumer's count of
	// pending messages, which NATS 2.9 gets wrong for some filters; one
	// that waits does not trust it.
	if err := r.fill(ctx, 1, true); err != nil {
		return err
	}
	if len(r.buf) > 0 || r.next > r.end {
		return nil
	}
	// Retention may have removed it while the fetch waited.
	if seq, err = r.held(ctx); err != nil {
		return err
	}
	if seq == 0 || seq > r.end {
		r.next = r.end + 1
		return nil
	}
	return fmt.Errorf("failed to read history from stream %s: %w", r.name,
		hub.Unavailable(fmt.Errorf("message %d is stored but its consumer did not deliver it", seq)))
}

// held returns the position of the first message under the reader's
// filter, at or after next, that the stream holds; 0 if there is none.
// It asks the stream's leader: the stream allows direct gets, which its
// replicas may answer before they store the messages up to end, and so
// would report them gone.
func (r *reader) held(ctx context.Context) (uint64, error) {
	r.hook("held")
	ctx, cancel := context.WithTimeout(ctx, heldWait)
	defer cancel()
	subject := r.filter
	if subject == "" {
		subject = ">"
	}
	seq, err := r.leaderGet(ctx, struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{r.next, subject})
	if err != nil {
		return 0, fmt.Errorf("failed to check stream %s: %w", r.name, err)
	}
	if seq != 0 && seq < r.next {
		return 0, fmt.Errorf("failed to check stream %s: %w", r.name, hub.Unavailable(errors.New("unexpected answer")))
	}
	return seq, nil
}

// leaderGet asks the stream's leader for the message that req
// (STREAM.MSG.GET's request) names, and returns its position, 0 if there
// is none. Any failure is hub.ErrUnavailable: whatever the refusal (the
// stream gone, no leader), the read cannot tell what the stream holds.
func (r *reader) leaderGet(ctx context.Context, req any) (uint64, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return 0, err
	}
	// The broker's JetStream context uses the default API prefix.
	msg, err := r.b.js.Conn().RequestWithContext(ctx, jetstream.DefaultAPIPrefix+"STREAM.MSG.GET."+r.name, body)
	if err != nil {
		return 0, hub.Unavailable(err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, hub.Unavailable(err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return 0, nil
	case resp.Error != nil:
		return 0, hub.Unavailable(resp.Error)
	case resp.Message == nil:
		return 0, hub.Unavailable(errors.New("an answer without a message"))
	}
	return resp.Message.Seq, nil
}

func (r *reader) fill(ctx context.Context, n int, wait bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.hook("fetch")
	var batch jetstream.MessageBatch
	var err error
	if wait {
		batch, err = r.cons.Fetch(n, jetstream.FetchMaxWait(500*time.Millisecond))
	} else {
		batch, err = r.cons.FetchNoWait(n)
	}
	if err != nil {
		return fmt.Errorf("failed to read history from stream %s: %w", r.name, r.b.fail(err))
	}
	var bad error
	for m := range batch.Messages() {
		if bad != nil {
			continue // drained, so that the fetch ends
		}
		meta, err := m.Metadata()
		if err != nil {
			bad = fmt.Errorf("failed to read history from stream %s: %w", r.name, err)
			continue
		}
		// The consumer counts its deliveries. One that a fetch gave up
		// waiting for (its answer late, or lost) is gone for this
		// consumer, and the read would skip it.
		if meta.Sequence.Consumer != r.dseq+1 {
			bad = fmt.Errorf("failed to read history from stream %s: %w", r.name, hub.Unavailable(fmt.Errorf(
				"the consumer's delivery %d came after %d: those between were lost", meta.Sequence.Consumer, r.dseq)))
			continue
		}
		r.dseq = meta.Sequence.Consumer
		if meta.Sequence.Stream < r.next {
			continue
		}
		r.next = meta.Sequence.Stream + 1
		if meta.Sequence.Stream > r.end {
			continue
		}
		r.buf = append(r.buf, rawMsg{seq: meta.Sequence.Stream, subject: m.Subject(), header: m.Headers(), data: m.Data()})
	}
	if bad != nil {
		return bad
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("failed to read history from stream %s: %w", r.name, r.b.fail(err))
	}
	return nil
}

// close deletes the consumer. A failure leaves it to the server's
// inactivity cleanup.
func (r *reader) close() {
	if r.cons == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = r.s.DeleteConsumer(ctx, r.cons.CachedInfo().Name)
}
