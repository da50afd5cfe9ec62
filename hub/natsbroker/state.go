package natsbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldpush/herald/hub"
	"github.com/heraldpush/herald/internal/sharedcall"
)

// The state of keyed topics lives in a second stream, <Stream>_STATE, on
// subjects <Subjects>_state.<KEY>.<TOPIC> (the key first, with its dots
// written as "~", so that a topic pattern maps to the filter
// <Subjects>_state.*.<PATTERN>). The stream keeps one message per subject
// (MaxMsgsPerSubject 1): the latest event of the key, or a tombstone (data
// null) for a key that an event removed. Its MaxBytes is StateMaxBytes
// with DiscardOld, so that past it the least recently written keys across
// topics go first. The log's retention does not touch it.
//
// NATS 2.9 cannot append to the log and write the state in one step, so
// the state is derived from the log, not written beside it by Publish:
// every node runs an applier that takes the log's keyed events from
// delivery (reading the log itself from its first retained position when
// it starts, and whenever it falls behind) and writes each into the state
// stream, unless the key's message there is already at that position or
// later. The write is
// conditional on the key's last message in the state stream
// (Nats-Expected-Last-Subject-Sequence), so appliers on several nodes,
// in any interleaving, leave each key at its latest event in log order.
// A publisher that dies after its append leaves nothing to repair: the
// appliers write the state from the log.
//
// An applier's position (applied) is exact: every keyed event at or before
// it is in the state stream, or was replaced there by a later one. A
// snapshot reads the state stream's messages of the topic, then the log's
// end, then the topic's events in the log after applied up to that end;
// the latest event of each key among these is the state at the end (see
// snapshot). So Publish costs nothing more for a keyed event, and a
// snapshot reads the log's tail that the applier has not yet written.
//
// Header of a state message besides those of an event (the subject gives
// the topic): the log position of the event and the log's epoch.
const (
	hdrSeq   = "Herald-Seq"
	hdrEpoch = "Herald-Epoch"
)

// applied is an applier's position: the log's epoch and the last position
// whose keyed events (and all before) are in the state stream.
type applied struct {
	epoch string
	seq   uint64
}

// stateStore is the broker's handle on a stream opened when first needed:
// the state stream, so that a log without keyed events has none, or the
// presence stream (presence.go).
type stateStore struct {
	// mu guards gen and s. It is never held across a round trip to NATS:
	// while JetStream does not answer, every caller would wait behind the
	// one holding it, each for that one's whole timeout, whatever its own
	// context says.
	mu  sync.Mutex
	gen uint64           // counts drops: an open begun before one is not kept
	s   jetstream.Stream // nil until opened
	// opens makes the callers that need the stream at the same time share
	// one round trip: during an outage they would otherwise each send
	// one, and all of them again once it ends.
	opens sharedcall.Group[jetstream.Stream]
}

// streamOpenWait bounds a look-up or creation of the state or presence
// stream that callers share (see openStream): no caller's context bounds
// it, as it serves them all. A variable for the tests.
var streamOpenWait = confirmWait

