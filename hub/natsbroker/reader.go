package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reader is one history read: an ephemeral pull consumer on the stream,
// filtered on the server, that reads up to a position known when it was
// opened (end). It is used by one goroutine and deleted by close.
//
// The consumer's own count of pending messages is not used: NATS 2.9
// miscounts it for some filters, and a read that trusted it would stop
// short, silently.
type reader struct {
	b       *Broker
	s       jetstream.Stream
	name    string // the stream's, for errors
	cons    jetstream.Consumer
	end     uint64 // the last position that matched the filter when opened; 0: none
	next    uint64 // the position to read from
	fetched int
	buf     []rawMsg
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
	r := &reader{b: b, s: s, name: name, next: from}
	if filter == "" {
		si, err := s.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("failed to read stream %s: %w", name, b.fail(err))
		}
		r.end = si.State.LastSeq
	} else {
		rm, err := s.GetLastMsgForSubject(ctx, filter)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
			r.end = 0
		case err != nil:
			return nil, fmt.Errorf("failed to read stream %s: %w", name, b.fail(err))
		default:
			r.end = rm.Sequence
		}
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
// for more, except once when the server says there is nothing: retention
// may have removed the rest, or the server's count was wrong.
func (r *reader) fetch(ctx context.Context, n int) ([]rawMsg, error) {
	if n <= 0 || r.done() {
		return nil, nil
	}
	if len(r.buf) == 0 {
		if err := r.fill(ctx, n, false); err != nil {
			return nil, err
		}
		if len(r.buf) == 0 {
			if err := r.fill(ctx, 1, true); err != nil {
				return nil, err
			}
		}
		if len(r.buf) == 0 {
			r.next = r.end + 1 // gone meanwhile
			return nil, nil
		}
	}
	k := min(n, len(r.buf))
	out := r.buf[:k:k]
	r.buf = r.buf[k:]
	r.fetched += len(out)
	return out, nil
}

func (r *reader) fill(ctx context.Context, n int, wait bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
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
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil || meta.Sequence.Stream < r.next {
			continue
		}
		r.next = meta.Sequence.Stream + 1
		if meta.Sequence.Stream > r.end {
			continue
		}
		r.buf = append(r.buf, rawMsg{seq: meta.Sequence.Stream, subject: m.Subject(), header: m.Headers(), data: m.Data()})
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
