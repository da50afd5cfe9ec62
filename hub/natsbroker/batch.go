package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
)

// A batch of several events is stored as consecutive messages, each but
// the first expecting its predecessor's message ID as the stream's last
// (JetStream checks it when it stores the message). So if the message at a
// batch's first position + i carries index i of the batch, every position
// from the first to it holds the batch, in order. A batch is
//   - complete when its last index is stored;
//   - pending while the stream ends inside it (its publisher is still
//     sending, or died and nothing has been appended since);
//   - abandoned when some other message follows a part of it: its
//     publisher was refused from there on and tries again as a new batch.
//
// Readers deliver and read complete batches only. A pending batch ends the
// log for them until it is resolved; an abandoned part is skipped.
type batchState int

const (
	batchComplete batchState = iota
	batchPending
	batchAbandoned
)

// assembler holds back the events of a batch during delivery until the
// batch is complete. It is owned by the delivery goroutine.
type assembler struct {
	prefix string
	buf    []*hub.Message
	cur    *batchInfo
	start  uint64
}

// resolved is the last position before any held event: delivery that
// starts again must start after it to see the held batch whole.
func (a *assembler) resolved(last uint64) uint64 {
	if a.cur != nil {
		return a.start - 1
	}
	return last
}

// add takes the next message of the stream and returns what is now ready
// to deliver, in order.
func (a *assembler) add(m *hub.Message, bi *batchInfo, log *slog.Logger) []*hub.Message {
	if a.cur != nil {
		if bi != nil && bi.id == a.cur.id && bi.index == uint64(len(a.buf)) && m.ID.Seq == a.start+bi.index {
			a.buf = append(a.buf, m)
			if uint64(len(a.buf)) < a.cur.count {
				return nil
			}
			out := a.buf
			a.buf, a.cur = nil, nil
			return out
		}
		a.abandon(log)
	}
	switch {
	case bi == nil:
		return []*hub.Message{m}
	case bi.index != 0:
		// The rest of a batch whose beginning this node never saw: it was
		// abandoned, or dropped by retention before delivery reached it.
		log.Warn("nats broker: skipping part of a batch whose beginning is gone", "seq", m.ID.Seq, "batch", bi.id)
		return nil
	}
	a.cur, a.start, a.buf = bi, m.ID.Seq, []*hub.Message{m}
	return nil
}

// abandon drops the held events: something other than their batch's next
// event followed them.
func (a *assembler) abandon(log *slog.Logger) {
	if a.cur == nil {
		return
	}
	log.Debug("nats broker: skipping the stored part of an interrupted batch; its publisher retries it",
		"from", a.start, "events", len(a.buf), "of", a.cur.count)
	a.buf, a.cur = nil, nil
}

// batchCache remembers, for one read, the state of the batches it met.
type batchCache map[string]batchState

func (c batchCache) state(ctx context.Context, b *Broker, bi *batchInfo, seq uint64) (batchState, error) {
	key := bi.id
	if s, ok := c[key]; ok {
		return s, nil
	}
	s, err := b.batchState(ctx, bi, seq)
	if err != nil {
		return 0, err
	}
	c[key] = s
	return s, nil
}

// batchState looks at the stream to tell whether the batch of the event at
// seq is complete, pending or abandoned. It reads the end of the stream
// first: what it then finds at or before that end cannot change.
func (b *Broker) batchState(ctx context.Context, bi *batchInfo, seq uint64) (batchState, error) {
	s := b.currentStream()
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("failed to read stream %s: %w", b.o.Stream, b.fail(err))
	}
	end, lastPos := info.State.LastSeq, bi.last(seq)
	if lastPos <= end {
		other, err := b.batchAt(ctx, s, lastPos)
		if err != nil {
			return 0, err
		}
		if other != nil && other.id == bi.id && other.index == bi.count-1 {
			return batchComplete, nil
		}
		return batchAbandoned, nil
	}
	// The stream ends before the batch would: it is pending if its own
	// events run to the end.
	other, err := b.batchAt(ctx, s, end)
	if err != nil {
		return 0, err
	}
	if other != nil && other.id == bi.id && other.index == end-bi.start(seq) {
		return batchPending, nil
	}
	return batchAbandoned, nil
}

// batchAt returns the batch place of the message at seq: nil for a single
// event or a position that holds nothing.
func (b *Broker) batchAt(ctx context.Context, s jetstream.Stream, seq uint64) (*batchInfo, error) {
	rm, err := s.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read message %d of stream %s: %w", seq, b.o.Stream, b.fail(err))
	}
	v := rm.Header.Get(hdrBatch)
	if v == "" {
		return nil, nil
	}
	bi, err := parseBatch(v)
	if err != nil || bi.index >= seq {
		return nil, nil // unreadable: not a batch anyone can complete
	}
	return bi, nil
}

// tailBatch tells whether the stream, whose last position is last, ends
// inside a pending batch, and where that batch starts.
func (b *Broker) tailBatch(ctx context.Context, last uint64) (start uint64, pending bool, err error) {
	bi, err := b.batchAt(ctx, b.currentStream(), last)
	if err != nil || bi == nil || bi.index == bi.count-1 {
		return 0, false, err
	}
	return bi.start(last), true, nil
}