// openStream returns st's stream, named name, creating it with config if
// create is set; nil (and no error) if there is none and create is not
// set. It waits for JetStream only as long as ctx allows, even when it
// shares another caller's round trip. That the stream is not found is not
// kept: another node may create it at any time.
func (b *Broker) openStream(ctx context.Context, st *stateStore, name string, config func() jetstream.StreamConfig, create bool) (jetstream.Stream, error) {
	st.mu.Lock()
	s := st.s
	st.mu.Unlock()
	if s != nil {
		return s, nil
	}
	key := "look up"
	if create {
		key = "create"
	}
	// The caller that started it leaving must not fail the others; Close
	// ends it.
	s, err := st.opens.Do(ctx, b.ctx, key, streamOpenWait, func(octx context.Context) (jetstream.Stream, error) {
		st.mu.Lock()
		s, gen := st.s, st.gen
		st.mu.Unlock()
		if s != nil {
			return s, nil
		}
		var err error
		if create {
			s, err = b.js.CreateOrUpdateStream(octx, config())
		} else if s, err = b.js.Stream(octx, name); errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		st.mu.Lock()
		if st.gen == gen { // else it may be the handle of a stream since found gone
			st.s = s
		}
		st.mu.Unlock()
		return s, nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to open stream %s: %w", name, b.fail(err))
	}
	return s, nil // nil: not found
}

// drop forgets st's stream after it was found gone, so that the next use
// opens (or creates) it again.
func (st *stateStore) drop() {
	st.mu.Lock()
	st.gen++
	st.s = nil
	st.mu.Unlock()
}

func (b *Broker) stateName() string   { return b.o.Stream + "_STATE" }
func (b *Broker) statePrefix() string { return b.o.Subjects + "_state." }

// stateSubject is the subject of a key of a topic.
func (b *Broker) stateSubject(topic, key string) string {
	return b.statePrefix() + strings.ReplaceAll(key, ".", "~") + "." + topic
}

// applySubject is where the applier writes a keyed event: its key's state
// subject, or for a join or leave the membership's subject (presence.go).
func (b *Broker) applySubject(m *hub.Message) string {
	if m.IsPresence() {
		return b.presMemberSubject(m.Topic, m.Key)
	}
	return b.stateSubject(m.Topic, m.Key)
}

func (b *Broker) stateConfig() jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:              b.stateName(),
		Description:       "Herald state of keyed topics",
		Subjects:          []string{b.statePrefix() + ">"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxMsgsPerSubject: 1,
		MaxBytes:          int64(b.o.StateMaxBytes),
		Replicas:          b.o.Replicas,
		Storage:           jetstream.FileStorage,
		AllowDirect:       true,
		Duplicates:        time.Second, // no message IDs are used
	}
	if b.o.Memory {
		cfg.Storage = jetstream.MemoryStorage
	}
	return cfg
}

// stateStream returns the state stream, creating it if create is set; nil
// (and no error) if there is none and create is not set.
func (b *Broker) stateStream(ctx context.Context, create bool) (jetstream.Stream, error) {
	return b.openStream(ctx, &b.state, b.stateName(), b.stateConfig, create)
}

// dropStateStream forgets the state stream after it was found gone, so
// that the next use opens (or creates) it again.
func (b *Broker) dropStateStream() { b.state.drop() }

// feedChunk is what delivery read of the log, for the applier: the keyed
// events of the stream after position from up to to, in one epoch.
// Reading the log once for both is what keeps the applier cheap.
type feedChunk struct {
	out      []*hub.Message
	epoch    string
	from, to uint64
}

// feedChunks bounds the chunks waiting for the applier. When they are
// full, delivery drops the next ones rather than wait, and the applier
// reads the stream itself until it has caught up.
const feedChunks = 256

// feedApplier hands what delivery read to the applier, without waiting.
func (b *Broker) feedApplier(out []*hub.Message, epoch string, from, to uint64) {
	var keyed []*hub.Message
	for _, m := range out {
		if m.Key != "" {
			keyed = append(keyed, m)
		}
	}
	select {
	case b.feed <- feedChunk{out: keyed, epoch: epoch, from: from, to: to}:
	default: // the applier notices the gap
	}
}

// errCaughtUp ends the applier's own read of the stream.
var errCaughtUp = errors.New("caught up")

// applyLoop is the applier goroutine (see above), from Start until Close.
// It follows the log from its first retained position: what nodes wrote
// before this one started is checked again, so that a write lost with a
// node that died is made now. It reads the stream itself up to where
// delivery started, or to where a chunk of delivery's follows on, and
// from there it applies delivery's chunks.
func (b *Broker) applyLoop(epoch string, start uint64) {
	defer close(b.applyDone)
	a := &applier{b: b, epoch: epoch, held: map[string]*hub.Message{}, known: map[string]known{}}
	next := &feedChunk{epoch: epoch, from: start, to: start} // received, not yet applied
	backoff := 50 * time.Millisecond
	for b.ctx.Err() == nil {
		if next == nil {
			var timeout <-chan time.Time
			if a.hold > 0 {
				timeout = time.After(a.hold)
			}
			select {
			case c := <-b.feed:
				next = &c
			case <-timeout:
				if err := a.call(nil, a.epoch, a.upTo); err != nil {
					b.applyFailed(err, &backoff)
				}
				continue
			case <-b.flushNow:
				a.now = true
				if err := a.call(nil, a.epoch, a.upTo); err != nil {
					b.applyFailed(err, &backoff)
				}
				continue
			case <-b.ctx.Done():
				return
			}
		}
		same := next.epoch == a.epoch
		switch {
		case !same && !newerEpoch(next.epoch, a.epoch), same && next.to < a.upTo:
			next = nil // of an older log, or read already
		case same && next.from <= a.upTo, !same && next.from == 0:
			if err := a.call(next.out, next.epoch, next.to); err != nil {
				b.applyFailed(err, &backoff)
				continue
			}
			backoff = 50 * time.Millisecond
			next = nil
		default:
			// A gap (chunks were dropped, or the applier has just
			// started): read the stream up to where this chunk starts.
			b.catchUps.Add(1)
			epoch, last, target := next.epoch, a.upTo, next.from
			if !same {
				last = 0
			}
			b.follow("state", epoch, last, nil, func(out []*hub.Message, e string, resolved uint64) (time.Duration, error) {
				if err := a.call(out, e, resolved); err != nil {
					return 0, err
				}
				if e != epoch {
					next = nil // the log was created again meanwhile
					return 0, errCaughtUp
				}
				if resolved >= target {
					return 0, errCaughtUp
				}
				return a.hold, nil
			})
		}
	}
}

// applyFailed logs a failure to write the state and waits before the
// applier tries again.
func (b *Broker) applyFailed(err error, backoff *time.Duration) {
	if b.ctx.Err() != nil {
		return // closing
	}
	b.o.Logger.Warn("nats broker: writing the state failed; retrying", "err", err, "in", *backoff)
	b.deliverErrors.Add(1)
	select {
	case <-time.After(*backoff):
	case <-b.ctx.Done():
	}
	*backoff = min(2**backoff, 2*time.Second)
}

// newerEpoch reports whether epoch e names a later stream than f (both
// are creation times, see epochOf).
func newerEpoch(e, f string) bool {
	x, err1 := strconv.ParseInt(e, 36, 64)
	y, err2 := strconv.ParseInt(f, 36, 64)
	return err1 == nil && err2 == nil && x > y
}

// Bounds of what the applier holds before it writes: only a key's latest
// event is written, so holding a moment saves the writes of keys written
// again meanwhile. The position a snapshot reads the log from is then that
// much older, no more.
const (
	applyDelay     = 100 * time.Millisecond
	applyMaxKeys   = 1024
	applyMaxBytes  = 4 << 20
	applyKnownKeys = 8192
)

// applier writes the log's keyed events into the state stream. It is
// owned by the applier goroutine.
type applier struct {
	b     *Broker
	epoch string
	upTo  uint64                  // the position up to which it has read the stream
	hold  time.Duration           // how soon what it holds must be written; 0: it holds nothing
	held  map[string]*hub.Message // by state subject: the latest event of the key read
	bytes int
	since time.Time // when the oldest held event was read
	// known is what the applier last read or wrote for a subject: the
	// state stream's sequence of the key's message and the log position
	// it holds. A write that expects it needs no read first; if another
	// node wrote meanwhile, the write is refused and the key read.
	known map[string]known
	// floor is, during a flush, the log position of the state stream's
	// oldest message (0 until read, or if unknown): see dropped.
	floor     uint64
	floorRead bool
	// first is, during a flush, the log's first retained position (for
	// joins, see olderThanFloor).
	first     uint64
	firstRead bool
	now       bool // write what it holds at the next call: a snapshot waits for it
}

type known struct{ stateSeq, seq uint64 }

// call is handle that records what handle returns.
func (a *applier) call(out []*hub.Message, epoch string, resolved uint64) error {
	hold, err := a.handle(out, epoch, resolved)
	if err == nil {
		a.hold = hold
	}
	return err
}

// handle takes the keyed events of the stream up to resolved (see
// follow): it holds them, and writes what it holds once it has held it
// applyDelay, or when it holds too much; then it records resolved as the
// applier's position. While it holds, it returns how soon it must be
// called again.
func (a *applier) handle(out []*hub.Message, epoch string, resolved uint64) (time.Duration, error) {
	if epoch != a.epoch {
		clear(a.held)
		clear(a.known)
		a.epoch, a.bytes = epoch, 0
	}
	a.upTo = resolved
	for _, m := range out {
		if m.Key == "" {
			continue
		}
		if len(a.held) == 0 {
			a.since = time.Now()
		}
		subj := a.b.applySubject(m)
		if old := a.held[subj]; old != nil {
			a.bytes -= len(old.Data)
		}
		a.held[subj] = m
		a.bytes += len(m.Data)
	}
	if len(a.held) > 0 && len(a.held) < applyMaxKeys && a.bytes < applyMaxBytes && !a.now {
		if wait := applyDelay - time.Since(a.since); wait > 0 {
			return wait, nil
		}
	}
	if err := a.flush(); err != nil {
		return 0, err
	}
	a.now = false
	if p := a.b.applied.Load(); p == nil || p.epoch != epoch || p.seq != resolved {
		a.b.applied.Store(&applied{epoch: epoch, seq: resolved})
	}
	return 0, nil
}

// flush writes what the applier holds, all at once; a key that another
// node wrote meanwhile is read and written again on its own. What a
// failure leaves unwritten stays held for the next call.
func (a *applier) flush() error {
	if len(a.held) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(a.b.ctx, confirmWait)
	defer cancel()
	var state, pres jetstream.Stream
	streamOf := func(m *hub.Message) (jetstream.Stream, error) {
		var err error
		switch {
		case m.IsPresence() && pres == nil:
			pres, err = a.b.presStream(ctx, true)
		case !m.IsPresence() && state == nil:
			state, err = a.b.stateStream(ctx, true)
		}
		if m.IsPresence() {
			return pres, err
		}
		return state, err
	}
	type sent struct {
		subj string
		m    *hub.Message
		f    jetstream.PubAckFuture
	}
	// In log order, so that the state stream's order, by which StateMaxBytes
	// drops keys, is the order of their latest events.
	subjs := make([]string, 0, len(a.held))
	for subj := range a.held {
		subjs = append(subjs, subj)
	}
	slices.SortFunc(subjs, func(x, y string) int { return cmp.Compare(a.held[x].ID.Seq, a.held[y].ID.Seq) })
	if a.b.flushHook != nil {
		seqs := make([]uint64, len(subjs))
		for i, subj := range subjs {
			seqs[i] = a.held[subj].ID.Seq
		}
		a.b.flushHook(seqs)
	}
	a.floorRead, a.firstRead = false, false
	var pending []sent
	for _, subj := range subjs {
		m := a.held[subj]
		s, err := streamOf(m)
		if err != nil {
			return a.failed(err)
		}
		k, ok := a.known[subj]
		if !ok {
			// A key not known is most often new: the write expects no
			// message, and if there is one it is refused and the key read.
			// An event older than the state stream's oldest message needs
			// to know whether its key was dropped.
			older, err := a.olderThanFloor(ctx, s, m)
			if err != nil {
				return a.failed(err)
			}
			if older {
				if k, err = a.read(ctx, s, subj); err != nil {
					return a.failed(err)
				}
			}
		}
		if k.stateSeq == 0 {
			if older, err := a.olderThanFloor(ctx, s, m); err != nil {
				return a.failed(err)
			} else if older {
				a.done(subj, m) // dropped by StateMaxBytes: not written back
				continue
			}
		}
		msg := a.message(k, m)
		if msg == nil {
			a.done(subj, m)
			continue
		}
		f, err := a.b.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(k.stateSeq))
		if err != nil {
			return a.failed(err)
		}
		pending = append(pending, sent{subj, m, f})
	}
	var first error
	for _, p := range pending {
		var err error
		select {
		case ack := <-p.f.Ok():
			a.known[p.subj] = known{stateSeq: ack.Sequence, seq: p.m.ID.Seq}
			a.done(p.subj, p.m)
			continue
		case err = <-p.f.Err():
		case <-ctx.Done():
			err = ctx.Err()
		}
		delete(a.known, p.subj) // stored or not, it must be read
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrWrongLastSeq {
			var s jetstream.Stream
			if s, err = streamOf(p.m); err == nil {
				err = a.write(ctx, s, p.subj, p.m) // another node wrote it meanwhile
			}
		}
		if err == nil {
			a.done(p.subj, p.m)
		} else if first == nil {
			first = err
		}
	}
	if len(a.known) > applyKnownKeys {
		clear(a.known) // a cache: reads refill it
	}
	if first != nil {
		return a.failed(first)
	}
	return nil
}

// done drops m, written, from what the applier holds.
func (a *applier) done(subj string, m *hub.Message) {
	delete(a.held, subj)
	a.bytes -= len(m.Data)
}

func (a *applier) failed(err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		a.b.dropStateStream()
		a.b.dropPresStream()
		clear(a.known)
	}
	return fmt.Errorf("failed to write the state or the members: %w", a.b.fail(err))
}

// read reads what the state stream holds for a subject.
func (a *applier) read(ctx context.Context, s jetstream.Stream, subj string) (known, error) {
	rm, err := s.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		a.known[subj] = known{}
		return known{}, nil
	}
	if err != nil {
		return known{}, err
	}
	k := known{stateSeq: rm.Sequence}
	if rm.Header.Get(hdrEpoch) == a.epoch {
		k.seq, _ = strconv.ParseUint(rm.Header.Get(hdrSeq), 10, 64)
	}
	a.known[subj] = k
	return k, nil
}

// message is the state message that makes m its key's state, or nil if
// the state holds k, at m or later.
//
// A removal (or a leave) always writes its tombstone, even where there is
// nothing to remove (the applier held the key's event and its removal
// together, and wrote only the removal): a node whose applier lags behind
// would write the older event later, and snapshots of nodes whose
// appliers are past the removal would show it. The tombstone carries the
// removal's position, so that the lagging write, which expects no
// message, is refused, and the key read shows it newer.
func (a *applier) message(k known, m *hub.Message) *nats.Msg {
	keep := a.b.keeps(m)
	if k.seq >= m.ID.Seq {
		return nil
	}
	d := hub.Draft{Topic: m.Topic, Type: m.Type, Key: m.Key, Data: m.Data}
	if !keep {
		d.Data = []byte("null") // a tombstone
	}
	prefix := a.b.statePrefix() + strings.ReplaceAll(m.Key, ".", "~") + "."
	if m.IsPresence() {
		prefix = a.b.presPrefix() + "m." + presToken(m.Key) + "."
	}
	msg := encode(prefix, d, m.Time)
	msg.Header.Set(hdrSeq, strconv.FormatUint(m.ID.Seq, 10))
	msg.Header.Set(hdrEpoch, a.epoch)
	return msg
}

// keeps reports whether m is kept in the state: it is not a removal (data
// null), and its state message fits in StateMaxBytes on its own (an
// estimate of JetStream's count: the subject, the headers, the data and a
// margin). An event that does not fit removes its key.
//
// Of joins and leaves, a join is kept, a leave removes.
func (b *Broker) keeps(m *hub.Message) bool {
	if m.IsPresence() {
		return m.Type == hub.TypeJoin
	}
	size := len(m.Data) + len(m.Topic) + 2*len(m.Key) + len(m.Type) + len(b.o.Subjects) + 256
	return string(m.Data) != "null" && size <= b.o.StateMaxBytes
}

// jsErrWrongLastSeq is JetStream's refusal of a message whose expected
// last sequence (here: of its subject) is not the stream's.
const jsErrWrongLastSeq jetstream.ErrorCode = 10071

// olderThanFloor reports whether m is older than the state stream's
// oldest message. A key with no message then was dropped by StateMaxBytes
// (its oldest messages go first, and appliers write in log order, so the
// key's event at m or later was written before that message), and writing
// m would bring back an older value: a node that lags behind another, or
// one that starts and reads the retained log again, would. Nor is a
// removal that old written: its key was dropped, which a snapshot shows
// as a tombstone would. The floor is read once per flush.
//
// Compaction (node.go) removes the tombstones of removals and leaves that
// are out of the log and older than compactAge: an event older than half
// that, out of the log, whose key or member has no message, is taken for
// one whose tombstone went, and not written.
func (a *applier) olderThanFloor(ctx context.Context, s jetstream.Stream, m *hub.Message) (bool, error) {
	if m.IsPresence() && m.Type != hub.TypeJoin {
		return false, nil
	}
	if time.Since(m.Time) >= time.Duration(a.b.compactAge.Load())/2 {
		if !a.firstRead {
			info, err := a.b.info(ctx)
			if err != nil {
				return false, err
			}
			a.first, a.firstRead = info.State.FirstSeq, true
			if info.State.Msgs == 0 {
				a.first = info.State.LastSeq + 1
			}
		}
		if m.ID.Seq < a.first {
			return true, nil
		}
	}
	if m.IsPresence() {
		return false, nil // the members are not bounded by bytes
	}
	if !a.floorRead {
		info, err := s.Info(ctx)
		if err != nil {
			return false, err
		}
		a.floor, a.floorRead = 0, true
		if info.State.Msgs > 0 {
			rm, err := s.GetMsg(ctx, info.State.FirstSeq)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound): // replaced meanwhile: no floor
			case err != nil:
				a.floorRead = false
				return false, err
			case rm.Header.Get(hdrEpoch) == a.epoch:
				a.floor, _ = strconv.ParseUint(rm.Header.Get(hdrSeq), 10, 64)
			}
		}
	}
	return m.ID.Seq < a.floor, nil
}

// write makes m the state of its key unless the state is at m or later:
// a write conditional on the key's message as read, read again if another
// node wrote meanwhile.
func (a *applier) write(ctx context.Context, s jetstream.Stream, subj string, m *hub.Message) error {
	for range 16 {
		k, err := a.read(ctx, s, subj)
		if err != nil {
			return err
		}
		if k.stateSeq == 0 {
			if older, err := a.olderThanFloor(ctx, s, m); err != nil || older {
				return err // dropped by StateMaxBytes: not written back
			}
		}
		msg := a.message(k, m)
		if msg == nil {
			return nil
		}
		ack, err := a.b.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(k.stateSeq))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrWrongLastSeq {
			continue
		}
		if err != nil {
			delete(a.known, subj) // it may have been stored
			return err
		}
		a.known[subj] = known{stateSeq: ack.Sequence, seq: m.ID.Seq}
		return nil
	}
	return fmt.Errorf("key %s written by others 16 times meanwhile", subj)
}

// State implements hub.Broker: the snapshot is exact at its position, as
// the memory broker's (see snapshot). The node's applier must be running
// (Start): a snapshot waits, up to the context's deadline or stateWait,
// for it to have read past what the log's retention has dropped.
func (b *Broker) State(ctx context.Context, patterns []hub.Pattern) (hub.StateSnapshot, error) {
	if len(patterns) == 0 {
		return hub.StateSnapshot{Events: []*hub.Message{}}, nil
	}
	last, events, err := b.snapshot(ctx, patterns)
	if err != nil {
		return hub.StateSnapshot{}, fmt.Errorf("failed to read state from NATS: %w", err)
	}
	return hub.StateSnapshot{Last: last, Events: events}, nil
}

// stateWait bounds how long a snapshot waits for this node's applier.
const stateWait = 5 * time.Second

// snapshot returns the state of every topic that matches one of pats,
// exact at one position of the log, the cursor it returns: the latest
// event of each key at or before it, ascending by cursor, at most
// StateMaxKeys per topic.
//
// Why it is exact: let P be the applier's position read first, and L the
// log's end read after the state stream's messages. Every key's message in
// the state stream is of an event at or before L, since an event is
// written there only after it is in the log. Take a key whose latest event
// at or before L is at t. If t <= P, the state stream held t (or later)
// from before the read, and anything later would be an event after t and
// at or before L: so it held t throughout the read, which returned it. If
// t > P, the log's events after P hold it. A key whose state message is
// older than t is replaced by t from the log, and a removal (a tombstone,
// or a null in the log) wins over anything older. The log's events after P
// must all still be there: if retention has dropped any, the snapshot
// waits for the applier to pass them, and reads again.
func (b *Broker) snapshot(ctx context.Context, pats []hub.Pattern) (hub.Cursor, []*hub.Message, error) {
	if b.closed.Load() {
		return hub.Cursor{}, nil, hub.ErrClosed
	}
	wctx, cancel := context.WithTimeout(ctx, stateWait)
	defer cancel()
	for {
		p := b.applied.Load()
		if p == nil {
			if !b.started.Load() {
				return hub.Cursor{}, nil, errors.New("the broker is not started")
			}
		} else if last, events, ok, err := b.snapshotAt(ctx, pats, *p); err != nil || ok {
			return last, events, err
		}
		// The applier is behind what retention has dropped, or on another
		// epoch: have it write what it holds now, and wait for it.
		select {
		case b.flushNow <- struct{}{}:
		default:
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-wctx.Done():
			if err := ctx.Err(); err != nil {
				return hub.Cursor{}, nil, err
			}
			return hub.Cursor{}, nil, hub.Unavailable(errors.New("this node's state applier is behind the log's retention"))
		}
	}
}

// stateEntry is a key's latest event as far as a snapshot has read, or
// its removal (m nil).
type stateEntry struct {
	seq   uint64
	topic string
	m     *hub.Message
}

// snapshotAt is snapshot with the applier at p; ok is false if the log's
// events after p are no longer all retained, or the log is of another
// epoch than p.
func (b *Broker) snapshotAt(ctx context.Context, pats []hub.Pattern, p applied) (hub.Cursor, []*hub.Message, bool, error) {
	bd, err := b.Bounds(ctx)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch || p.seq+1 < bd.First {
		return hub.Cursor{}, nil, false, nil
	}
	entries := map[string]*stateEntry{} // by topic "\n" key
	if err := b.readStateStream(ctx, pats, p.epoch, entries); err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd, err = b.Bounds(ctx); err != nil {
		return hub.Cursor{}, nil, false, err
	}
	if bd.Epoch != p.epoch {
		return hub.Cursor{}, nil, false, nil
	}
	for _, e := range entries {
		if e.seq > bd.Last { // cannot be (see snapshot); read again
			return hub.Cursor{}, nil, false, nil
		}
	}
	// The log's events after p, up to its end: as many as the log holds,
	// in one read.
	after := p.seq
	for after < bd.Last {
		res, err := b.Read(ctx, hub.ReadRequest{After: after, Patterns: pats, Limit: max(b.o.Size, 256)})
		if errors.Is(err, hub.ErrHistoryGone) {
			return hub.Cursor{}, nil, false, nil
		}
		if err != nil {
			return hub.Cursor{}, nil, false, err
		}
		for _, m := range res.Messages {
			if m.ID.Seq > bd.Last || m.Key == "" || m.IsPresence() {
				continue
			}
			k := m.Topic + "\n" + m.Key
			if e := entries[k]; e == nil || e.seq < m.ID.Seq {
				e = &stateEntry{seq: m.ID.Seq, topic: m.Topic, m: m}
				if !b.keeps(m) {
					e.m = nil
				}
				entries[k] = e
			}
		}
		if res.Next <= after || !res.More && res.Next < bd.Last {
			break // the read ends before bd.Last: nothing more was complete then
		}
		after = res.Next
	}
	// Retention must not have dropped any of them during the read.
	info, err := b.info(ctx)
	if err != nil {
		return hub.Cursor{}, nil, false, err
	}
	first := info.State.FirstSeq
	if info.State.Msgs == 0 {
		first = info.State.LastSeq + 1
	}
	if p.seq+1 < first || epochOf(info) != p.epoch {
		return hub.Cursor{}, nil, false, nil
	}
	byTopic := map[string][]*hub.Message{}
	for _, e := range entries {
		if e.m != nil {
			byTopic[e.topic] = append(byTopic[e.topic], e.m)
		}
	}
	out := []*hub.Message{}
	for _, ms := range byTopic {
		slices.SortFunc(ms, func(x, y *hub.Message) int { return cmp.Compare(x.ID.Seq, y.ID.Seq) })
		out = append(out, ms[max(0, len(ms)-b.o.StateMaxKeys):]...) // the least recently written go
	}
	slices.SortFunc(out, func(x, y *hub.Message) int { return cmp.Compare(x.ID.Seq, y.ID.Seq) })
	return hub.Cursor{Epoch: bd.Epoch, Seq: bd.Last}, out, true, nil
}

// readStateStream adds the state stream's messages of the topics matching
// pats, of the given epoch, to entries.
func (b *Broker) readStateStream(ctx context.Context, pats []hub.Pattern, epoch string, entries map[string]*stateEntry) error {
	s, err := b.stateStream(ctx, false)
	if err != nil || s == nil {
		return err
	}
	for _, p := range pats {
		r, err := b.openReaderOn(ctx, s, b.stateName(), b.statePrefix()+"*."+p.String(), 1)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.dropStateStream()
			return nil
		}
		if err != nil {
			return err
		}
		err = b.readEntries(ctx, r, epoch, entries)
		r.close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (b *Broker) readEntries(ctx context.Context, r *reader, epoch string, entries map[string]*stateEntry) error {
	for !r.done() {
		page, err := r.fetch(ctx, 256)
		if err != nil {
			return err
		}
		for _, rm := range page {
			e, err := b.decodeState(rm, epoch)
			if err != nil {
				b.o.Logger.Warn("nats broker: skipping an unreadable state message", "subject", rm.subject, "err", err)
				continue
			}
			if e == nil {
				continue // of another epoch
			}
			k := e.topic + "\n" + rm.header.Get(hdrKey)
			if old := entries[k]; old == nil || old.seq < e.seq {
				entries[k] = e
			}
		}
	}
	return nil
}

// decodeState decodes a state message; nil if it is of another epoch.
func (b *Broker) decodeState(rm rawMsg, epoch string) (*stateEntry, error) {
	if rm.header.Get(hdrEpoch) != epoch {
		return nil, nil
	}
	seq, err := strconv.ParseUint(rm.header.Get(hdrSeq), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("bad %s header: %w", hdrSeq, err)
	}
	rest, ok := strings.CutPrefix(rm.subject, b.statePrefix())
	_, topic, ok2 := strings.Cut(rest, ".")
	if !ok || !ok2 || rm.header.Get(hdrKey) == "" {
		return nil, fmt.Errorf("subject %q is not a key's", rm.subject)
	}
	e := &stateEntry{seq: seq, topic: topic}
	if string(rm.data) == "null" {
		return e, nil
	}
	m, _, err := decode(epoch, seq, b.prefix+topic, rm.header, rm.data, b.prefix)
	if err != nil {
		return nil, err
	}
	e.m = m
	return e, nil
}
